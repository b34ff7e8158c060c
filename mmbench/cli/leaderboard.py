"""`mmbench leaderboard [TASK]` (rank entries), `leaderboard verify`, `leaderboard publish RUNS...`
and `leaderboard site`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def publish_command(runs: list[Path], board_dir: Path, tasks: list[str]) -> None:
    """Write every finished run under `runs` as an entry of `board_dir`, with its predictions."""
    from mmbench.core.errors import MMBenchError
    from mmbench.board.publish import publish_runs

    if not runs:
        raise MMBenchError("leaderboard publish needs the reproduce output folder(s) (its --out), e.g. runs")
    written = publish_runs(board_dir, runs, tasks or None)
    per_task: dict[str, int] = {}
    for path in written:
        per_task[path.parent.name] = per_task.get(path.parent.name, 0) + 1
    for task, n in sorted(per_task.items()):
        typer.echo(f"  {task}: {n} entries")
    typer.echo(f"published {len(written)} runs to {board_dir}; refresh its pages with `mmbench leaderboard site`")


def rescore_command(board_dir: Path, data_dir: Optional[Path], tasks: list[str]) -> None:
    """Re-score the retrieval entries of `board_dir` from their stored embeddings, in place."""
    from mmbench.board.rescore import rescore_board

    done = rescore_board(board_dir, data_dir, tasks or None)
    for path, before, after in done:
        a, b = before.metrics.get("clean", {}), after.metrics.get("clean", {})
        changed = ", ".join(f"{k} {a.get(k, float('nan')):.4f} -> {b[k]:.4f}" for k in b if a.get(k) != b[k])
        typer.echo(f"  {path.relative_to(board_dir).as_posix()}: {changed or 'unchanged'}")
    typer.echo(f"re-scored {len(done)} retrieval entries of {board_dir}; refresh its pages with `mmbench leaderboard "
               f"site` and its docs tables with `mmbench leaderboard docs`")


def site_command(board_dir: Path, check: bool) -> None:
    from mmbench.core.errors import MMBenchError
    from mmbench.board.site import site_differences, write_site

    if not Path(board_dir).is_dir():
        raise MMBenchError("leaderboard folder not found", board_dir)
    if check:
        diffs = site_differences(board_dir)
        if diffs:
            raise MMBenchError(f"leaderboard pages out of date ({'; '.join(diffs[:3])}); run `mmbench leaderboard site "
                               f"--dir {board_dir}`", board_dir)
        typer.echo(f"the pages of {board_dir} match its entries")
        return
    for path in write_site(board_dir):
        typer.echo(f"wrote {path}")


def docs_command(files: list[Path], board_dir: Path, check: bool) -> None:
    """Regenerate (or, with --check, compare) the board tables marked in Markdown files."""
    from mmbench.core.errors import MMBenchError
    from mmbench.board.doctables import doc_table_differences, write_doc_tables

    if not files:
        raise MMBenchError("leaderboard docs needs the Markdown file(s) with board-table blocks, e.g. docs/baselines.md")
    if not Path(board_dir).is_dir():
        raise MMBenchError("leaderboard folder not found", board_dir)
    for f in files:
        if not f.is_file():
            raise MMBenchError("docs file not found", f)
    if check:
        diffs = [d for f in files for d in doc_table_differences(f, board_dir)]
        if diffs:
            raise MMBenchError(f"docs tables out of date ({'; '.join(diffs[:3])}); run `mmbench leaderboard docs "
                               f"{' '.join(map(str, files))} --dir {board_dir}`")
        typer.echo(f"the board tables of {', '.join(map(str, files))} match {board_dir}")
        return
    for f in files:
        typer.echo(f"{'wrote' if write_doc_tables(f, board_dir) else 'unchanged'} {f}")


def leaderboard(
    task: Optional[str] = typer.Argument(None, help="A task, or: verify, rescore, publish RUNS..., site, docs FILES..., "
                                                    "clusters, majority."),
    runs: Optional[list[Path]] = typer.Argument(None, help="publish: reproduce output folders (--out) to publish; "
                                                           "docs: Markdown files with board-table blocks."),
    fmt: str = typer.Option("table", "--format", help="table, md, csv, json or html."),
    board_dirs: list[Path] = typer.Option([], "--dir", help="Board folder (default ./leaderboard); repeat it to rank "
                                                             "several boards together (e.g. yours beside the shipped one)."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to a file instead of stdout."),
    only: list[str] = typer.Option([], "--task", help="publish, rescore: only these tasks (repeatable)."),
    check: bool = typer.Option(False, "--check", help="site, docs: write nothing; exit 1 if a page or table differs "
                                                     "from the entries."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="verify, rescore, clusters, majority: the data root "
                                                                   "(default $MMBENCH_DATA)."),
    bootstrap_seed: int = typer.Option(0, "--bootstrap-seed", help="Seed of the significance resamples (verdicts do not "
                                                                    "depend on it: p-values carry their Monte-Carlo error)."),
) -> None:
    """Rank leaderboard entries by each task's primary metric. `leaderboard verify` recomputes
    every entry from its stored predictions; `leaderboard rescore` re-scores the retrieval entries
    from their stored embeddings under the current rules, in place; `leaderboard publish RUNS...` writes the finished
    runs of `reproduce` output folders as entries with their predictions; `leaderboard site`
    writes the board's static pages (index.html and one page per task); `leaderboard docs
    FILES...` regenerates the measured tables marked in Markdown files (mmbench.board.doctables);
    `leaderboard clusters` writes each entry's resampling-unit keys from its task's `cluster`
    rule over the test split (mmbench.board.clusters); `leaderboard majority` stores each task's
    training-split majority in its entries (read from the data; the majority baseline the pages
    show beside chance)."""
    board_dir = _one_board(board_dirs, task)
    if task == "verify":
        from mmbench.cli.evaluate import verify_command

        return verify_command(board_dir, data_dir)
    if task == "docs":
        return docs_command(runs or [], board_dir, check)
    if task == "rescore":
        return rescore_command(board_dir, data_dir, only)
    if task == "clusters":
        from mmbench.board.clusters import write_clusters

        for line in write_clusters(board_dir, data_dir):
            typer.echo(line)
        return
    if task == "majority":  # store each task's training majority in its entries (the board's reference point)
        from mmbench.board.entries import add_training_majority

        for line in add_training_majority(board_dir, data_dir):
            typer.echo(line)
        return None
    if task in ("publish", "site"):
        return publish_command(runs or [], board_dir, only) if task == "publish" else site_command(board_dir, check)
    if runs:
        from mmbench.core.errors import MMBenchError

        raise MMBenchError(f"unexpected argument {str(runs[0])!r} (only `leaderboard publish` takes folders)")
    from mmbench.core.errors import MMBenchError
    from mmbench.core.io import atomic_write_text
    from mmbench.board.entries import rank, render
    from mmbench.board.location import board_folder

    board_dir, which = board_folder(board_dir)
    if len(board_dirs) > 1:
        which = "the boards in " + ", ".join(str(d) for d in board_dirs) + ", ranked together"
    typer.echo(f"showing {which}", err=True)
    if fmt not in ("table", "md", "csv", "json", "html"):
        raise MMBenchError(f"--format must be table, md, csv, json or html, not {fmt!r}")
    entries = entries_of_boards(board_dirs or [board_dir], task)
    rows = rank(entries, seed=bootstrap_seed)
    if not rows and fmt in ("table", "md"):  # a task with published figures only: show them
        from mmbench.board.published import load_published, published_rows, render_published

        published = published_rows(load_published(board_dir, task))
        if published:
            typer.echo(f"no measured entries{' for ' + task if task else ''} in {board_dir}\n\n"
                       + render_published(published))
            return
    if not rows:
        raise MMBenchError(f"no leaderboard entries{' for ' + task if task else ''} in {board_dir}")
    if fmt == "html":
        from mmbench.board.report import render_leaderboard_html

        text = render_leaderboard_html(rows, entries=entries, board_dir=board_dir)
    elif fmt == "json":
        from mmbench.board.view import board_json

        text = board_json(rows, entries, board_dir, across=task is None)
    else:
        import shutil
        import sys

        width = shutil.get_terminal_size().columns if fmt == "table" and out is None and sys.stdout.isatty() else None
        text = render(rows, fmt, width=width)
    if fmt in ("table", "md"):
        from mmbench.board.published import load_published, published_rows, render_published

        published = published_rows(load_published(board_dir, task))
        if published:
            text += "\n\n" + render_published(published)
    if out:
        atomic_write_text(out, text)
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text)


def _one_board(board_dirs: list[Path], task: str | None) -> Path:
    """The --dir of a command that works on one board (verify, rescore, publish, site, clusters); ranking takes several."""
    from mmbench.core.errors import MMBenchError

    if len(board_dirs) > 1 and task in ("verify", "rescore", "publish", "site", "clusters", "majority"):
        raise MMBenchError(f"leaderboard {task} works on one board; give one --dir")
    return board_dirs[0] if board_dirs else Path("leaderboard")


def entries_of_boards(board_dirs: list[Path], task: str | None) -> list:
    """The entries of every board in one list, for one ranking (significance across all). A name
    that an earlier board already has is shown as `name [folder]`, so that two boards' entries
    of one name are never pooled as seeds of one submission."""
    from mmbench.board.entries import load_entries
    from mmbench.core.errors import MMBenchError

    entries: list = []
    for i, d in enumerate(board_dirs):
        if len(board_dirs) > 1 and not Path(d).is_dir():
            raise MMBenchError("leaderboard folder not found", d)
        taken = {(e.task, e.name) for e in entries}
        for e in load_entries(d, task):
            if i and (e.task, e.name) in taken:
                e = e.model_copy(update={"name": f"{e.name} [{Path(d).name or d}]"})
            entries.append(e)
    return entries


def register(app: typer.Typer) -> None:
    app.command()(leaderboard)
