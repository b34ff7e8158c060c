"""Small file utilities used throughout mmbench.

Everything that writes a file goes through the ``atomic_*`` helpers: the data is written to a
hidden temporary file in the destination directory (``.<name>.<random>.tmp``), flushed and
fsync'ed, then moved over the destination with :func:`os.replace`.  A reader therefore sees either
the old complete file, the new complete file, or (if there was none) no file -- never a partial
one, even if the writer is killed.

This module deliberately imports neither torch nor safetensors at import time; the safetensors
helpers import them lazily.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from mmbench.core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_safetensors",
    "load_safetensors",
    "sha256_file",
    "fingerprint_files",
    "fingerprint_stat",
    "read_json",
    "safe_join",
    "DirIndex",
]

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


def _current_umask() -> int:
    """The process umask, read without changing it where possible (Linux), else via os.umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


_UMASK = _current_umask()


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so the rename itself is durable (POSIX only)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Atomically replace ``path`` with ``data``; parent directories are created.

    The temporary file lives in the same directory (so ``os.replace`` is a rename on one
    filesystem), is named ``.<name>.<random>.tmp`` and is removed if anything goes wrong.
    The new file gets the usual ``0o666 & ~umask`` permissions (an existing file's mode is kept).
    """
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_UMASK
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.chmod(tmp_name, mode)
        except OSError:
            pass
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    _fsync_dir(parent)
    return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Atomically write ``text`` (UTF-8 by default; newlines are written as given)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _find_non_finite(obj: Any, where: str = "$") -> str | None:
    """JSON-path-like location of the first NaN/Infinity float inside ``obj``, if any."""
    if isinstance(obj, float):
        return where if not math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            found = _find_non_finite(v, f"{where}.{k}")
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _find_non_finite(v, f"{where}[{i}]")
            if found:
                return found
    return None


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON (key order kept, UTF-8, trailing newline).

    NaN and +/-Infinity are not valid JSON; they raise a :class:`DataError` naming the file and
    the location of the offending value (e.g. ``$.metrics.accuracy``) and nothing is written.
    """
    try:
        text = json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False, ensure_ascii=False)
    except ValueError as exc:
        where = _find_non_finite(obj)
        loc = f" at {where}" if where else ""
        raise DataError(
            f"cannot write JSON: non-finite number (NaN or Infinity){loc} is not valid JSON ({exc})",
            path,
        ) from exc
    except TypeError as exc:
        raise DataError(f"cannot write JSON: {exc}", path) from exc
    if not text.endswith("\n"):
        text += "\n"
    return atomic_write_text(path, text)


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------


def _prepare_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two entries sharing storage (safetensors refuses shared tensors)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"safetensors keys must be str, got {type(name).__name__}")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"value for {name!r} is {type(t).__name__}, not a torch.Tensor")
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        if t.numel() > 0:
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:
                t = t.clone()
                ptr = t.untyped_storage().data_ptr()
            seen.add(ptr)
        out[name] = t
    return out


def atomic_save_safetensors(
    path: PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Serialize ``tensors`` (+ string ``metadata``) to safetensors and write it atomically."""
    from safetensors.torch import save

    if metadata is not None:
        bad = {k: type(v).__name__ for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)}
        if bad:
            raise TypeError(f"safetensors metadata keys and values must be str; offending: {bad}")
        metadata = dict(metadata)
    data = save(_prepare_tensors(tensors), metadata=metadata)
    return atomic_write_bytes(path, data)


def load_safetensors(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file (memory-mapped) into CPU tensors plus its metadata dict.

    A missing, truncated, corrupt or non-safetensors file raises :class:`DataError` naming it.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("is a directory, expected a safetensors file", path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except OSError as exc:
        raise DataError(f"cannot read safetensors file: {exc}", path) from exc
    except Exception as exc:  # SafetensorError (truncated/corrupt header), ValueError, ...
        raise DataError(
            f"not a valid safetensors file (truncated or corrupt?): {exc}", path
        ) from exc
    return tensors, metadata


# --------------------------------------------------------------------------------------------
# hashing / fingerprints
# --------------------------------------------------------------------------------------------


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in ``chunk``-byte blocks."""
    path = Path(path)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while True:
                block = fh.read(chunk)
                if not block:
                    break
                h.update(block)
    except FileNotFoundError as exc:
        raise DataError("file not found", path) from exc
    except IsADirectoryError as exc:
        raise DataError("is a directory, expected a file", path) from exc
    return h.hexdigest()


def _expand(paths: PathLike | Iterable[PathLike], root: PathLike | None) -> list[tuple[str, Path]]:
    """(relative posix name, path) for every file in ``paths``; directories are walked recursively.

    Names are relative to ``root`` if given, else to the common directory of the inputs, so a
    fingerprint does not change when a dataset directory is moved as a whole.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    items = [Path(p) for p in paths]
    for p in items:
        if not p.exists():
            raise DataError("file not found", p)
    if root is not None:
        base = Path(os.path.abspath(root))
    elif items:
        dirs = [os.path.abspath(p if p.is_dir() else p.parent) for p in items]
        base = Path(os.path.commonpath(dirs))
    else:
        base = Path.cwd()

    files: dict[str, Path] = {}
    for p in items:
        candidates = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for f in candidates:
            absf = os.path.abspath(f)
            rel = os.path.relpath(absf, base)
            files[PurePosixPath(*Path(rel).parts).as_posix()] = f
    return sorted(files.items())


def fingerprint_files(paths: PathLike | Iterable[PathLike], root: PathLike | None = None) -> str:
    """SHA-256 over sorted (relative name, size, content SHA-256) of all files in ``paths``.

    Content-exact and location-independent (see :func:`_expand` for how names are made relative).
    """
    h = hashlib.sha256(b"mmbench-fingerprint-v1\0")
    for name, f in _expand(paths, root):
        size = f.stat().st_size
        h.update(f"{name}\0{size}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def fingerprint_stat(paths: PathLike | Iterable[PathLike], root: PathLike | None = None) -> str:
    """Fast fingerprint from (relative name, size, mtime_ns) -- for cache keys of large inputs.

    Does not read file contents, so it changes when a file is touched and may (rarely) miss an
    in-place edit that keeps both size and mtime.
    """
    h = hashlib.sha256(b"mmbench-fingerprint-stat-v1\0")
    for name, f in _expand(paths, root):
        st = f.stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_json(path: PathLike) -> Any:
    """Parse a UTF-8 JSON file (a leading BOM is accepted).

    Raises :class:`DataError` naming the file for a missing file, non-UTF-8 bytes (with the byte
    offset) and malformed JSON (``invalid JSON at line X column Y: ...``).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError("file not found", path) from exc
    except IsADirectoryError as exc:
        raise DataError("is a directory, expected a JSON file", path) from exc
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            f"({exc.reason}); save the file as UTF-8",
            path,
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path) from exc


# --------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------


def safe_join(root: PathLike, relative: PathLike) -> Path:
    """``root / relative``, refusing anything that could point outside ``root``.

    Rejected with :class:`DataError`: absolute paths (POSIX ``/x``, Windows ``C:\\x`` or ``\\x``),
    paths whose ``..`` components climb above ``root`` (``../../etc/passwd``), and NUL bytes.
    The check is lexical (symlinks inside ``root`` are trusted); ``a/../b`` is normalised to ``b``.
    """
    rel = os.fspath(relative)
    if isinstance(rel, bytes):
        rel = os.fsdecode(rel)
    if "\0" in rel:
        raise DataError(f"invalid path {rel!r}: contains a NUL byte", root)
    win = PureWindowsPath(rel)
    if os.path.isabs(rel) or PurePosixPath(rel).is_absolute() or win.drive or win.root:
        raise DataError(f"absolute path {rel!r} not allowed; paths must be relative to {root}", root)
    norm = posixpath.normpath(rel.replace("\\", "/")) if os.name == "nt" else posixpath.normpath(rel)
    if norm == ".." or norm.startswith("../"):
        raise DataError(f"path {rel!r} escapes the root directory {root}", root)
    if norm == ".":
        return Path(root)
    return Path(root) / norm


class DirIndex:
    """File names per folder, listed once (fast existence checks for thousands of images)."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def exists(self, path: Path) -> bool:
        parent = path.parent
        if parent not in self._names:
            try:
                self._names[parent] = {e.name for e in os.scandir(parent) if e.is_file()}
            except OSError:
                self._names[parent] = set()
        return path.name in self._names[parent]


def builtin_dir(kind: str) -> Path:
    """`tasks`, `baselines` or `leaderboard`: the repository folder in a checkout, the packaged copy in a wheel."""
    package = Path(__file__).resolve().parent.parent  # the mmbench package folder
    packaged = package / "_builtin" / kind
    return packaged if packaged.is_dir() else package.parent / kind
