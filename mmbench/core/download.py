"""Resumable, checksum-verified downloads using only urllib.

``download(url, dest)`` streams into ``dest + ".part"``; an existing ``.part`` is resumed with an
HTTP ``Range`` request.  Only after the whole body has arrived (and its SHA-256 matches, when one is
given) is the ``.part`` renamed to ``dest`` with :func:`os.replace`, so a half-written file is never
found under its final name.  A checksum mismatch deletes the ``.part`` (its bytes are wrong, so
resuming it would be pointless); an interrupted transfer keeps it so the next call resumes.

``download_all(entries, root, mirror=...)`` fetches a dataset's declared files: an entry with
``extract`` is an archive, unpacked safely by :mod:`mmbench.core.archive` and then deleted (its
marker makes a second run a no-op without any request). A mirror (``--mirror`` or
``$MMBENCH_DOWNLOAD_MIRROR``) replaces the scheme and host of every URL, keeping the path.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmbench.core.errors import DataError, SpecError
from mmbench.core.io import safe_join, sha256_file

__all__ = ["MIRROR_ENV", "download", "download_all", "mirror_url"]

_ALLOWED_SCHEMES = ("http", "https", "file")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MIRROR_ENV = "MMBENCH_DOWNLOAD_MIRROR"
_ENTRY_KEYS = ("url", "path", "sha256", "extract", "strip", "members")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.I)


def _user_agent() -> str:
    try:
        from mmbench import __version__ as v  # type: ignore[attr-defined]
    except Exception:
        v = "0"
    return f"mmbench/{v} (+urllib)"


def _normalize_sha256(sha256: str | None, url: str) -> str | None:
    if sha256 is None:
        return None
    s = sha256.strip().lower()
    if s.startswith("sha256:"):
        s = s[len("sha256:") :]
    if not _SHA256_RE.match(s):
        raise SpecError(f"invalid sha256 {sha256!r} for {url}: expected 64 hex characters")
    return s


class _Interrupted(Exception):
    """The connection dropped mid-body; the .part is kept for resuming."""


class _RangeNotSatisfiable(Exception):
    def __init__(self, total: int | None):
        super().__init__(total)
        self.total = total


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes a-b/total`` -> (a, b, total); missing parts are None."""
    if not value:
        return None, None, None
    m = _CONTENT_RANGE_RE.match(value)
    if not m:
        return None, None, None
    a, b, total = m.groups()
    return (
        int(a) if a is not None else None,
        int(b) if b is not None else None,
        int(total) if total not in (None, "*") else None,
    )


@contextlib.contextmanager
def _progress_bar(enabled: bool, description: str):
    """Yields ``update(advance=None, completed=None, total=None)``; a no-op when disabled."""
    if not enabled:
        yield lambda **kw: None
        return
    try:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
    except ImportError:  # pragma: no cover - rich is a dependency, but don't fail a download over it
        yield lambda **kw: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as prog:
        task = prog.add_task(description, total=None)

        def update(**kw: Any) -> None:
            prog.update(task, **{k: v for k, v in kw.items() if v is not None})

        yield update


def _fetch_once(
    url: str,
    part: Path,
    offset: int,
    timeout: float,
    chunk_size: int,
    update,
    headers: Mapping[str, str] | None,
) -> tuple[int, int | None, bool]:
    """One HTTP request writing into ``part``.

    Returns (bytes now in part, total size if known, whether a Range request was honoured).
    Raises _Interrupted (body cut short), _RangeNotSatisfiable (416) or DataError.
    """
    req_headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    if headers:
        req_headers.update(headers)
    if offset > 0:
        req_headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=req_headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset > 0:
            _, _, total = _parse_content_range(exc.headers.get("Content-Range") if exc.headers else None)
            exc.close()
            raise _RangeNotSatisfiable(total) from None
        reason = exc.reason if isinstance(exc.reason, str) else ""
        exc.close()
        raise DataError(f"download failed: HTTP {exc.code} {reason} for {url}".replace("  ", " ")) from None
    except urllib.error.URLError as exc:
        raise DataError(f"download failed: cannot reach {url}: {exc.reason}") from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:  # timeout, refused, bad URL
        raise DataError(f"download failed: {url}: {exc}") from exc

    with resp:
        status = getattr(resp, "status", None) or 200  # file:// responses have no status
        length_hdr = resp.headers.get("Content-Length")
        try:
            length = int(length_hdr) if length_hdr is not None else None
        except ValueError:
            length = None

        if offset > 0 and status == 206:
            start, _end, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start is not None and start != offset:
                # The server answered a different range than asked for; start over cleanly.
                raise _RangeNotSatisfiable(None)
            mode, written, resumed = "ab", offset, True
            if total is None and length is not None:
                total = offset + length
        elif status in (200, 203):
            # Full body: either no Range was sent, or the server ignored it -> restart from zero.
            mode, written, resumed = "wb", 0, False
            total = length
        else:
            raise DataError(f"download failed: unexpected HTTP {status} for {url}")

        update(total=total, completed=written)
        expected_end = written + length if length is not None else total
        with open(part, mode) as fh:
            if mode == "ab":
                fh.truncate(offset)  # (no-op normally; guards against a .part grown since stat)
                fh.seek(offset)
            try:
                while True:
                    block = resp.read(chunk_size)
                    if not block:
                        break
                    fh.write(block)
                    written += len(block)
                    update(advance=len(block))
            except (OSError, EOFError, ValueError, http.client.HTTPException) as exc:
                # connection reset, read timeout, IncompleteRead (chunked), ...
                raise _Interrupted(f"connection lost after {written} bytes: {exc}") from exc
            finally:
                fh.flush()
                os.fsync(fh.fileno())
        if expected_end is not None and written < expected_end:
            raise _Interrupted(f"connection closed after {written} of {expected_end} bytes")
        if expected_end is not None and written > expected_end:
            raise DataError(
                f"download failed: received {written} bytes, more than the {expected_end} announced for {url}"
            )
        return written, total if total is not None else written, resumed


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    resume: bool = True,
    timeout: float = 30,
    chunk_size: int = 1 << 16,
    progress: bool = True,
    headers: Mapping[str, str] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (atomically) and return ``Path(dest)``.

    - ``dest`` already present: returned as-is if ``sha256`` is None or matches; if it does not
      match, it is downloaded again (and replaced only once the new copy verifies).
    - Bytes go to ``dest + ".part"``; with ``resume=True`` an existing ``.part`` is continued with
      ``Range: bytes=N-`` (206 -> append; 200 -> server ignores ranges, restart from zero;
      416 -> the ``.part`` is complete if its size equals the remote size, otherwise it is
      discarded and the download restarts).
    - ``sha256`` given: verified before the rename; on mismatch the ``.part`` is deleted and a
      :class:`DataError` names the URL, the expected and the actual digest.
    - Network/HTTP failures raise :class:`DataError` naming the URL; a transfer cut short keeps the
      ``.part`` so calling again resumes it.
    - Concurrent downloads of the same ``dest`` serialize on a ``filelock`` kept under
      ``<cache root>/locks/`` (:func:`mmbench.core.cache.data_lock`), so no lock file is left beside the data.
    """
    dest = Path(dest)
    expected = _normalize_sha256(sha256, url)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        raise SpecError(f"unsupported URL scheme {scheme!r} in {url!r} (use http, https or file)")

    if dest.is_file() and (expected is None or sha256_file(dest) == expected):
        return dest
    if dest.is_dir():
        raise DataError(f"cannot download {url}: destination is a directory", dest)

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    from mmbench.core.cache import data_lock

    lock = data_lock(dest)  # under the cache: no .lock file is left beside the data

    with lock:
        # Someone else may have finished this download while we waited for the lock.
        if dest.is_file() and (expected is None or sha256_file(dest) == expected):
            return dest
        if not resume:
            part.unlink(missing_ok=True)

        restarted = False
        with _progress_bar(progress, dest.name) as update:
            while True:
                offset = part.stat().st_size if part.is_file() else 0
                try:
                    _fetch_once(url, part, offset, timeout, chunk_size, update, headers)
                    break
                except _RangeNotSatisfiable as exc:
                    if exc.total is not None and exc.total == offset:
                        break  # the .part already holds the complete file
                    if restarted:
                        raise DataError(
                            f"download failed: server keeps refusing the range for {url}"
                        ) from None
                    part.unlink(missing_ok=True)  # stale/oversized .part: start from scratch
                    restarted = True
                except _Interrupted as exc:
                    raise DataError(
                        f"download of {url} interrupted ({exc}); "
                        f"partial data kept in {part.name}, run again to resume",
                        dest,
                    ) from None

        if expected is not None:
            actual = sha256_file(part)
            if actual != expected:
                part.unlink(missing_ok=True)
                raise DataError(
                    f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; "
                    "the corrupt download was deleted",
                    dest,
                )
        os.replace(part, dest)
    return dest


def _check_mirror(mirror: str) -> str:
    parts = urllib.parse.urlsplit(mirror)
    if parts.scheme.lower() not in _ALLOWED_SCHEMES or (parts.scheme.lower() != "file" and not parts.netloc):
        raise SpecError(f"download mirror {mirror!r} must be an http(s)://host[/prefix] or file:// URL "
                        f"(from --mirror or ${MIRROR_ENV})")
    if parts.query or parts.fragment:
        raise SpecError(f"download mirror {mirror!r} must not have a query or fragment")
    return mirror


def mirror_url(url: str, mirror: str) -> str:
    """``url`` with its scheme and host replaced by the mirror's, keeping the path (after the
    mirror's own path, if any): ``https://a.org/x/y.zip`` + ``http://127.0.0.1:8000`` ->
    ``http://127.0.0.1:8000/x/y.zip``."""
    m = urllib.parse.urlsplit(_check_mirror(mirror))
    u = urllib.parse.urlsplit(url)
    path = u.path if u.path.startswith("/") else "/" + u.path
    return urllib.parse.urlunsplit((m.scheme, m.netloc, m.path.rstrip("/") + path, u.query, ""))


def _plan_entry(i: int, entry: Any, root: str | os.PathLike) -> dict[str, Any]:
    """One manifest entry validated, with its destination (and extraction folder) resolved."""
    from mmbench.core.archive import archive_format

    if not isinstance(entry, Mapping):
        raise SpecError(f"download entry #{i} must be a mapping with 'url' and 'path'")
    missing = [k for k in ("url", "path") if not entry.get(k)]
    if missing:
        raise SpecError(f"download entry #{i} is missing {', '.join(repr(m) for m in missing)}")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise SpecError(f"download entry #{i} has unknown key {unknown[0]!r}; known: {', '.join(_ENTRY_KEYS)}")
    url = str(entry["url"])
    plan: dict[str, Any] = {"url": url, "dest": safe_join(root, entry["path"]),
                            "sha256": _normalize_sha256(entry.get("sha256"), url), "extract": None}
    if entry.get("extract") is None:
        if entry.get("strip") or entry.get("members"):
            raise SpecError(f"download entry #{i} ({url}): 'strip' and 'members' need 'extract'")
        return plan
    if archive_format(plan["dest"].name) is None:
        raise SpecError(f"download entry #{i} ({url}): 'extract' needs a path ending in .zip, .tar, .tar.gz or .tgz")
    if plan["sha256"] is None:
        raise SpecError(f"download entry #{i} ({url}): an archive to extract needs its 'sha256'")
    members = entry.get("members") or []
    if isinstance(members, str) or not all(isinstance(m, str) and m for m in members):
        raise SpecError(f"download entry #{i} ({url}): 'members' must be a list of glob patterns")
    strip = str(entry.get("strip") or "").strip("/")
    if strip:
        safe_join(root, strip)  # refuses absolute paths and '..'
    plan.update(extract=safe_join(root, entry["extract"]), strip=strip, members=list(members))
    return plan


def download_all(
    entries: Iterable[Mapping[str, Any]],
    root: str | os.PathLike,
    *,
    mirror: str | None = None,
    resume: bool = True,
    timeout: float = 30,
    progress: bool = True,
) -> list[Path]:
    """Fetch each entry under ``root``; returns, per entry, the file (or extraction folder).

    An entry is ``{"url", "path", "sha256"?}``, downloaded to ``safe_join(root, path)``; with
    ``"extract": folder`` (plus optional ``"strip"`` and ``"members"``, see
    :func:`mmbench.core.archive.extract_archive`) the verified archive is unpacked into
    ``safe_join(root, folder)`` and deleted. An archive already extracted (same SHA-256 and
    options, recorded in its marker) is skipped without a request. ``mirror`` (default
    ``$MMBENCH_DOWNLOAD_MIRROR``) rewrites every URL with :func:`mirror_url`.

    Entries and the mirror are validated up front (missing or unknown keys, paths escaping
    ``root``, a bad mirror) so a bad manifest fails before any network traffic.
    """
    from mmbench.core.archive import extract_archive, is_extracted

    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    if mirror is not None:
        _check_mirror(mirror)
    planned = [_plan_entry(i, entry, root) for i, entry in enumerate(entries)]
    out: list[Path] = []
    for p in planned:
        url = mirror_url(p["url"], mirror) if mirror else p["url"]
        if p["extract"] is None:
            out.append(download(url, p["dest"], sha256=p["sha256"], resume=resume, timeout=timeout, progress=progress))
            continue
        opts = {"strip": p["strip"], "members": p["members"]}
        if not is_extracted(p["extract"], p["dest"].name, p["sha256"], **opts):
            archive = download(url, p["dest"], sha256=p["sha256"], resume=resume, timeout=timeout, progress=progress)
            extract_archive(archive, p["extract"], p["sha256"], **opts)
            archive.unlink(missing_ok=True)
        out.append(p["extract"])
    return out
