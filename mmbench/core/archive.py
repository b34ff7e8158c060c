"""Safe, atomic extraction of a downloaded archive (zip, tar, tar.gz) into a folder.

``extract_archive(archive, target, sha256, strip=..., members=...)``:

- Every member is checked before anything is written; one :class:`DataError` naming the
  archive and the member refuses the whole archive for: an absolute name, a ``..``
  component, a backslash or NUL in a name, a symbolic link that is absolute or climbs with
  ``..`` (so no chain of links can leave ``target``; zip symlinks are refused), a hard link to
  a file not extracted before it, a device file or FIFO, more than ``max_members`` members,
  more than ``max_bytes`` in total, a zip member compressed more than ``MAX_RATIO`` times (a
  zip bomb), or too little free disk space.
- ``strip`` removes a leading folder (GitHub's ``repo-1.0.9/``); members outside it are
  ignored. ``members`` keeps only the paths (after ``strip``) matching one of its globs.
- The members are written to a hidden temporary folder inside ``target`` (same file system),
  then each top-level entry is renamed into place. An entry already there is replaced only
  when an earlier extraction of this archive put it there; otherwise it is refused, so files a
  user placed by hand are never overwritten.
- A marker ``target/.<archive name>.extracted.json`` records the archive's SHA-256, the
  options and the entries; :func:`is_extracted` compares it, so a second run does nothing.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbench.core.errors import DataError, SpecError
from mmbench.core.io import atomic_write_json

__all__ = ["ARCHIVE_SUFFIXES", "archive_format", "extract_archive", "is_extracted", "marker_path"]

ARCHIVE_SUFFIXES = {".zip": "zip", ".tar": "tar", ".tar.gz": "tar", ".tgz": "tar"}
MAX_BYTES = 64 << 30  # COCO train2017 (the largest official archive here) is 19 GB
MAX_MEMBERS = 1_000_000
MAX_RATIO = 1000  # deflate cannot exceed ~1032:1; more than this on a large member is a bomb
_RATIO_MIN_SIZE = 1 << 20
_CHUNK = 1 << 20


def archive_format(name: str) -> str | None:
    """'zip' or 'tar' from a file name's suffix, else None."""
    low = name.lower()
    for suffix, fmt in sorted(ARCHIVE_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if low.endswith(suffix):
            return fmt
    return None


def marker_path(target: Path, archive_name: str) -> Path:
    return Path(target) / f".{archive_name}.extracted.json"


def _spec(sha256: str, strip: str | None, members: Sequence[str] | None) -> dict[str, Any]:
    return {"sha256": sha256, "strip": strip or "", "members": list(members or [])}


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("entries"), list) else None


def is_extracted(target: str | os.PathLike, archive_name: str, sha256: str, strip: str | None = None,
                 members: Sequence[str] | None = None) -> bool:
    """True when this archive (same SHA-256 and options) was fully extracted into ``target``
    and every entry it placed is still there."""
    target = Path(target)
    marker = _read_marker(marker_path(target, archive_name))
    if marker is None or not marker.get("complete"):
        return False
    if {k: marker.get(k) for k in ("sha256", "strip", "members")} != _spec(sha256, strip, members):
        return False
    return all(os.path.lexists(target / e) for e in marker["entries"])


# -- planning: every member checked before anything is written -----------------------------


@dataclass
class _Item:
    kind: str  # file, dir, symlink, hardlink
    rel: str  # posix path under target
    member: Any  # ZipInfo or TarInfo
    size: int = 0
    link: str = ""  # symlink text, or the rel path a hard link points to
    mtime: float | None = None


def _clean_name(name: str, archive: Path) -> str:
    """The member name as a clean relative posix path, or a DataError."""
    def refuse(why: str) -> DataError:
        return DataError(f"unsafe archive member {name!r}: {why}; the archive was not extracted", archive)

    if "\0" in name:
        raise refuse("contains a NUL byte")
    if "\\" in name:
        raise refuse("contains a backslash")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise refuse("absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refuse("'..' component (path traversal)")
    return "/".join(parts)


def _strip(rel: str, strip: str) -> str | None:
    """rel with the strip prefix removed; None when outside it (or the prefix folder itself)."""
    if not strip:
        return rel
    if rel == strip or not rel.startswith(strip + "/"):
        return None
    return rel[len(strip) + 1 :]


def _wanted(rel: str, members: Sequence[str] | None, is_dir: bool) -> bool:
    if not members:
        return True
    if any(fnmatch.fnmatchcase(rel, pat) for pat in members):
        return True
    # a directory is kept when a pattern could match something inside it
    return is_dir and any(pat.startswith(rel + "/") for pat in members)


def _plan_zip(zf: zipfile.ZipFile, archive: Path, strip: str, members: Sequence[str] | None) -> list[_Item]:
    items = []
    for info in zf.infolist():
        rel = _strip(_clean_name(info.filename, archive), strip)
        is_dir = info.is_dir()
        if rel is None or rel == "" or not _wanted(rel, members, is_dir):
            continue
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise DataError(f"archive member {info.filename!r} is a symbolic link (not extracted from zip "
                            "files); the archive was not extracted", archive)
        if info.file_size >= _RATIO_MIN_SIZE and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DataError(f"archive member {info.filename!r} expands {info.compress_size} bytes to "
                            f"{info.file_size} (a zip bomb?); the archive was not extracted", archive)
        mtime = None
        with contextlib.suppress(OverflowError, ValueError):
            mtime = time.mktime(info.date_time + (0, 0, -1))
        items.append(_Item("dir" if is_dir else "file", rel, info, 0 if is_dir else info.file_size, mtime=mtime))
    return items


def _plan_tar(tf: tarfile.TarFile, archive: Path, strip: str, members: Sequence[str] | None,
              max_members: int) -> list[_Item]:
    items: list[_Item] = []
    files: set[str] = set()
    for n, info in enumerate(tf):
        if n >= max_members:
            raise DataError(f"archive has more than {max_members} members, the limit; not extracted", archive)
        rel = _strip(_clean_name(info.name, archive), strip)
        if rel is None or rel == "" or not _wanted(rel, members, info.isdir()):
            continue
        if info.isdir():
            items.append(_Item("dir", rel, info, mtime=info.mtime))
        elif info.isreg():
            items.append(_Item("file", rel, info, info.size, mtime=info.mtime))
            files.add(rel)
        elif info.issym():
            # Only links pointing down from their own folder: with '..' a chain of links can
            # climb out even when each one alone looks inside.
            if info.linkname.startswith("/") or ".." in info.linkname.split("/") or "\0" in info.linkname:
                raise DataError(f"archive member {info.name!r} is a link to {info.linkname!r}, which may point "
                                "outside the extraction folder; the archive was not extracted", archive)
            items.append(_Item("symlink", rel, info, link=info.linkname))
        elif info.islnk():
            linked = _strip(_clean_name(info.linkname, archive), strip)
            if linked not in files:
                raise DataError(f"archive member {info.name!r} is a hard link to {info.linkname!r}, which is "
                                "not a file extracted before it; the archive was not extracted", archive)
            items.append(_Item("hardlink", rel, info, link=linked))
        else:
            raise DataError(f"archive member {info.name!r} is a device file or FIFO; the archive was not "
                            "extracted", archive)
    return items


def _check_totals(items: list[_Item], archive: Path, target: Path, max_bytes: int, max_members: int) -> None:
    if len(items) > max_members:
        raise DataError(f"archive has {len(items)} members, more than the limit of {max_members}; not extracted", archive)
    total = sum(i.size for i in items)
    if total > max_bytes:
        raise DataError(f"archive expands to {total} bytes, more than the limit of {max_bytes}; not extracted", archive)
    probe = target if target.exists() else target.parent
    free = shutil.disk_usage(probe).free
    if total > free:
        raise DataError(f"not enough disk space to extract {archive.name}: it needs {total} bytes, "
                        f"{free} are free", probe)


# -- writing ------------------------------------------------------------------------------------


def _copy(src, dest: Path, size: int, archive: Path, name: str) -> None:
    written = 0
    with open(dest, "xb") as out:
        while True:
            block = src.read(_CHUNK)
            if not block:
                break
            written += len(block)
            if written > size:
                raise DataError(f"archive member {name!r} is longer than its header says ({size} bytes)", archive)
            out.write(block)
    if written != size:
        raise DataError(f"archive member {name!r} is truncated ({written} of {size} bytes)", archive)


def _write(items: list[_Item], opened, fmt: str, tmp: Path, archive: Path) -> None:
    root = os.path.realpath(tmp)

    def inside(path: Path) -> bool:
        real = os.path.realpath(path)
        return real == root or real.startswith(root + os.sep)

    for item in items:
        dest = tmp / item.rel
        name = item.member.filename if fmt == "zip" else item.member.name
        if not inside(dest.parent):  # through a link planted by an earlier member
            raise DataError(f"archive member {name!r} would be written outside the extraction folder; "
                            "the archive was not extracted", archive)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if item.kind == "dir":
            dest.mkdir(exist_ok=True)
            continue
        if os.path.lexists(dest):
            raise DataError(f"archive member {name!r} appears twice; the archive was not extracted", archive)
        if item.kind == "symlink":
            os.symlink(item.link, dest)
            continue
        if item.kind == "hardlink":
            shutil.copy2(tmp / item.link, dest)
            continue
        src = opened.open(item.member) if fmt == "zip" else opened.extractfile(item.member)
        with src:
            _copy(src, dest, item.size, archive, name)
        if fmt == "tar" and item.member.mode & 0o111:
            dest.chmod(0o755)
        if item.mtime is not None:
            with contextlib.suppress(OSError, OverflowError, ValueError):
                os.utime(dest, (item.mtime, item.mtime))


@contextlib.contextmanager
def _open(archive: Path, fmt: str) -> Iterator[Any]:
    try:
        handle = zipfile.ZipFile(archive) if fmt == "zip" else tarfile.open(archive, "r:*")  # noqa: SIM115 (closed below)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"cannot read the {fmt} archive: {exc}", archive) from None
    with handle:
        try:
            yield handle
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise DataError(f"the {fmt} archive is corrupt: {exc}", archive) from None
        except OSError as exc:  # disk full, permissions, a file where a folder should be
            raise DataError(f"extracting the {fmt} archive failed: {exc}", archive) from None


def _lock(target: Path, archive_name: str):
    """Serialises extractions of one archive into `target` (the lock lives in the cache, not beside the data)."""
    from mmbench.core.cache import data_lock

    return data_lock(target / archive_name)


def extract_archive(
    archive: str | os.PathLike,
    target: str | os.PathLike,
    sha256: str,
    *,
    strip: str | None = None,
    members: Sequence[str] | None = None,
    max_bytes: int = MAX_BYTES,
    max_members: int = MAX_MEMBERS,
) -> list[Path]:
    """Extract ``archive`` into ``target`` (see the module docstring); returns the top-level
    paths placed. ``sha256`` is the archive's, recorded in the marker (the caller verified it)."""
    archive, target = Path(archive), Path(target)
    fmt = archive_format(archive.name)
    if fmt is None:
        raise SpecError(f"cannot extract {archive.name}: not a .zip, .tar, .tar.gz or .tgz file")
    strip = (strip or "").strip("/")
    target.mkdir(parents=True, exist_ok=True)
    with _lock(target, archive.name):
        if is_extracted(target, archive.name, sha256, strip, members):
            return [target / e for e in _read_marker(marker_path(target, archive.name))["entries"]]
        with _open(archive, fmt) as opened:
            if fmt == "zip":
                items = _plan_zip(opened, archive, strip, members)
            else:
                items = _plan_tar(opened, archive, strip, members, max_members)
            if not any(i.kind == "file" for i in items):
                what = f" under {strip}/" if strip else ""
                what += f" matching {', '.join(members)}" if members else ""
                raise DataError(f"archive has no files{what}; nothing extracted", archive)
            _check_totals(items, archive, target, max_bytes, max_members)
            tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extracting", dir=target))
            try:
                (tmp / "new").mkdir()
                _write(items, opened, fmt, tmp / "new", archive)
                return _move_into_place(tmp, target, archive.name, _spec(sha256, strip, members))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, target: Path, archive_name: str, spec: dict[str, Any]) -> list[Path]:
    new = tmp / "new"
    entries = sorted(p.name for p in new.iterdir())
    marker = marker_path(target, archive_name)
    previous = _read_marker(marker)
    owned = set(previous["entries"]) if previous else set()
    for e in entries:
        if e.startswith(f".{archive_name}."):
            raise DataError(f"archive member {e!r} has a name mmbench reserves for its own files; "
                            "the archive was not extracted", target)
        if os.path.lexists(target / e) and e not in owned:
            raise DataError(f"{target / e} already exists and was not extracted from {archive_name} by mmbench; "
                            "move it away to extract the download, or use the files there without --download",
                            target / e)
    # Marker first, marked incomplete: after a crash mid-move these entries are still ours to replace.
    atomic_write_json(marker, {"archive": archive_name, **spec, "entries": sorted(owned | set(entries)),
                               "complete": False})
    old = tmp / "old"
    old.mkdir()
    for e in entries:
        if os.path.lexists(target / e):
            os.rename(target / e, old / e)
        os.rename(new / e, target / e)
    atomic_write_json(marker, {"archive": archive_name, **spec, "entries": entries, "complete": True})
    return [target / e for e in entries]
