"""Progress bars for long encodings (frozen backbones over a dataset), shown only where a
command asked for them: ``mmbench data prepare`` runs inside :func:`showing_progress`, so its
encodings draw a bar on stderr; a library call or a training run stays quiet.

:func:`progress_bar` yields an object with ``update(n)``; it is a no-op when progress is off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["progress_bar", "progress_enabled", "showing_progress"]

_ENABLED: ContextVar[bool] = ContextVar("mmbench_progress", default=False)


class _Quiet:
    def update(self, n: int = 1) -> None:
        pass


class _Bar:
    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def update(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


def progress_enabled() -> bool:
    return _ENABLED.get()


@contextlib.contextmanager
def showing_progress(enabled: bool = True) -> Iterator[None]:
    """Within the block, :func:`progress_bar` draws (on stderr)."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[_Bar | _Quiet]:
    """A bar over `total` items labelled `description` (items done, rate, time left), or a
    no-op outside :func:`showing_progress`."""
    if not _ENABLED.get() or total <= 0:
        yield _Quiet()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))
