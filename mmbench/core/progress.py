"""Progress of one long step that is not an epoch (encoding a cold feature cache): on stderr,
a line when it starts, a bar while it runs on a terminal (else a line at each quarter), and a
line with its time when it ends. Nothing is printed for a step answered from the cache."""

from __future__ import annotations

import sys
import time
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
