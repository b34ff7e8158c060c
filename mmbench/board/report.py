"""Static HTML leaderboard and the `mmbench report` (HTML or Markdown): rendering.

Both are single files that work opened from disk: inline CSS, a small inline vanilla-JS
click-to-sort for every table column (no CDN, no external files) and matplotlib figures embedded
as base64 PNG data URIs. The Markdown report writes its PNGs into `<name>_files/` next to the
`.md` file and links them. A task's content (decision summary, verdicts, robustness,
efficiency, per-condition results, published figures) is built once by
:func:`mmbench.board.view.task_view` for the report and the site's task page alike; the
tables live in :mod:`mmbench.board.tables`, the figures in :mod:`mmbench.board.figures`.

Sorting self-test hook: opening a page with `#sort=<column key>` (or `#sort=-<key>` for
descending) sorts every table that has that column on load; each sorted table records
`data-sorted-by` so a headless browser can check the result.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from mmbench.board.figures import Figure, confusion_figure
from mmbench.board.tables import Column, Table, by_task, cell, fmt, num
from mmbench.board.view import task_view
from mmbench.core.errors import DataError, MMBenchError
from mmbench.evaluation.results import Result

__all__ = [
    "render_leaderboard_html",
    "collect_results",
    "render_report_html",
    "render_report_markdown",
    "write_report",
    "write_results_report",
    "template_loader",
    "static_text",
    "page_context",
]


# --------------------------------------------------------------------------------------------
# templates (package data: templates/, static/)
# --------------------------------------------------------------------------------------------


def template_loader():
    """The board's and the report's Jinja templates: package data under mmbench/board/templates/."""
    import jinja2

    return jinja2.PackageLoader("mmbench.board", "templates")


def static_text(name: str) -> str:
    """A file of mmbench/board/static/ (the pages' CSS and sorting script, inlined into each page)."""
    from importlib.resources import files

    return files("mmbench.board").joinpath("static", name).read_text(encoding="utf-8")


def _env(html: bool):
    import jinja2

    env = jinja2.Environment(loader=template_loader(), autoescape=html, undefined=jinja2.StrictUndefined,
                             trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)
    return env


def page_context(title: str) -> dict[str, Any]:
    from markupsafe import Markup

    from mmbench import __version__

    return {"title": title, "version": __version__, "css": Markup(static_text("report.css")), "js": Markup(static_text("sort.js"))}


# --------------------------------------------------------------------------------------------
# the leaderboard page
# --------------------------------------------------------------------------------------------


def render_leaderboard_html(rows: list[dict[str, Any]], title: str = "mmbench leaderboard",
                            entries: Sequence[Result] = (), board_dir: str | Path | None = None) -> str:
    """One self-contained HTML page for `leaderboard.rank()` rows: per task the decision summary,
    the ranked entries with their verdicts, robustness, efficiency and per-condition tables and
    the figures (:func:`mmbench.board.view.task_view`); ``entries`` (the ranked results) add
    the chance level and the spread bands, ``board_dir`` (where their predictions are stored)
    the verdicts on relative robustness."""
    from mmbench.board.testsets import partition_by_test_set

    entries = partition_by_test_set(list(entries))  # labelled as the rows are (<task>@<fingerprint> where split)
    tasks = []
    for task, task_rows in by_task(rows).items():
        task_rows = sorted(task_rows, key=lambda r: r.get("rank", 0))
        tasks.append(task_view(task, task_rows, [e for e in entries if e.task == task], board_dir=board_dir))
    ctx = page_context(title) | {"tasks": tasks, "n_entries": len(rows)}
    return _env(True).get_template("board.html.j2").render(**ctx)


# --------------------------------------------------------------------------------------------
# the report: inputs
# --------------------------------------------------------------------------------------------


UNSCORED_RUN = ("a run folder without result.json: the run did not finish, or an older `mmbench train` wrote it "
                "(train now scores each run under every condition into result.json): train it again")


def _result_files(d: Path) -> list[Path]:
    """Result JSON files in a folder: a run folder's result.json; every result.json below a runs
    root; else leaderboard entries (`*.json` in the folder and its task folders, not history)."""
    if (d / "result.json").is_file():
        return [d / "result.json"]
    if (d / "config.json").is_file() and (d / "log.jsonl").is_file():
        raise DataError(UNSCORED_RUN, d)
    runs = sorted(p for p in d.rglob("result.json") if p.is_file() and "history" not in p.relative_to(d).parts)
    if runs:
        return runs
    files = [f for f in sorted(d.glob("*.json")) if f.is_file() and not f.name.startswith(".")]
    for sub in sorted(p for p in d.iterdir() if p.is_dir() and p.name != "history" and not p.name.startswith(".")):
        files += [f for f in sorted(sub.glob("*.json")) if f.is_file() and not f.name.startswith(".")]
    return files


def collect_results(inputs: Sequence[str | Path]) -> tuple[list[Result], list[Path], int]:
    """Parse every input (result/entry JSON files, run folders, runs roots, leaderboard folders)
    as `Result`s. Returns (results, files read, duplicates skipped); duplicates are results with
    the same (task, name, seed), of which the highest version / newest is kept."""
    from mmbench.board.entries import read_entry

    if not inputs:
        raise MMBenchError("no inputs given: pass result JSON files, run folders or leaderboard folders")
    files: list[Path] = []
    seen: set[Path] = set()
    for inp in inputs:
        p = Path(inp)
        if p.is_file():
            found = [p]
        elif p.is_dir():
            found = _result_files(p)
            if not found and any(p.rglob("log.jsonl")):
                raise DataError(f"no results found: {UNSCORED_RUN.removeprefix('a ').replace('folder', 'folders', 1)}", p)
            if not found:
                raise DataError("no results found (expected result.json in run folders, or leaderboard entries "
                                "<task>/<name>.json)", p)
        else:
            raise DataError("file not found", p)
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    chosen: dict[tuple[str, str, int | None], Result] = {}
    for f in files:
        r = read_entry(f)
        k = (r.task, r.name, r.seed)
        if k not in chosen or (r.version, r.created) > (chosen[k].version, chosen[k].created):
            chosen[k] = r
    return list(chosen.values()), files, len(files) - len(chosen)


# --------------------------------------------------------------------------------------------
# the report: content
# --------------------------------------------------------------------------------------------

def _confusion(group: list[Result]) -> tuple[list[list[float]] | None, list[str], str]:
    """The mean over seeds of the per-seed confusion matrices of one entry (counts per seed, so
    a class's support is its number of test items), class labels, and a reason if none."""
    mats = []
    labels: list[str] = []
    bad = 0
    for e in group:
        m = e.extra.get("confusion_matrix")
        if m is None:
            continue
        ok = (isinstance(m, list) and len(m) > 0 and all(isinstance(row, list) and len(row) == len(m) for row in m)
              and all(num(x) is not None and x >= 0 for row in m for x in row))
        if not ok:
            bad += 1
            continue
        mats.append(m)
        names = e.extra.get("class_names")
        if not labels and isinstance(names, list) and len(names) == len(m):
            labels = [str(n) for n in names]
    if not mats:
        why = "malformed" if bad else "missing"
        return None, [], why
    k = len(mats[0])
    same = [m for m in mats if len(m) == k]
    mean = [[float(sum(m[i][j] for m in same)) / len(same) for j in range(k)] for i in range(k)]
    return mean, labels or [str(i) for i in range(k)], ""


def _class_table(matrix: list[list[float]], labels: list[str]) -> Table:
    k = len(matrix)
    cols = [Column("class", "class", "asc", numeric=False), Column("support", "support", "desc"),
            Column("recall", "recall", "desc"), Column("precision", "precision", "desc"),
            Column("f1", "F1", "desc")]
    body = []
    for i in range(k):
        support = sum(matrix[i])
        predicted = sum(matrix[j][i] for j in range(k))
        tp = matrix[i][i]
        rec = tp / support if support else None
        prec = tp / predicted if predicted else None
        f1 = 2 * rec * prec / (rec + prec) if rec is not None and prec is not None and rec + prec > 0 else None
        body.append([cell(labels[i]), cell(f"{support:g}", support), cell(fmt(rec), rec), cell(fmt(prec), prec),
                     cell(fmt(f1), f1)])
    return Table(cols, body, css="classes", first_is_best=False)  # classes are not ranked


_CHECK_NOTE = ("Mean over this run's seeds (clean test set) against the measured reference in "
               "baselines/reference.json (mean ± std over its seeds). Band: the largest difference that still "
               "reproduces, 3 standard errors of the difference of the two means (mmbench.reproduce.tolerance).")


def _check_table(checks: Sequence[Any]) -> Table | None:
    """`mmbench reproduce`'s reference checks of one task (objects with task, fusion, metric,
    mean, reference, reference_std, band, ok and verdict; see mmbench.reproduce.Check)."""
    if not checks:
        return None
    columns = [Column("fusion", "fusion", "asc", numeric=False), Column("metric", "metric", "asc", numeric=False),
               Column("mean", "mean over seeds", "desc"), Column("reference", "reference", "desc"),
               Column("difference", "difference", "asc", "mean - reference"),
               Column("band", "band", "asc", "largest |difference| that reproduces"),
               Column("verdict", "verdict", "asc", numeric=False)]
    rows = []
    for c in checks:
        has_ref = c.reference is not None
        failed = getattr(c, "error", None) is not None  # the row failed: no mean
        rows.append([
            cell(str(c.fusion)), cell(str(c.metric)), cell("-" if failed else f"{c.mean:.4f}", None if failed else c.mean),
            cell(f"{c.reference:.4f} ± {c.reference_std:.4f}" if has_ref else "-", c.reference),
            cell(f"{c.mean - c.reference:+.4f}" if has_ref else "-", c.mean - c.reference if has_ref else None),
            cell(f"±{c.band:.4f}" if c.band is not None else "-", c.band),
            cell(c.verdict),
        ])
    return Table(columns, rows, first_is_best=False)


def _published_near(sources: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Published rows of the boards among the report's inputs (``<board>/published/*.yaml``)."""
    from mmbench.board.published import load_published, published_rows

    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for s in sources:
        p = Path(s)
        for d in (p, *p.parents[:2]):
            if d.is_dir() and (d / "published").is_dir() and d.resolve() not in seen:
                seen.add(d.resolve())
                rows += published_rows(load_published(d))
    return rows


def _board_root(sources: Sequence[str | Path], results: list[Result]) -> Path | None:
    """The board folder the results' stored predictions live under (an entry file's
    ``<board>/<task>/<name>.json`` gives ``<board>``), or None."""
    stored = next((r.predictions_file for r in results if r.predictions_file), None)
    if stored is None:
        return None
    for s in sources:
        p = Path(s)
        for d in (p, *p.parents[:3]):
            if d.is_dir() and (d / stored).is_file():
                return d
    return None


def _report_context(results: list[Result], title: str, sources: Sequence[str | Path], skipped: int,
                    checks: Sequence[Any] = (), published: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    from mmbench.board.entries import rank
    from mmbench.board.summary import retrieval_metric

    if not results:
        raise MMBenchError("no results to report")
    from mmbench.board.testsets import partition_by_test_set

    rows = rank(results)
    results = partition_by_test_set(list(results))  # labelled as the rows are
    pub = list(_published_near(sources) if published is None else published)
    tasks = []
    for task, task_rows in by_task(rows).items():
        task_results = [e for e in results if e.task == task]
        t = task_view(task, task_rows, task_results, [r for r in pub if r["task"] == task], _board_root(sources, task_results))
        best = task_rows[0]
        group = sorted((e for e in task_results if e.name == best["name"]), key=lambda e: (e.seed is None, e.seed or 0))
        t.update(best=best["name"], check_table=_check_table([c for c in checks if c.task == task]),
                 confusion_figures=[], confusion_table=None, confusion_notes=[])
        matrix, labels, why = _confusion(group)
        if matrix is None and retrieval_metric(best["primary_metric"]):
            t["confusion_notes"].append("Per-class confusion: not applicable (a retrieval task has no classes).")
        elif matrix is None:
            what = ("is malformed (expected a square list of lists of counts)" if why == "malformed"
                    else "is not recorded")
            t["confusion_notes"].append(f"Per-class confusion not available: the confusion matrix of {best['name']} "
                                        f"{what} in its results.")
        else:
            t["confusion_figures"].append(confusion_figure(task, best["name"], matrix, labels))
            t["confusion_table"] = _class_table(matrix, labels)
            seeds = sum(1 for e in group if e.extra.get("confusion_matrix") is not None)
            if seeds > 1:
                t["confusion_notes"].append(f"Counts and support are per seed: the mean over {seeds} seeds.")
        tasks.append(t)
    across = None
    if len(tasks) > 1:
        from mmbench.board.across import across_table, across_tasks

        ranked = across_tasks(rows, results)
        across = across_table(ranked) if ranked else None
    return {"title": title, "tasks": tasks, "n_results": len(results), "n_entries": len(rows), "across": across,
            "sources": [str(s) for s in sources], "source_groups": source_groups(sources), "skipped": skipped, "check_note": _CHECK_NOTE,
            "failed": list(dict.fromkeys(f"{c.task} {c.fusion}: {c.error}" for c in checks
                                         if getattr(c, "error", None) is not None))}


def source_groups(sources: Sequence[str | Path]) -> list[str]:
    """The report's inputs collapsed by folder: ``runs/mosi (55 files)``, or the file alone."""
    groups: dict[str, int] = {}
    for s in sources:
        parent = Path(s).parent
        key = str(parent.parent if parent.name.startswith("seed") or Path(s).name == "result.json" else parent)
        groups[key] = groups.get(key, 0) + 1
    return [f"{k} ({n} file{'s' if n != 1 else ''})" for k, n in groups.items()]


def render_report_html(results: list[Result], title: str = "mmbench report",
                       sources: Sequence[str | Path] = (), skipped: int = 0, checks: Sequence[Any] = ()) -> str:
    """The report as one self-contained HTML page (figures embedded as data URIs); `checks`
    (from `mmbench reproduce`) add a reference-check table to each task."""
    ctx = page_context(title) | _report_context(results, title, sources, skipped, checks)
    return _env(True).get_template("report.html.j2").render(**ctx)


def render_report_markdown(results: list[Result], title: str = "mmbench report", assets_dir: str = "report_files",
                           sources: Sequence[str | Path] = (), skipped: int = 0,
                           checks: Sequence[Any] = ()) -> tuple[str, dict[str, bytes]]:
    """The report as Markdown plus its figures: (text, {file name: PNG bytes}); the text links
    each figure as `<assets_dir>/<file name>`."""
    ctx = _report_context(results, title, sources, skipped, checks)
    figs: dict[str, bytes] = {}

    def link(f: Figure) -> str:
        fname = f"{f.name}.png"
        figs[fname] = f.png
        return quote(f"{assets_dir}/{fname}")

    from mmbench import __version__

    text = _env(False).get_template("report.md.j2").render(**ctx, link=link, version=__version__)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text, figs


def write_report(inputs: Sequence[str | Path], out: str | Path, title: str = "mmbench report") -> Path:
    """Read the inputs and write the report to `out`: HTML (.html/.htm) or Markdown (.md, with
    its PNGs in `<stem>_files/` beside it). Every file is written atomically."""
    out = _report_path(out)
    results, files, skipped = collect_results(inputs)
    return write_results_report(results, out, title, files, skipped)


def _report_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm", ".md"):
        raise MMBenchError(f"-o {out}: the report file must end with .html, .htm or .md")
    return out


def write_results_report(results: list[Result], out: str | Path, title: str = "mmbench report",
                         sources: Sequence[str | Path] = (), skipped: int = 0, checks: Sequence[Any] = ()) -> Path:
    """:func:`write_report` for results already in memory (`mmbench reproduce`), with its
    reference checks."""
    from mmbench.core.io import atomic_write_bytes, atomic_write_text

    out = _report_path(out)
    if out.suffix.lower() == ".md":
        assets = f"{out.stem}_files"
        text, figs = render_report_markdown(results, title, assets, sources, skipped, checks)
        for name, png in figs.items():
            atomic_write_bytes(out.parent / assets / name, png)
    else:
        text = render_report_html(results, title, sources, skipped, checks)
    atomic_write_text(out, text)
    return out
