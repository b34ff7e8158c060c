"""Tests for mmbench.core.cache.FeatureCache."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("filelock")

from mmbench.core import cache as cache_mod  # noqa: E402
from mmbench.core.cache import CACHE_FORMAT_VERSION, CacheWarning, FeatureCache, default_cache_root  # noqa: E402


class _Builder:
    def __init__(self, value: float = 1.0):
        self.calls = 0
        self.value = value

    def __call__(self):
        self.calls += 1
        return {
            "feats": torch.full((4, 8), self.value),
            "ids": torch.arange(4),
        }


def test_miss_then_hit(tmp_path):
    c = FeatureCache(tmp_path)
    build = _Builder()
    out1 = c.get_or_build("clip-vit-b32", "fp123", {"split": "val"}, build)
    assert c.last_hit is False and build.calls == 1
    out2 = c.get_or_build("clip-vit-b32", "fp123", {"split": "val"}, build)
    assert c.last_hit is True and build.calls == 1
    assert torch.equal(out1["feats"], out2["feats"]) and torch.equal(out2["ids"], torch.arange(4))
    assert (c.hits, c.misses) == (1, 1)
    # a fresh instance over the same directory hits too
    c2 = FeatureCache(tmp_path)
    c2.get_or_build("clip-vit-b32", "fp123", {"split": "val"}, build)
    assert c2.last_hit is True and build.calls == 1
    meta = c2.load_metadata(c2.last_key)
    assert meta["mmbench.namespace"] == "clip-vit-b32"
    assert meta["mmbench.cache_format"] == str(CACHE_FORMAT_VERSION)


def test_load_miss_returns_none(tmp_path):
    c = FeatureCache(tmp_path)
    assert c.load(FeatureCache.make_key("ns", "fp", {})) is None


def test_key_is_stable_and_sensitive():
    k = FeatureCache.make_key("ns", "fp", {"a": 1, "b": [1, 2], "c": {"x": 0.5}})
    assert k == FeatureCache.make_key("ns", "fp", {"c": {"x": 0.5}, "b": (1, 2), "a": 1})  # order-free
    assert len(k) == 64 and int(k, 16) >= 0
    assert k != FeatureCache.make_key("ns", "fp", {"a": 2, "b": [1, 2], "c": {"x": 0.5}})
    assert k != FeatureCache.make_key("ns2", "fp", {"a": 1, "b": [1, 2], "c": {"x": 0.5}})
    assert k != FeatureCache.make_key("ns", "fp2", {"a": 1, "b": [1, 2], "c": {"x": 0.5}})
    assert FeatureCache.make_key("ns", "fp", None) == FeatureCache.make_key("ns", "fp", {})
    with pytest.raises(TypeError, match="JSON"):
        FeatureCache.make_key("ns", "fp", {"f": object()})
    with pytest.raises(ValueError, match="NaN"):
        FeatureCache.make_key("ns", "fp", {"f": float("nan")})


def test_key_depends_on_format_and_package_version(monkeypatch):
    k = FeatureCache.make_key("ns", "fp", {})
    monkeypatch.setattr(cache_mod, "CACHE_FORMAT_VERSION", CACHE_FORMAT_VERSION + 1)
    assert FeatureCache.make_key("ns", "fp", {}) != k
    monkeypatch.undo()
    monkeypatch.setattr(cache_mod, "_mmbench_version", lambda: "999.0")
    assert FeatureCache.make_key("ns", "fp", {}) != k


def test_different_options_build_separately(tmp_path):
    c = FeatureCache(tmp_path)
    b1, b2 = _Builder(1.0), _Builder(2.0)
    o1 = c.get_or_build("ns", "fp", {"res": 224}, b1)
    k1 = c.last_key
    o2 = c.get_or_build("ns", "fp", {"res": 336}, b2)
    assert c.last_key != k1 and c.last_hit is False
    assert (b1.calls, b2.calls) == (1, 1)
    assert o1["feats"][0, 0] == 1.0 and o2["feats"][0, 0] == 2.0
    assert c.get_or_build("ns", "fp", {"res": 224}, b2)["feats"][0, 0] == 1.0


@pytest.mark.parametrize("how", ["truncate", "garbage", "empty"])
def test_corrupt_entry_is_rebuilt_with_warning(tmp_path, how):
    c = FeatureCache(tmp_path)
    build = _Builder()
    c.get_or_build("ns", "fp", {}, build)
    path = c.path_for(c.last_key)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) - 17], "garbage": b"\x00" * 64, "empty": b""}[how])
    with pytest.warns(CacheWarning, match="unusable"):
        out = c.get_or_build("ns", "fp", {}, build)
    assert c.last_hit is False and build.calls == 2
    assert torch.equal(out["feats"], torch.ones(4, 8))
    # the rebuilt entry is valid again
    c.get_or_build("ns", "fp", {}, build)
    assert c.last_hit is True and build.calls == 2


def test_load_of_corrupt_entry_deletes_it(tmp_path):
    c = FeatureCache(tmp_path)
    key = FeatureCache.make_key("ns", "fp", {})
    c.save(key, {"x": torch.ones(100)})
    path = c.path_for(key)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.warns(CacheWarning):
        assert c.load(key) is None
    assert not path.exists()


def test_version_mismatch_is_rebuilt(tmp_path, monkeypatch):
    c = FeatureCache(tmp_path)
    build = _Builder()
    key = FeatureCache.make_key("ns", "fp", {"o": 1})
    # an entry written under the right key by an older cache format
    monkeypatch.setattr(cache_mod, "CACHE_FORMAT_VERSION", CACHE_FORMAT_VERSION - 1)
    c.save(key, {"feats": torch.zeros(2)})
    monkeypatch.undo()
    assert c.load_metadata(key)["mmbench.cache_format"] == str(CACHE_FORMAT_VERSION - 1)
    with pytest.warns(CacheWarning, match="format version"):
        out = c.get_or_build("ns", "fp", {"o": 1}, build)
    assert c.last_hit is False and build.calls == 1
    assert torch.equal(out["feats"], torch.ones(4, 8))
    assert c.load_metadata(key)["mmbench.cache_format"] == str(CACHE_FORMAT_VERSION)


def test_save_metadata_rules(tmp_path):
    c = FeatureCache(tmp_path)
    key = FeatureCache.make_key("ns", "fp", {})
    c.save(key, {"x": torch.ones(1)}, {"encoder": "clip"})
    assert c.load_metadata(key)["encoder"] == "clip"
    with pytest.raises(TypeError):
        c.save(key, {"x": torch.ones(1)}, {"n": 1})
    with pytest.raises(ValueError, match="reserved"):
        c.save(key, {"x": torch.ones(1)}, {"mmbench.cache_format": "0"})
    with pytest.raises(ValueError, match="invalid cache key"):
        c.load("../../etc/passwd")
    assert c.invalidate(key) is True and c.invalidate(key) is False


def test_build_fn_must_return_dict(tmp_path):
    c = FeatureCache(tmp_path)
    with pytest.raises(TypeError, match="dict"):
        c.get_or_build("ns", "fp", {}, lambda: torch.ones(3))
    assert not any(p.suffix == ".safetensors" for p in Path(tmp_path).rglob("*"))


def test_build_failure_leaves_no_entry(tmp_path):
    c = FeatureCache(tmp_path)

    def boom():
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError, match="encoder crashed"):
        c.get_or_build("ns", "fp", {}, boom)
    assert c.load(FeatureCache.make_key("ns", "fp", {})) is None
    build = _Builder()
    c.get_or_build("ns", "fp", {}, build)
    assert build.calls == 1 and c.last_hit is False


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "envcache"))
    assert FeatureCache().root == tmp_path / "envcache"
    assert default_cache_root() == tmp_path / "envcache"
    assert FeatureCache(tmp_path / "explicit").root == tmp_path / "explicit"
    monkeypatch.delenv("MMBENCH_CACHE")
    assert FeatureCache().root == Path.home() / ".cache" / "mmbench"


# --- files_fingerprint: content digest memoised by stat ------------------------------------------


def _files(root: Path, n: int = 5) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = root / f"f{i}.bin"
        p.write_bytes(bytes([i]) * (100 + i))
        out.append(p)
    return out


@pytest.fixture()
def no_racy_window(monkeypatch):
    """Test files are seconds old at most: memoise them anyway (the 2 s rule has its own test)."""
    monkeypatch.setattr(cache_mod, "_RACY_NS", 0)


def _memos(c: FeatureCache) -> list[Path]:
    return sorted((c.root / "fingerprints").rglob("*.json"))


def _no_content_reads(monkeypatch):
    import mmbench.core.io

    def boom(*a, **k):
        raise AssertionError("contents were read")

    monkeypatch.setattr(mmbench.core.io, "fingerprint_files", boom)


def test_files_fingerprint_is_the_content_digest_and_memoised(tmp_path, monkeypatch, no_racy_window):
    from mmbench.core.io import fingerprint_files

    files = _files(tmp_path / "data")
    c = FeatureCache(tmp_path / "cache")
    want = fingerprint_files(files, root=tmp_path / "data")
    assert c.files_fingerprint(files, root=tmp_path / "data") == want
    assert len(_memos(c)) == 1
    # warm: the same files (any order, duplicates, str or Path) come from the memo, unread
    _no_content_reads(monkeypatch)
    assert c.files_fingerprint([str(f) for f in reversed(files)] + [files[0]], root=tmp_path / "data") == want
    assert FeatureCache(tmp_path / "cache").files_fingerprint(files, root=tmp_path / "data") == want
    # root changes the names inside the digest, so it is part of the memo key
    monkeypatch.undo()
    monkeypatch.setattr(cache_mod, "_RACY_NS", 0)
    assert c.files_fingerprint(files, root=tmp_path) == fingerprint_files(files, root=tmp_path) != want


@pytest.mark.parametrize("change", ["same_size_content", "size", "mtime_restored", "touch"])
def test_files_fingerprint_follows_file_changes(tmp_path, no_racy_window, change):
    from mmbench.core.io import fingerprint_files

    files = _files(tmp_path / "data")
    c = FeatureCache(tmp_path / "cache")
    before = c.files_fingerprint(files, root=tmp_path / "data")
    time.sleep(0.05)  # a later timestamp tick than the files' creation
    f = files[2]
    st = f.stat()
    if change == "same_size_content":
        f.write_bytes(b"x" * st.st_size)
    elif change == "size":
        f.write_bytes(f.read_bytes() + b"!")
    elif change == "mtime_restored":  # edited in place, then its old mtime put back: ctime still moves
        f.write_bytes(b"y" * st.st_size)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    else:  # same bytes, new mtime: re-hashed, same digest (a cache key built on it still hits)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    after = c.files_fingerprint(files, root=tmp_path / "data")
    assert after == fingerprint_files(files, root=tmp_path / "data")
    assert (after == before) == (change == "touch")
    assert len(_memos(c)) == 2


def test_files_fingerprint_racy_files_are_not_memoised(tmp_path):
    from mmbench.core.io import fingerprint_files

    files = _files(tmp_path / "data")  # written just now: a second write could keep their stat
    c = FeatureCache(tmp_path / "cache")
    assert c.files_fingerprint(files) == fingerprint_files(files)
    assert _memos(c) == []
    old = time.time_ns() - 10 * 10**9
    for f in files:
        os.utime(f, ns=(old, old))
    assert c.files_fingerprint(files) == fingerprint_files(files)
    assert _memos(c) == []  # utime just set their ctime to now


def test_files_fingerprint_fallbacks(tmp_path, no_racy_window):
    from mmbench.core.errors import DataError
    from mmbench.core.io import fingerprint_files

    files = _files(tmp_path / "data")
    c = FeatureCache(tmp_path / "cache")
    # a directory is walked by fingerprint_files every time (no memo)
    assert c.files_fingerprint([tmp_path / "data"]) == fingerprint_files([tmp_path / "data"])
    assert _memos(c) == []
    with pytest.raises(DataError, match="file not found"):
        c.files_fingerprint(files + [tmp_path / "data" / "missing.bin"])
    # a corrupt memo is ignored and rewritten
    want = c.files_fingerprint(files)
    (memo,) = _memos(c)
    memo.write_text("{not json")
    assert c.files_fingerprint(files) == want
    memo.write_text('{"version": 1, "fingerprint": "not-a-digest"}')
    assert c.files_fingerprint(files) == want
    assert '"fingerprint": "' + want in memo.read_text()
    # an unwritable memo folder only costs the memo
    c2 = FeatureCache(tmp_path / "cache2")
    (tmp_path / "cache2").mkdir()
    (tmp_path / "cache2" / "fingerprints").write_text("a file where the folder would go")
    assert c2.files_fingerprint(files) == want


# --- two processes, one build ------------------------------------------------------------------


def _slow_build(counter: str):
    with open(counter, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(0.5)  # long enough that the other process reaches the lock meanwhile
    return {"feats": torch.arange(10.0)}


def _concurrent_worker(root: str, counter: str, barrier, results) -> None:  # spawned child
    import functools

    c = FeatureCache(root)
    barrier.wait(30)
    out = c.get_or_build("ns", "fp-shared", {"k": 1}, functools.partial(_slow_build, counter))
    results.put((c.last_hit, out["feats"].tolist()))


def test_two_processes_build_once(tmp_path):
    ctx = mp.get_context("spawn")
    counter = tmp_path / "builds.txt"
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_worker, args=(str(tmp_path / "cache"), str(counter), barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(counter.read_text().splitlines()) == 1  # built exactly once
    assert sorted(hit for hit, _ in got) == [False, True]
    assert all(feats == list(map(float, range(10))) for _, feats in got)
