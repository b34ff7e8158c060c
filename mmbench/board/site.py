"""The leaderboard as a static site: `<board>/index.html` plus one `<board>/<task>.html` per task.

Pages are self-contained (inline CSS and the sortable-table script of mmbench.board.report, no
external files) and a pure function of the entries and published tables: no timestamps, so
the committed pages can be checked against what the entries render (`site_differences`).
Each task page is :func:`mmbench.board.view.task_view` (the same content as the report's task
section): the decision summary first, the ranked entries with their letters and rank
intervals, the pairwise heat map, robustness and efficiency tables, the per-condition results
in a collapsible table, and the task's published rows apart, marked "published, not re-run".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmbench.core.errors import MMBenchError

INDEX = "index.html"


def _env():
    import jinja2

    from mmbench.board.report import template_loader

    return jinja2.Environment(loader=template_loader(), autoescape=True, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)


def _index_table(tasks: list[dict[str, Any]]):
    from mmbench.board.tables import Column, Table, cell

    cols = [Column("task", "task", "asc", numeric=False), Column("primary", "primary metric", "asc", numeric=False),
            Column("entries", "entries", "desc", "distinct entries ranked on the task"),
            Column("runs", "seed runs", "desc", "training runs (seeds) over all entries"),
            Column("leader", "leader by the primary metric (tied: not separated by the test)", "asc",
                   "the best entry and those sharing its letter (two-level bootstrap, Holm)", numeric=False),
            Column("robust", "most robust by relative robustness (tied)", "asc",
                   "relative robustness: mean primary metric over the missing rates; the entries sharing the best "
                   "one's letter on it", numeric=False),
            Column("published", "published rows", "desc")]
    body = [[cell(t["name"]), cell(t["primary"] or "-"), cell(str(t["entries"]), t["entries"]),
             cell(str(t["runs"]), t["runs"]), cell(t["leader"] or "-"), cell(t["robust"] or "-"),
             cell(str(t["published"]), t["published"])] for t in tasks]
    return Table(cols, body, css="tasks", first_is_best=False)


def render_site(board_dir: str | Path, title: str = "mmbench leaderboard") -> dict[str, str]:
    """{file name: HTML} of every page of the board in `board_dir`."""
    from mmbench.board.entries import load_entries, rank
    from mmbench.board.published import load_published, published_rows
    from mmbench.board.report import page_context
    from mmbench.board.across import across_table, across_tasks, leader_text
    from mmbench.board.tables import slug
    from mmbench.board.view import task_view
    from mmbench.data.tasks import get_task, task_names

    entries = load_entries(board_dir)
    from mmbench.board.testsets import partition_by_test_set

    rows = rank(entries)
    entries = partition_by_test_set(list(entries))  # labelled as the rows are (<task>@<fingerprint> where split)
    published = published_rows(load_published(board_dir))
    names = sorted({r["task"] for r in rows} | {r["task"] for r in published})
    if not names:
        raise MMBenchError(f"no leaderboard entries or published tables in {board_dir}")
    known = set(task_names())
    from mmbench.board.testsets import test_set_note

    # a task split by test set (<task>@<fingerprint>) gets a page per test set, saying why
    description = {t: get_task(t).description if t in known else test_set_note(t) for t in names}
    nav = [{"name": t, "href": f"{slug(t)}.html", "description": description[t]} for t in names]
    env = _env()
    pages: dict[str, str] = {}
    summary = []
    for t in names:
        task_rows = sorted((r for r in rows if r["task"] == t), key=lambda r: r["rank"])
        task_pub = [r for r in published if r["task"] == t]
        primary = task_rows[0]["primary_metric"] if task_rows else (get_task(t).primary_metric if t in known else None)
        view = task_view(t, task_rows, [e for e in entries if e.task == t], task_pub, board_dir)
        ctx = page_context(f"{title}: {t}") | {"tasks": [], "t": view, "description": description[t],
                                               "nav": [n | {"current": n["name"] == t} for n in nav]}
        pages[f"{slug(t)}.html"] = env.get_template("site_task.j2").render(**ctx)
        summary.append({"name": t, "primary": primary, "entries": len(task_rows),
                        "runs": sum(r["seeds"] for r in task_rows),
                        "leader": leader_text(task_rows, "letters", primary, primary) if task_rows else None,
                        "published": len(task_pub),
                        "robust": leader_text(task_rows, "robustness_letters", "relative_robustness",
                                              "relative robustness") if any(
                            r.get("relative_robustness") is not None for r in task_rows) else None})
    across = across_tasks(rows, entries)
    ctx = page_context(title) | {"tasks": [], "nav": [n | {"current": False} for n in nav], "table": _index_table(summary),
                                 "n_entries": sum(s["entries"] for s in summary),
                                 "n_runs": sum(s["runs"] for s in summary),
                                 "across": across_table(across) if across else None,
                                 "across_tasks": len({t for a in across for t in a.tasks})}
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
