"""Measured-baseline tables in the docs, generated from the board's entries (one source).

A Markdown file marks each generated block with an opening comment that says what to show and
a closing comment; everything between them is rewritten from the entries::

    <!-- board-table mosi | Acc-2 non0=acc2_non0% | MAE=mae | params=params | text dropped=drop:text% -->
    (generated: the ranked rows with their letters and rank ranges, then the caption)
    <!-- /board-table -->

    <!-- board-summary -->
    (generated: one row per task: test items, pairs, pairs that differ, MDD, letters)
    <!-- /board-summary -->

A column is ``label=key``: a clean metric (mean ± std over seeds), a condition name such as
``drop:text`` or ``rate:0.5`` (the primary metric under it, mean ± std), ``per_seed`` (the
primary metric of each seed, in seed order) or ``params``. A trailing ``%`` shows the value in
percent with one decimal; other values get three decimals. Every table starts with the entry,
its compact letters and its rank interval (``mmbench.evaluation.significance``).
:func:`write_doc_tables` rewrites the blocks (``mmbench leaderboard docs FILE``) and
:func:`doc_table_differences` lists the blocks that differ (``--check``, and a test).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mmbench.board.tables import mean_std
from mmbench.core.errors import DataError

_TABLE = re.compile(r"(<!-- board-table (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /board-table -->)", re.S)
_SUMMARY = re.compile(r"(<!-- board-summary -->\n)(?P<body>.*?)(<!-- /board-summary -->)", re.S)


def _number(v: float, percent: bool) -> str:
    return f"{100 * v:.1f}" if percent else f"{v:.3f}"


def _cell(key: str, percent: bool, row: dict[str, Any], seeds: list[Any]) -> str:
    primary = row["primary_metric"]
    if key == "params":
        return "-" if row.get("params") is None else f"{int(row['params']):,}"
    if key == "per_seed":
        return ", ".join(_number(e.metrics["clean"][primary], percent) for e in seeds)
    cond, metric = ("clean", key) if key in seeds[0].metrics.get("clean", {}) else (key, primary)
    values = [e.metrics[cond][metric] for e in seeds if metric in e.metrics.get(cond, {})]
    if not values:
        raise DataError(f"docs table of {row['task']}: {row['name']} has no {key!r} (not a clean metric, a condition, "
                        "per_seed or params)")
    m, s = mean_std(values)
    return _number(m, percent) + (f" ± {_number(s, percent)}" if len(values) > 1 else "")


def _parse(spec: str, source: str) -> tuple[str, list[tuple[str, str, bool]]]:
    task, *fields = [f.strip() for f in spec.split("|")]
    columns = []
    for f in fields:
        label, eq, key = f.rpartition("=")
        if not eq or not label.strip() or not key.strip():
            raise DataError(f"board-table {task}: column {f!r} is not label=key", source)
        key = key.strip()
        columns.append((label.strip(), key.rstrip("%"), key.endswith("%")))
    if not task or not columns:
        raise DataError(f"board-table needs a task and at least one label=key column, got {spec!r}", source)
    return task, columns


def _rows_by_task(board_dir: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[tuple[str, str], list[Any]]]:
    from mmbench.board.entries import load_entries, rank
    from mmbench.board.testsets import partition_by_test_set

    entries = partition_by_test_set(load_entries(board_dir))  # labelled as the ranked rows are
    groups: dict[tuple[str, str], list[Any]] = {}
    for e in entries:
        groups.setdefault((e.task, e.name), []).append(e)
    for g in groups.values():
        g.sort(key=lambda e: (e.seed is None, e.seed or 0))
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rank(entries):
        by_task.setdefault(r["task"], []).append(r)
    return by_task, groups


def _table(task: str, columns: list[tuple[str, str, bool]], rows: list[dict[str, Any]],
           groups: dict[tuple[str, str], list[Any]]) -> str:
    from mmbench.board.entries import format_value

    head = ["entry", "letters", "rank range"] + [c[0] for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], r.get("letters") or "-", format_value(r, "rank_interval")]
        cells += [_cell(key, pct, r, groups[(task, r["name"])]) for _, key, pct in columns]
        lines.append("| " + " | ".join(cells) + " |")
    sig = rows[0].get("significance")
    return "\n".join(lines) + ("\n\n" + sig["caption"] if sig else "") + "\n"


def _summary(by_task: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| task | primary metric | test items | entries x seeds | pairs differing (Holm, 0.05) | "
             "resampled by | letters, in rank order |", "|---|---|---|---|---|---|---|"]
    for task, rows in sorted(by_task.items()):
        sig = rows[0].get("significance")
        if not sig:
            continue
        differ = sum(t["significant"] for r in rows for t in (r.get("pairwise") or {}).values()) // 2
        seeds = sorted({r["seeds"] for r in rows})
        unit = "item" if sig.get("unit", "item") == "item" else f"{sig['unit']} ({sig['clusters']:,})"
        lines.append(f"| {task} | {rows[0]['primary_metric']} | {sig['items']:,} | {len(rows)} x "
                     f"{'-'.join(map(str, seeds))} | {differ} of {sig['pairs']} | {unit} | "
                     + ", ".join(f"{r['name']} {r['letters']}" for r in rows) + " |")
    return "\n".join(lines) + "\n"


def render_doc_tables(text: str, board_dir: str | Path, source: str | Path | None = None) -> str:
    """`text` with every board-table and board-summary block regenerated from the entries."""
    if not _TABLE.search(text) and not _SUMMARY.search(text):
        return text
    by_task, groups = _rows_by_task(Path(board_dir))

    def table(m: re.Match) -> str:
        task, columns = _parse(m.group("spec"), str(source or ""))
        if task in by_task:
            return m.group(1) + _table(task, columns, by_task[task], groups) + m.group(4)
        # a task whose entries were scored on different test sets (mmbench.board.testsets): one table per test set
        split = sorted(k for k in by_task if k.partition("@")[0] == task)
        if not split:
            raise DataError(f"board-table {task}: the board {board_dir} has no entries of that task", source)
        from mmbench.board.testsets import test_set_note

        parts = [f"*{test_set_note(k)}*\n\n" + _table(k, columns, by_task[k], groups) for k in split]
        return m.group(1) + "\n".join(parts) + m.group(4)

    text = _TABLE.sub(table, text)
    return _SUMMARY.sub(lambda m: m.group(1) + _summary(by_task) + m.group(3), text)


def doc_table_differences(path: str | Path, board_dir: str | Path) -> list[str]:
    """The generated blocks of `path` that differ from what the board's entries give."""
    path = Path(path)
    old = path.read_text(encoding="utf-8")
    new = render_doc_tables(old, board_dir, path)
    if old == new:
        return []
    olds = [m.group(0) for p in (_TABLE, _SUMMARY) for m in p.finditer(old)]
    news = [m.group(0) for p in (_TABLE, _SUMMARY) for m in p.finditer(new)]
    return [f"{path.name}: {(a.splitlines()[0])[5:-4].strip()} differs from the board" for a, b in zip(olds, news) if a != b]


def write_doc_tables(path: str | Path, board_dir: str | Path) -> bool:
    """Rewrite the generated blocks of `path` atomically; True when the file changed."""
    from mmbench.core.io import atomic_write_text

    path = Path(path)
    if not path.is_file():
        raise DataError("docs file not found", path)
    old = path.read_text(encoding="utf-8")
    new = render_doc_tables(old, board_dir, path)
    if new != old:
        atomic_write_text(path, new)
    return new != old
