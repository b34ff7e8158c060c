"""`mmbench leaderboard publish` and `mmbench leaderboard site` (called from mmbench.cli)."""

from __future__ import annotations

from pathlib import Path

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
