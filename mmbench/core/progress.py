"""Progress of long steps that are not epochs.

- :class:`StepProgress`: one encoding step of a cold feature cache (``mmbench train`` and any
  loader): on stderr, a line when it starts, a bar while it runs on a terminal (else a line at
  each quarter), and a line with its time when it ends. Nothing is printed for a step answered
  from the cache.
- :func:`progress_bar` / :func:`showing_progress`: bars for frozen-backbone encodings over a
  dataset, drawn only where a command asked for them (``mmbench data prepare`` runs inside
  :func:`showing_progress`); a library call stays quiet. :func:`progress_bar` yields an object
  with ``update(n)``; it is a no-op when progress is off.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any


class StepProgress:
    """``with StepProgress("encoding 2,199 texts with MiniLM", total=2199) as p: ... p.advance(64)``."""

    def __init__(self, label: str, total: int, unit: str = "items"):
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self.done = 0
        self._bar: Any = None
        self._next_quarter = 1

    def __enter__(self) -> "StepProgress":
        self._started = time.perf_counter()
        self._echo(f"{self.label} ({self.total:,} {self.unit}; cold feature cache, done once)...")
        if sys.stderr.isatty() and self.total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.unit, total=self.total)
        return self

    def advance(self, k: int) -> None:
        self.done += int(k)
        if self._bar is not None:
            self._bar.update(self._task, advance=k)
            return
        while self.total and self._next_quarter < 4 and self.done * 4 >= self._next_quarter * self.total:
            self._echo(f"  {self.done:,}/{self.total:,} {self.unit} ({time.perf_counter() - self._started:.1f} s)")
            self._next_quarter += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._bar is not None:
            self._bar.stop()
        if exc_type is None:
            self._echo(f"{self.label}: {self.done:,} {self.unit} in {time.perf_counter() - self._started:.1f} s")

    @staticmethod
    def _echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)


__all__ = ["StepProgress", "progress_bar", "progress_enabled", "showing_progress"]

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
