"""The leaderboard: one JSON entry per submission under `<dir>/<task>/`, and its rankings.

Entries are `Result` records. Each is written atomically under its own file name
(`<name>.json`, or `<name>__seed<k>.json` for seeded baseline runs), so concurrent
evaluations with distinct names never touch each other's files. Re-submitting a name bumps
its `version` and moves the previous entry to `<task>/history/`, under a per-entry file lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import ValidationError

from mmbench.board.tables import mean_std
from mmbench.core.errors import DataError
from mmbench.core.io import atomic_write_json, safe_join
from mmbench.evaluation.results import Result


def entry_filename(result: Result) -> str:
    return f"{result.name}__seed{result.seed}.json" if result.seed is not None else f"{result.name}.json"


def write_entry(board_dir: str | Path, result: Result, skip_unchanged: bool = False) -> Path:
    """Write `result` as its leaderboard entry; an existing entry moves to history/ and the new
    one gets the next version. With `skip_unchanged`, an entry equal to `result` but for its
    version is left as it is (a kept run of `reproduce`)."""
    task_dir = safe_join(Path(board_dir), result.task)
    task_dir.mkdir(parents=True, exist_ok=True)
    path = safe_join(task_dir, entry_filename(result))
    with FileLock(str(task_dir / f".{path.name}.lock")):
        if path.exists():
            try:
                old = read_entry(path)
                if skip_unchanged and old.model_dump(exclude={"version"}) == result.model_dump(exclude={"version"}):
                    return path
                result = result.model_copy(update={"version": old.version + 1})
                history = task_dir / "history"
                history.mkdir(exist_ok=True)
                path.replace(history / f"{path.stem}.v{old.version}.json")
            except DataError:
                pass  # a corrupt old entry is simply replaced
        atomic_write_json(path, result.to_json())
    return path


def read_entry(path: str | Path) -> Result:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"unreadable leaderboard entry: {exc}", path) from None
    try:
        return Result.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(f"invalid leaderboard entry: field '{'.'.join(map(str, err['loc']))}': {err['msg']}", path) from None


def load_entries(board_dir: str | Path, task: str | None = None) -> list[Result]:
    root = Path(board_dir)
    if not root.is_dir():
        return []
    dirs = [safe_join(root, task)] if task else sorted(p for p in root.iterdir() if p.is_dir())
    return [read_entry(f) for d in dirs if d.is_dir() for f in sorted(d.glob("*.json"))]


def rank(entries: list[Result], significance: bool = True, n_resamples: int | None = None, seed: int = 0,
         matrix: bool = True) -> list[dict[str, Any]]:
    """One row per (task, name): mean and std over seeds of every clean metric, robustness and
    efficiency; sorted within each task by the primary metric in its direction. With
    ``significance``, each row also carries the task's verdicts (two-level bootstrap over test
    items and seeds, all pairs, Holm): ``letters``, ``rank_interval``, ``seed_variance_known``,
    ``pairwise`` (the row's line of the pairwise matrix) and ``significance`` (test, unit, B,
    pairs, Monte-Carlo error, caption); see :func:`mmbench.evaluation.significance.annotate_ranking`. ``matrix``
    is kept for callers of the earlier API (the matrix is always there)."""
    from mmbench.board.testsets import partition_by_test_set

    entries = partition_by_test_set(entries)  # entries of different test sets are never ranked together
    groups: dict[tuple[str, str], list[Result]] = {}
    for e in entries:
        groups.setdefault((e.task, e.name), []).append(e)
    rows = []
    for (task, name), group in groups.items():
        first = group[0]
        row: dict[str, Any] = {"task": task, "name": name, "kind": first.kind, "fusion": first.fusion,
                               "seeds": len(group), "primary_metric": first.primary_metric,
                               "higher_is_better": first.higher_is_better}
        for metric in first.metrics.get("clean", {}):
            vals = [e.metrics["clean"][metric] for e in group if metric in e.metrics.get("clean", {})]
            row[metric], row[f"{metric}_std"] = mean_std(vals)
        for key in ("auc_rate", "worst_drop"):
            vals = [e.robustness[key] for e in group if key in e.robustness]
            if vals:
                row[key] = mean_std(vals)[0]
        conds = sorted({c for e in group for c in e.metrics if c != "clean"})
        row["conditions"] = {c: mean_std([e.metrics[c][first.primary_metric] for e in group if c in e.metrics])[0] for c in conds}
        rows.append(row)
    def key(r: dict[str, Any]):
        v = r.get(r["primary_metric"], float("nan"))
        return (r["task"], -v if r["higher_is_better"] else v, r["name"])
    rows.sort(key=key)
    for i, r in enumerate(rows):
        r["rank"] = 1 + sum(1 for o in rows[:i] if o["task"] == r["task"])
    from mmbench.board.efficiency import annotate_efficiency
    from mmbench.board.robustness import annotate_robustness

    annotate_robustness(rows, entries)  # relative/effective robustness (MultiBench), mean and std over seeds
    annotate_efficiency(rows, entries)  # median over seeds, with device, precision and batch size
    if significance:
        from mmbench.evaluation.significance import DEFAULT_RESAMPLES, annotate_ranking

        annotate_ranking(rows, entries, n_resamples=n_resamples or DEFAULT_RESAMPLES, seed=seed)
    return rows


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    primary = rows[0]["primary_metric"] if rows else ""
    sig = ["letters", "rank_interval"] if any(r.get("letters") is not None for r in rows) else []
    return ["rank", *sig, "task", "name", "seeds", primary, "auc_rate", "worst_drop", "params"]


def format_value(row: dict[str, Any], col: str) -> str:
    if col == "rank_interval":  # 1 + entries significantly better .. n - entries significantly worse
        ri = row.get("rank_interval")
        return "-" if ri is None else (str(ri[0]) if ri[0] == ri[1] else f"{ri[0]}-{ri[1]}")
    if col == "seeds" and row.get("seed_variance_known") is False:
        return f"{row['seeds']}†"  # a single run: its seed variance is unknown
    if col == row.get("primary_metric") and col in row:
        std = row.get(f"{col}_std", 0.0)
        return f"{row[col]:.4f} ± {std:.4f}" if row["seeds"] > 1 else f"{row[col]:.4f}"
    v = row.get(col)
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def significance_note(task_rows: list[dict[str, Any]]) -> str:
    """One line under a task's table: the caption of its verdicts (what the letters mean)."""
    sig = task_rows[0].get("significance") if task_rows else None
    if not sig:
        return ""
    single = any(r.get("seed_variance_known") is False for r in task_rows)
    return sig["caption"] + (" † single run: seed variance unknown." if single else "")


def _condition_order(name: str) -> tuple:
    kind, _, arg = name.partition(":")
    order = {"drop": 0, "rate": 1, "pattern": 2}.get(kind, 3)
    return (order, float(arg) if kind == "rate" else 0.0, arg)


def render(rows: list[dict[str, Any]], fmt: str = "table") -> str:
    """Rows as text: table (rich), md, csv or json. HTML lives in mmbench.board.report."""
    from mmbench.board.testsets import test_set_note

    if fmt == "json":
        return json.dumps(rows, indent=2)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    out = []
    for task, task_rows in by_task.items():
        cols = [c for c in table_columns(task_rows) if not (fmt == "table" and c == "task")]
        conds = sorted({c for r in task_rows for c in r["conditions"]}, key=_condition_order)
        if fmt == "table":  # keep the terminal table readable: patterns go to md/csv/json/html
            conds = [c for c in conds if not c.startswith("pattern:")]
        header = cols + conds
        body = [[format_value(r, c) for c in cols] + [f"{r['conditions'][c]:.4f}" if c in r["conditions"] else "-" for c in conds]
                for r in task_rows]
        note = "\n".join(x for x in (significance_note(task_rows), test_set_note(task)) if x)
        if fmt == "csv":
            import csv
            import io

            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(header)
            w.writerows(body)
            out.append(buf.getvalue())
        elif fmt == "md":
            lines = [f"### {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(b) + " |" for b in body]
            out.append("\n".join(lines + ([""] + [note] if note else [])) + "\n")
        else:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=f"{task}: {task_rows[0]['primary_metric']} "
                                f"({'higher' if task_rows[0]['higher_is_better'] else 'lower'} is better), "
                                + ("clean and per missing-modality condition" if any(r.get("conditions") for r in task_rows)
                                   else "clean condition only"))
            for h in header:
                table.add_column(h, overflow="fold")
            for b in body:
                table.add_row(*b)
            console = Console(width=max(100, 11 * len(header)), record=True, force_terminal=False)
            with console.capture() as cap:
                console.print(table)
            out.append(cap.get() + (note + "\n" if note else ""))
    return "\n".join(out)
