"""The one exception type users see: a short message naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class MMBenchError(Exception):
    """A user-facing error. The CLI prints `error: <message>` and exits non-zero (no traceback)."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


class DataError(MMBenchError):
    """Input data (a dataset file, a predictions file) is missing, malformed or inconsistent."""


class SpecError(MMBenchError):
    """A task spec or config is invalid; the message names the offending field."""


class SubmissionError(MMBenchError):
    """A submitted model or predictions file is refused. `details`, when set, is what the
    model printed (the CLI shows it after the one-line error)."""

    details: str | None = None
