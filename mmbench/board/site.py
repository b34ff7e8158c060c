"""The leaderboard as a static site: `<board>/index.html` plus one `<board>/<task>.html` per task.

Pages are self-contained (inline CSS and the sortable-table script of mmbench.board.report, no
external files) and a pure function of the entries and published tables: no timestamps, so
the committed pages can be checked against what the entries render (`site_differences`).
Each task page ranks its entries (`leaderboard.rank`; any extra rank data it returns becomes
a column), with robustness, efficiency and per-condition columns, and lists the task's
published reference rows apart, marked "published, not re-run".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmbench.core.errors import MMBenchError

INDEX = "index.html"

# rank() keys the board table already shows (or that are not columns); any other scalar key a
# ranking adds (e.g. significance groups) is shown as a column of its own
_SHOWN = {"task", "name", "kind", "fusion", "seeds", "primary_metric", "higher_is_better", "rank", "conditions",
          "auc_rate", "worst_drop", "params", "flops_per_sample", "latency_ms_per_batch", "letters",
          "seed_variance_known"}

def _env():
    import jinja2

    from mmbench.board.report import template_loader

    return jinja2.Environment(loader=template_loader(), autoescape=True, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)


def _extra_keys(rows: list[dict[str, Any]]) -> list[str]:
    metrics = {k[:-4] for r in rows for k in r if k.endswith("_std")}
    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k in _SHOWN or k in metrics or k.endswith("_std") or k in keys:
                continue
            if v is None or isinstance(v, (bool, int, float, str)):
                keys.append(k)
    return keys


def _board(rows: list[dict[str, Any]]):
    from mmbench.board.report import Column, _board_table, _cell, _fmt, _num

    table = _board_table(rows)
    for key in _extra_keys(rows):
        numeric = any(_num(r.get(key)) is not None for r in rows)
        table.columns.append(Column(key, key, "asc", numeric=numeric))
        for r, cells in zip(rows, table.rows):
            v = r.get(key)
            text = "-" if v is None else (_fmt(v) if isinstance(v, float) else str(v))
            cells.append(_cell(text, v if numeric else None))
    return table


def _published_table(rows: list[dict[str, Any]], primary: str | None):
    from mmbench.board.report import Column, Table, _cell, _fmt

    skip = {"task", "name", "published", "source", "url", "note"}
    metrics = list(dict.fromkeys(([primary] if any(primary in r for r in rows) else [])
                                 + [k for r in rows for k in r if k not in skip]))
    cols = [Column("name", "name", "asc", numeric=False), Column("status", "status", "asc", numeric=False)]
    cols += [Column(m, m, "desc") for m in metrics] + [Column("source", "source", "asc", numeric=False)]
    body = [[_cell(r["name"]), _cell("published, not re-run")] + [_cell(_fmt(r.get(m)), r.get(m)) for m in metrics]
            + [_cell(r["source"] + (f" ({r['note']})" if r.get("note") else ""))] for r in rows]
    return Table(cols, body, css="published", first_is_best=False)


def _index_table(tasks: list[dict[str, Any]]):
    from mmbench.board.report import Column, Table, _cell, _fmt

    cols = [Column("task", "task", "asc", numeric=False), Column("primary", "primary metric", "asc", numeric=False),
            Column("entries", "entries", "desc"), Column("leader", "leader", "asc", numeric=False),
            Column("best", "leader's primary metric", "desc"), Column("published", "published rows", "desc")]
    body = [[_cell(t["name"]), _cell(t["primary"] or "-"), _cell(str(t["entries"]), t["entries"]),
             _cell(t["leader"] or "-"), _cell(_fmt(t["best"]), t["best"]), _cell(str(t["published"]), t["published"])]
            for t in tasks]
    return Table(cols, body, css="tasks", first_is_best=False)


def render_site(board_dir: str | Path, title: str = "mmbench leaderboard") -> dict[str, str]:
    """{file name: HTML} of every page of the board in `board_dir`."""
    from mmbench.board.entries import load_entries, rank, significance_note
    from mmbench.board.published import load_published, published_rows
    from mmbench.board.report import _common, _slug
    from mmbench.data.tasks import get_task, task_names

    rows = rank(load_entries(board_dir))
    published = published_rows(load_published(board_dir))
    names = sorted({r["task"] for r in rows} | {r["task"] for r in published})
    if not names:
        raise MMBenchError(f"no leaderboard entries or published tables in {board_dir}")
    known = set(task_names())
    from mmbench.board.testsets import test_set_note

    # a task split by test set (<task>@<fingerprint>) gets a page per test set, saying why
    description = {t: get_task(t).description if t in known else test_set_note(t) for t in names}
    nav = [{"name": t, "href": f"{_slug(t)}.html", "description": description[t]} for t in names]
    env = _env()
    pages: dict[str, str] = {}
    summary = []
    for t in names:
        task_rows = sorted((r for r in rows if r["task"] == t), key=lambda r: r["rank"])
        task_pub = [r for r in published if r["task"] == t]
        primary = task_rows[0]["primary_metric"] if task_rows else (get_task(t).primary_metric if t in known else None)
        sources = list({(r["source"], r["url"]): {"source": r["source"], "url": r["url"], "note": ""}
                        for r in task_pub}.values())
        ctx = _common(f"{title}: {t}") | {
            "tasks": [], "task": t, "slug": _slug(t), "description": description[t], "primary": primary,
            "hib": bool(task_rows[0]["higher_is_better"]) if task_rows else True,
            "board": _board(task_rows) if task_rows else None, "sig_note": significance_note(task_rows),
            "published": _published_table(task_pub, primary) if task_pub else None, "sources": sources,
            "nav": [n | {"current": n["name"] == t} for n in nav]}
        pages[f"{_slug(t)}.html"] = env.get_template("site_task.j2").render(**ctx)
        leader = task_rows[0] if task_rows else None
        summary.append({"name": t, "primary": primary, "entries": sum(r["seeds"] for r in task_rows),
                        "leader": leader["name"] if leader else None,
                        "best": leader.get(primary) if leader else None, "published": len(task_pub)})
    ctx = _common(title) | {"tasks": [], "nav": [n | {"current": False} for n in nav], "table": _index_table(summary),
                            "n_entries": sum(s["entries"] for s in summary)}
    pages[INDEX] = env.get_template("site_index.j2").render(**ctx)
    return pages


def _stale_pages(board: Path, pages: dict[str, str]) -> list[Path]:
    """Task pages on disk that no task renders any more (their task's entries were removed)."""
    return [p for p in sorted(board.glob("*.html")) if p.name not in pages]


def write_site(board_dir: str | Path) -> list[Path]:
    """Write every page atomically (and remove pages of tasks no longer on the board)."""
    from mmbench.core.io import atomic_write_text

    board = Path(board_dir)
    pages = render_site(board)
    for stale in _stale_pages(board, pages):
        stale.unlink()
    return [atomic_write_text(board / name, html) for name, html in pages.items()]


def site_differences(board_dir: str | Path) -> list[str]:
    """Pages whose file differs from what the board renders (missing, changed or stale)."""
    board = Path(board_dir)
    pages = render_site(board)
    out = []
    for name, html in pages.items():
        path = board / name
        if not path.is_file():
            out.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != html:
            out.append(f"{name}: differs from what the entries render")
    out += [f"{p.name}: no task renders it" for p in _stale_pages(board, pages)]
    return out
