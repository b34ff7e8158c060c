"""The hash of the package source: which code made a run, a cached prediction or a result.

The version string has stayed 0.1.0 through every change, so it cannot tell a run made by
older code from one made by the code now. :func:`source_hash` is the SHA-256 of every
``.py`` file of the installed ``mmbench`` package (relative path and bytes, in path order):
any edit to the code changes it, a copy of the same code elsewhere (another clone, a wheel,
a Ray worker's node) gives the same hash. It is what `reproduce --resume` and the
prediction cache of `evaluate --model` key on.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import mmbench

__all__ = ["source_hash", "package_root"]


def package_root() -> Path:
    return Path(mmbench.__file__).resolve().parent


@lru_cache(maxsize=None)
def _hash_of(root: str) -> str:
    digest = hashlib.sha256()
    base = Path(root)
    for path in sorted(base.rglob("*.py"), key=lambda p: p.relative_to(base).as_posix()):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(base).as_posix().encode()
        data = path.read_bytes()
        digest.update(len(rel).to_bytes(4, "little") + rel + len(data).to_bytes(8, "little") + data)
    return "src1-" + digest.hexdigest()[:32]


def source_hash(root: str | Path | None = None) -> str:
    """``src1-`` + 32 hex digits of the package source under `root` (default: this package).
    Computed once per process and root (the source does not change under a running process)."""
    return _hash_of(str(Path(root).resolve() if root is not None else package_root()))
