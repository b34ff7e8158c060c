"""On-disk feature cache for expensive preprocessing and frozen-encoder features.

Entries are safetensors files under ``<root>/<key[:2]>/<key>.safetensors``; the key is a SHA-256
of a canonical JSON of (namespace, inputs fingerprint, options, cache format version, mmbench
version), so changing any of them simply addresses a different entry.

- writes are atomic (see :mod:`mmbench.core.io`), so a killed writer never leaves a half entry;
- a corrupt/truncated entry, or one written with another cache format version, is reported with a
  :class:`CacheWarning`, deleted, and treated as a miss so the caller rebuilds it;
- :meth:`FeatureCache.get_or_build` holds a :class:`filelock.FileLock` on ``<key>.lock`` while
  building, so concurrent processes asking for the same key build it once (the others wait and
  then load it).

Root directory: the constructor argument, else ``$MMBENCH_CACHE``, else ``~/.cache/mmbench``.

:meth:`FeatureCache.files_fingerprint` gives the content fingerprint of input files for a key
(:func:`mmbench.core.io.fingerprint_files`' digest) and memoises it under ``<root>/fingerprints/`` by
the files' stat identity, so a warm load does not read and hash every input again.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmbench.core.io import atomic_save_safetensors

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["CACHE_FORMAT_VERSION", "CacheWarning", "FeatureCache", "default_cache_root"]

#: Bump when the on-disk layout or the meaning of cached tensors changes; old entries are ignored.
CACHE_FORMAT_VERSION = 1

_META_FORMAT = "mmbench.cache_format"
_META_KEY = "mmbench.cache_key"
_META_NAMESPACE = "mmbench.namespace"
_META_VERSION = "mmbench.version"
_META_CREATED = "mmbench.created"
_RESERVED_PREFIX = "mmbench."

_FINGERPRINT_DIR = "fingerprints"  # memo of files_fingerprint; never a 2-hex-digit entry folder
_FINGERPRINT_MEMO_VERSION = 1
#: Files modified this recently (ns) before being hashed are not memoised: a second write within
#: one timestamp tick (2 s on FAT, 1 s on some network file systems) could leave their stat unchanged.
_RACY_NS = 2_000_000_000


class CacheWarning(UserWarning):
    """A cache entry was unusable (corrupt, truncated, other format version) and was discarded."""


def _mmbench_version() -> str:
    try:
        from mmbench import __version__  # type: ignore[attr-defined]
    except Exception:
        return "0"
    return str(__version__)


def default_cache_root() -> Path:
    """``$MMBENCH_CACHE`` if set (and non-empty), else ``~/.cache/mmbench``."""
    env = os.environ.get("MMBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/mmbench").expanduser()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    raise TypeError(
        f"cache key options must be JSON-serializable; got {type(obj).__name__}: {obj!r}"
    )


class FeatureCache:
    """A directory of safetensors feature files addressed by :meth:`make_key`.

    ``last_hit`` / ``last_key`` describe the most recent :meth:`get_or_build`; ``hits`` and
    ``misses`` count them over the object's lifetime.
    """

    def __init__(self, root: str | os.PathLike | None = None, lock_timeout: float = -1):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.lock_timeout = lock_timeout  # seconds to wait for another builder; -1 = forever
        self.last_hit: bool | None = None
        self.last_key: str | None = None
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"FeatureCache(root={str(self.root)!r})"

    # -- keys and paths ------------------------------------------------------------------------

    @staticmethod
    def make_key(namespace: str, inputs_fingerprint: str, options: Mapping[str, Any] | None = None) -> str:
        """Stable hex SHA-256 of a canonical JSON of the arguments plus the format/mmbench versions.

        Canonical = sorted keys, no whitespace, ASCII, no NaN; tuples hash like lists, sets are
        sorted, ``Path`` values become strings.  Anything else non-JSON raises ``TypeError``.
        """
        if not isinstance(namespace, str) or not namespace:
            raise ValueError("namespace must be a non-empty string")
        if not isinstance(inputs_fingerprint, str):
            raise TypeError("inputs_fingerprint must be a string (see mmbench.core.io.fingerprint_files)")
        payload = {
            "cache_format": CACHE_FORMAT_VERSION,
            "fingerprint": inputs_fingerprint,
            "mmbench": _mmbench_version(),
            "namespace": namespace,
            "options": dict(options or {}),
        }
        try:
            canonical = json.dumps(
                payload,
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=True,
                allow_nan=False,
                default=_json_default,
            )
        except ValueError as exc:
            raise ValueError(f"cache key options must not contain NaN/Infinity: {exc}") from exc
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    @staticmethod
    def _check_key(key: str) -> str:
        if not isinstance(key, str) or len(key) < 3 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"invalid cache key {key!r}: expected a hex string from make_key()")
        return key

    def path_for(self, key: str) -> Path:
        """Where the entry for ``key`` lives (whether or not it exists)."""
        self._check_key(key)
        return self.root / key[:2] / f"{key}.safetensors"

    def lock_path_for(self, key: str) -> Path:
        self._check_key(key)
        return self.root / key[:2] / f"{key}.lock"

    # -- input fingerprints ----------------------------------------------------------------------

    def files_fingerprint(
        self, paths: str | os.PathLike | Iterable[str | os.PathLike], root: str | os.PathLike | None = None
    ) -> str:
        """:func:`mmbench.core.io.fingerprint_files` of ``paths`` (a content digest: keys made from it
        identify the exact bytes), memoised by the files' stat identity so that a warm load does
        not read and hash unchanged files again (2,500 FSDD wavs: 5-20 ms instead of ~100 ms).

        The memo maps the absolute paths, ``root`` and every file's (size, mtime_ns, ctime_ns,
        inode, device) to the digest. Trade-off: a content change that keeps all of these goes
        unseen. Writing a file sets its mtime and ctime to now, and ctime cannot be set back
        (restoring an mtime with utime sets ctime), so that takes a clock set back or a
        file-system-level edit; as in git's index, files modified within 2 s of being hashed are
        not memoised, since a second write inside one coarse timestamp tick would keep the stat.
        Touching, copying or moving files costs one re-hash, never a rebuild. Directories in
        ``paths`` are hashed every time (no memo).
        """
        from mmbench.core.io import fingerprint_files

        items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        started = time.time_ns()
        names = sorted({os.path.abspath(os.fspath(p)) for p in items})
        lines = [os.path.abspath(root) if root is not None else "", f"{len(names)}"]
        newest = 0
        try:
            for name in names:
                st = os.stat(name)
                if not stat.S_ISREG(st.st_mode):
                    return fingerprint_files(items, root)
                lines.append(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}")
                newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            return fingerprint_files(items, root)  # raises its DataError for a missing file
        memo_key = hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
        memo = self.root / _FINGERPRINT_DIR / memo_key[:2] / f"{memo_key}.json"
        try:
            rec = json.loads(memo.read_text(encoding="utf-8"))
            digest = rec["fingerprint"] if rec.get("version") == _FINGERPRINT_MEMO_VERSION else None
            if isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
                return digest
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass  # no memo yet, or an unreadable one: hash the contents and (re)write it
        digest = fingerprint_files(items, root)
        if newest < started - _RACY_NS:
            from mmbench.core.io import atomic_write_text

            try:
                atomic_write_text(memo, json.dumps({"version": _FINGERPRINT_MEMO_VERSION, "fingerprint": digest,
                                                    "files": len(names)}))
            except OSError:
                pass  # a read-only cache still works, only without the memo
        return digest

    # -- load / save ---------------------------------------------------------------------------

    def _discard(self, path: Path, why: str) -> None:
        warnings.warn(
            f"feature cache entry {path} is unusable ({why}); deleting it so it is rebuilt",
            CacheWarning,
            stacklevel=3,
        )
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover - e.g. read-only cache
            warnings.warn(f"could not delete {path}: {exc}", CacheWarning, stacklevel=3)

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        """The tensors stored under ``key`` (memory-mapped read), or ``None`` on a miss.

        A corrupt/truncated entry, or one whose metadata has another cache format version or key,
        triggers a :class:`CacheWarning`, is deleted, and returns ``None``.
        """
        from safetensors import safe_open

        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                fmt = meta.get(_META_FORMAT)
                if fmt != str(CACHE_FORMAT_VERSION):
                    bad = f"cache format version {fmt!r}, expected {str(CACHE_FORMAT_VERSION)!r}"
                elif meta.get(_META_KEY, key) != key:
                    bad = f"it records key {meta.get(_META_KEY)!r}"
                else:
                    bad = None
                    tensors = {name: f.get_tensor(name) for name in f.keys()}
        except FileNotFoundError:
            return None  # deleted concurrently
        except Exception as exc:  # SafetensorError: truncated / garbage header / bad offsets
            self._discard(path, f"corrupt or truncated: {exc}")
            return None
        if bad is not None:
            self._discard(path, bad)
            return None
        return tensors

    def load_metadata(self, key: str) -> dict[str, str] | None:
        """The metadata of the entry for ``key`` (user and ``mmbench.*`` keys), or ``None``."""
        from safetensors import safe_open

        path = self.path_for(key)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return dict(f.metadata() or {})
        except Exception:
            return None

    def save(self, key: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str] | None = None) -> Path:
        """Atomically write ``tensors`` under ``key``; ``meta`` (str -> str) is stored alongside.

        Keys starting with ``mmbench.`` are reserved for the cache's own bookkeeping.
        """
        return self._write(key, tensors, meta, namespace=None)

    def _write(
        self,
        key: str,
        tensors: Mapping[str, torch.Tensor],
        meta: Mapping[str, str] | None,
        namespace: str | None,
    ) -> Path:
        path = self.path_for(key)
        metadata: dict[str, str] = {}
        for k, v in (meta or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"cache metadata must map str to str; got {k!r}: {type(v).__name__}")
            if k.startswith(_RESERVED_PREFIX):
                raise ValueError(f"cache metadata key {k!r} is reserved (prefix {_RESERVED_PREFIX!r})")
            metadata[k] = v
        metadata.update(
            {
                _META_FORMAT: str(CACHE_FORMAT_VERSION),
                _META_KEY: key,
                _META_VERSION: _mmbench_version(),
                _META_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        if namespace is not None:
            metadata[_META_NAMESPACE] = namespace  # for humans inspecting the cache
        return atomic_save_safetensors(path, tensors, metadata)

    def invalidate(self, key: str) -> bool:
        """Delete the entry for ``key``; True if there was one."""
        try:
            self.path_for(key).unlink()
            return True
        except FileNotFoundError:
            return False

    # -- the main entry point ------------------------------------------------------------------

    def get_or_build(
        self,
        namespace: str,
        inputs_fingerprint: str,
        options: Mapping[str, Any] | None,
        build_fn: Callable[[], Mapping[str, torch.Tensor]],
        meta: Mapping[str, str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Load the entry for (namespace, fingerprint, options), building and saving it on a miss.

        ``build_fn()`` must return a ``dict[str, Tensor]``.  Concurrent callers (threads or
        processes) for the same key serialize on a file lock: one builds, the others load its
        result.  Sets ``self.last_hit`` and ``self.last_key``.
        """
        from filelock import FileLock

        key = self.make_key(namespace, inputs_fingerprint, options)
        self.last_key = key

        cached = self.load(key)
        if cached is not None:
            return self._hit(cached)

        lock_path = self.lock_path_for(key)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path), timeout=self.lock_timeout):
            cached = self.load(key)  # built by someone else while we waited?
            if cached is not None:
                return self._hit(cached)
            built = build_fn()
            if not isinstance(built, Mapping):
                raise TypeError(
                    f"build_fn for cache namespace {namespace!r} must return dict[str, Tensor], "
                    f"got {type(built).__name__}"
                )
            built = dict(built)
            self._write(key, built, meta, namespace=namespace)
        self.last_hit = False
        self.misses += 1
        return built

    def _hit(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.last_hit = True
        self.hits += 1
        return tensors


def data_lock(path: str | os.PathLike) -> Any:
    """A :class:`filelock.FileLock` serialising writers of `path` (a download, an extraction),
    kept under ``<cache root>/locks/`` and named by a hash of the absolute path, so no ``.lock``
    file is ever left beside the data (filelock leaves its lock files in place)."""
    from filelock import FileLock

    folder = default_cache_root() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    return FileLock(str(folder / f"{digest}.lock"))
