"""Which board folder `mmbench leaderboard` reads: the one asked for, else `./leaderboard`, else
the board shipped with the package (a wheel carries it as `mmbench/_builtin/leaderboard`)."""

from __future__ import annotations

from pathlib import Path

from mmbench.data.tasks import builtin_dir

DEFAULT_BOARD = Path("leaderboard")


def board_folder(requested: str | Path | None = None) -> tuple[Path, str]:
    """(the folder, a label that says which board it is). A folder other than the default is
    read as given; the default `./leaderboard` takes precedence where it exists, and where it
    does not, the shipped board is read."""
    requested = Path(requested) if requested is not None else DEFAULT_BOARD
    if requested != DEFAULT_BOARD or requested.is_dir():
        return requested, f"the board in {'./' if requested == DEFAULT_BOARD else ''}{requested}"
    shipped = builtin_dir("leaderboard")
    if shipped.is_dir():
        return shipped, f"the board shipped with mmbench ({shipped}; no ./leaderboard here)"
    return requested, f"the board in {requested}"
