"""Tests for mmbench.core.io: atomic writes (incl. SIGKILL'd writers), safetensors, hashing, JSON, paths."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import struct
import time
from pathlib import Path

import pytest

from mmbench.core.errors import DataError
from mmbench.core.io import (
    atomic_save_safetensors,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    fingerprint_files,
    fingerprint_stat,
    load_safetensors,
    read_json,
    safe_join,
    sha256_file,
)

# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------


def test_atomic_write_bytes_creates_parents_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    assert atomic_write_bytes(target, b"hello") == target
    assert target.read_bytes() == b"hello"
    atomic_write_bytes(target, b"world!")
    assert target.read_bytes() == b"world!"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_atomic_write_respects_umask_and_keeps_existing_mode(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "x")
    if os.name == "posix":
        import mmbench.core.io as mio

        assert target.stat().st_mode & 0o777 == 0o666 & ~mio._UMASK  # not mkstemp's private 0600
    os.chmod(target, 0o640)
    atomic_write_text(target, "y")
    assert target.stat().st_mode & 0o777 == 0o640


def test_atomic_write_cleans_temp_on_error(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def boom(src, dst):
        raise OSError("simulated failure")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_temp_name_is_hidden_tmp(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_bytes(tmp_path / "data.bin", b"1")
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".tmp")


def test_atomic_write_json_roundtrip_order_and_newline(tmp_path):
    target = tmp_path / "m.json"
    obj = {"z": 1, "a": [1.5, "é"], "m": {"k": None}}
    atomic_write_json(target, obj)
    text = target.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert list(json.loads(text)) == ["z", "a", "m"]  # sort_keys=False
    assert "é" in text
    assert read_json(target) == obj


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_atomic_write_json_rejects_non_finite(tmp_path, bad):
    target = tmp_path / "metrics.json"
    with pytest.raises(DataError) as ei:
        atomic_write_json(target, {"metrics": {"acc": 0.5, "loss": bad}})
    msg = str(ei.value)
    assert "metrics.json" in msg and "$.metrics.loss" in msg and "NaN" in msg
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


# --- SIGKILL'd writer --------------------------------------------------------------------------

_PAYLOAD_SIZE = 4 << 20  # 4 MiB: big enough that a kill often lands mid-write


def _payload(i: int) -> bytes:
    header = struct.pack("<Q", i)
    body = hashlib.sha256(header).digest() * (_PAYLOAD_SIZE // 32)
    return header + body


def _writer_loop(target: str, started) -> None:  # runs in a spawned child
    i = 1
    while True:
        atomic_write_bytes(target, _payload(i))
        started.set()
        i += 1


def _check_complete(target: Path) -> int:
    data = target.read_bytes()
    assert len(data) == 8 + _PAYLOAD_SIZE, f"partial file: {len(data)} bytes"
    (i,) = struct.unpack("<Q", data[:8])
    assert data == _payload(i), f"torn content for version {i}"
    return i


def test_killed_writer_never_leaves_partial_file(tmp_path):
    ctx = mp.get_context("spawn")
    rng = random.Random(20240611)
    seen_versions = set()
    for iteration in range(4):
        target = tmp_path / f"run{iteration}" / "big.bin"
        if iteration % 2 == 0:  # half the runs start from an existing "old" version 0
            atomic_write_bytes(target, _payload(0))
        started = ctx.Event()
        proc = ctx.Process(target=_writer_loop, args=(str(target), started), daemon=True)
        proc.start()
        try:
            assert started.wait(20), "writer child did not start"
            time.sleep(rng.uniform(0.0, 0.15))
        finally:
            proc.kill()  # SIGKILL on POSIX
            proc.join(10)
        assert proc.exitcode is not None and proc.exitcode != 0
        if target.exists():
            seen_versions.add(_check_complete(target))
        else:
            assert iteration % 2 == 1
        # leftover hidden temp files are allowed, but never under the final name
        for p in target.parent.iterdir():
            assert p == target or (p.name.startswith(".big.bin.") and p.name.endswith(".tmp"))
        # and the next write still works
        atomic_write_bytes(target, _payload(999))
        assert _check_complete(target) == 999
    assert seen_versions  # at least one run observed a complete version


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------


def test_safetensors_roundtrip_with_metadata(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {"w": base, "wt": base.t(), "view": base[1], "i": torch.tensor([1, 2], dtype=torch.int64)}
    path = atomic_save_safetensors(tmp_path / "x" / "t.safetensors", tensors, {"model": "clip"})
    loaded, meta = load_safetensors(path)
    assert meta == {"model": "clip"}
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v)


def test_safetensors_metadata_must_be_str(tmp_path):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="metadata"):
        atomic_save_safetensors(tmp_path / "t.safetensors", {"a": torch.ones(1)}, {"n": 3})
    assert not (tmp_path / "t.safetensors").exists()


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-10],  # truncated data
        lambda b: b[:5],  # truncated header length
        lambda b: b"",  # empty
        lambda b: b"this is not a safetensors file at all",
    ],
)
def test_load_safetensors_corrupt_raises_dataerror(tmp_path, mangle):
    torch = pytest.importorskip("torch")
    good = atomic_save_safetensors(tmp_path / "good.safetensors", {"a": torch.arange(100.0)})
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(mangle(good.read_bytes()))
    with pytest.raises(DataError) as ei:
        load_safetensors(bad)
    assert "bad.safetensors" in str(ei.value)
    assert ei.value.path == str(bad)


def test_load_safetensors_missing(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_safetensors(tmp_path / "nope.safetensors")


# ---------------------------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------------------------


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(300_000)
    p = tmp_path / "d.bin"
    p.write_bytes(data)
    assert sha256_file(p, chunk=4096) == hashlib.sha256(data).hexdigest()
    with pytest.raises(DataError, match="not found"):
        sha256_file(tmp_path / "missing")


def _make_tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.txt").write_text("beta")


def test_fingerprint_files_stable_and_content_sensitive(tmp_path):
    d1, d2 = tmp_path / "one", tmp_path / "two"
    _make_tree(d1)
    _make_tree(d2)
    fp1 = fingerprint_files([d1])
    assert fp1 == fingerprint_files(d1)  # single path accepted
    assert fp1 == fingerprint_files([d2])  # location-independent
    # order of inputs does not matter
    files = [d1 / "sub" / "b.txt", d1 / "a.txt"]
    assert fingerprint_files(files) == fingerprint_files(list(reversed(files)))
    assert fingerprint_files(files) == fp1
    # same size, different content -> different fingerprint
    (d2 / "a.txt").write_text("ALPHA")
    assert fingerprint_files([d2]) != fp1
    # renaming changes it too
    (d1 / "a.txt").rename(d1 / "c.txt")
    assert fingerprint_files([d1]) != fp1
    with pytest.raises(DataError, match="not found"):
        fingerprint_files([tmp_path / "missing"])


def test_fingerprint_stat_tracks_mtime_and_size(tmp_path):
    _make_tree(tmp_path / "d")
    a = tmp_path / "d" / "a.txt"
    fp = fingerprint_stat([tmp_path / "d"])
    assert fp == fingerprint_stat([tmp_path / "d"])
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    fp2 = fingerprint_stat([tmp_path / "d"])
    assert fp2 != fp
    a.write_text("alpha-longer")
    assert fingerprint_stat([tmp_path / "d"]) not in (fp, fp2)


# ---------------------------------------------------------------------------------------------
# read_json
# ---------------------------------------------------------------------------------------------


def test_read_json_ok_and_bom(tmp_path):
    p = tmp_path / "ok.json"
    p.write_bytes(b'\xef\xbb\xbf{"a": [1, 2]}')
    assert read_json(p) == {"a": [1, 2]}


def test_read_json_malformed_reports_line_and_column(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{\n  "a": 1,\n  "b": ,\n}\n')
    with pytest.raises(DataError) as ei:
        read_json(p)
    msg = str(ei.value)
    assert "broken.json" in msg
    assert "invalid JSON at line 3 column 8" in msg


def test_read_json_missing_file(tmp_path):
    with pytest.raises(DataError) as ei:
        read_json(tmp_path / "absent.json")
    assert "absent.json" in str(ei.value) and "not found" in str(ei.value)


def test_read_json_directory(tmp_path):
    with pytest.raises(DataError, match="directory"):
        read_json(tmp_path)


def test_read_json_non_utf8(tmp_path):
    p = tmp_path / "latin1.json"
    p.write_bytes('{"name": "café"}'.encode("latin-1"))
    with pytest.raises(DataError) as ei:
        read_json(p)
    msg = str(ei.value)
    assert "latin1.json" in msg and "UTF-8" in msg and "0xe9" in msg and "offset 13" in msg


# ---------------------------------------------------------------------------------------------
# safe_join
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["images/cat.png", "a/./b.txt", "a/../b.txt", "x", "deep/er/file"])
def test_safe_join_accepts_paths_inside_root(tmp_path, rel):
    out = safe_join(tmp_path, rel)
    assert os.path.commonpath([tmp_path, out]) == str(tmp_path)
    assert ".." not in out.parts


@pytest.mark.parametrize(
    "rel",
    [
        "../../etc/passwd",
        "..",
        "../sibling",
        "a/../../b",
        "/etc/passwd",
        "//server/share",
        "C:\\Windows",
        "\\evil",
        "a\0b",
    ],
)
def test_safe_join_rejects_escapes(tmp_path, rel):
    with pytest.raises(DataError):
        safe_join(tmp_path, rel)


def test_safe_join_message_names_path(tmp_path):
    with pytest.raises(DataError) as ei:
        safe_join(tmp_path, "../../etc/passwd")
    assert "../../etc/passwd" in str(ei.value) and "escapes" in str(ei.value)
    with pytest.raises(DataError, match="absolute"):
        safe_join(tmp_path, Path("/etc/passwd"))
