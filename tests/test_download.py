"""Tests for mmbench.core.download against a real local HTTP server (no internet needed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from _httpserver import serve

from mmbench.core.download import download, download_all
from mmbench.core.errors import DataError, SpecError

PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(300_000))
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
OTHER = os.urandom(5_000)


@pytest.fixture
def server():
    with serve({"/data.bin": PAYLOAD, "/other.bin": OTHER}) as (base, state):
        yield base, state


def _dl(url, dest, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("timeout", 5)
    return download(url, dest, **kw)


def _visible(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())  # no lock file beside the data


def test_download_with_checksum(server, tmp_path):
    base, state = server
    dest = tmp_path / "sub" / "data.bin"
    out = _dl(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA, chunk_size=4096)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert _visible(dest.parent) == ["data.bin"]
    assert state.requests == [("/data.bin", None)]


def test_download_with_progress_bar(server, tmp_path):
    base, _ = server
    dest = tmp_path / "data.bin"
    _dl(f"{base}/data.bin", dest, sha256="SHA256:" + PAYLOAD_SHA.upper(), progress=True)
    assert dest.read_bytes() == PAYLOAD


def test_wrong_checksum_deletes_everything(server, tmp_path):
    base, _ = server
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    with pytest.raises(DataError) as ei:
        _dl(f"{base}/data.bin", dest, sha256=wrong)
    msg = str(ei.value)
    assert f"{base}/data.bin" in msg and wrong in msg and PAYLOAD_SHA in msg
    assert not dest.exists()
    assert not dest.with_name("data.bin.part").exists()
    assert _visible(tmp_path) == []


def test_interrupted_download_resumes_with_range(server, tmp_path):
    base, state = server
    state.drop_after["/data.bin"] = 100_000
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    with pytest.raises(DataError) as ei:
        _dl(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA)
    assert "interrupted" in str(ei.value) and f"{base}/data.bin" in str(ei.value)
    assert not dest.exists()  # never half a file under the final name
    assert part.exists() and 0 < part.stat().st_size < len(PAYLOAD)
    assert PAYLOAD.startswith(part.read_bytes())
    have = part.stat().st_size

    _dl(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()
    assert state.requests[-1] == ("/data.bin", f"bytes={have}-")


def test_interrupted_without_checksum_still_detected(server, tmp_path):
    base, state = server
    state.drop_after["/data.bin"] = 1234
    dest = tmp_path / "data.bin"
    with pytest.raises(DataError, match="interrupted"):
        _dl(f"{base}/data.bin", dest)  # Content-Length tells us it was cut short
    assert not dest.exists()
    _dl(f"{base}/data.bin", dest)
    assert dest.read_bytes() == PAYLOAD
    assert state.requests[-1][1] == "bytes=1234-"


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    base, state = server
    state.support_range = False
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    part.write_bytes(PAYLOAD[:50_000])  # left over from an earlier attempt
    _dl(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD  # not 50k of duplicated prefix
    assert not part.exists()
    assert state.requests == [("/data.bin", "bytes=50000-")]  # asked, got 200, restarted


def test_complete_part_gets_416_and_is_finalised(server, tmp_path):
    base, state = server
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    _dl(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert state.requests == [("/data.bin", f"bytes={len(PAYLOAD)}-")]


def test_oversized_stale_part_restarts(server, tmp_path):
    base, state = server
    dest = tmp_path / "other.bin"
    (tmp_path / "other.bin.part").write_bytes(b"x" * (len(OTHER) + 10))
    _dl(f"{base}/other.bin", dest)
    assert dest.read_bytes() == OTHER
    assert [r[1] for r in state.requests] == [f"bytes={len(OTHER) + 10}-", None]


def test_resume_false_discards_part(server, tmp_path):
    base, state = server
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"garbage")
    _dl(f"{base}/data.bin", dest, resume=False, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert state.requests == [("/data.bin", None)]


def test_404_names_url(server, tmp_path):
    base, _ = server
    dest = tmp_path / "missing.bin"
    with pytest.raises(DataError) as ei:
        _dl(f"{base}/missing.bin", dest)
    assert "404" in str(ei.value) and f"{base}/missing.bin" in str(ei.value)
    assert _visible(tmp_path) == []


def test_unreachable_server(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    with pytest.raises(DataError, match=f"127.0.0.1:{port}"):
        _dl(f"http://127.0.0.1:{port}/x", tmp_path / "x", timeout=2)


def test_existing_valid_file_makes_no_request(server, tmp_path):
    base, state = server
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    assert _dl(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA) == dest
    assert _dl(f"{base}/data.bin", dest) == dest  # no checksum: existing file is trusted
    assert state.requests == []


def test_existing_invalid_file_is_replaced(server, tmp_path):
    base, state = server
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    _dl(f"{base}/data.bin", dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert len(state.requests) == 1


def test_invalid_arguments(tmp_path):
    with pytest.raises(SpecError, match="sha256"):
        _dl("http://127.0.0.1:1/x", tmp_path / "x", sha256="abc")
    with pytest.raises(SpecError, match="scheme"):
        _dl("ftp://example.com/x", tmp_path / "x")


def test_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(OTHER)
    dest = tmp_path / "out" / "copy.bin"
    _dl(src.as_uri(), dest, sha256=hashlib.sha256(OTHER).hexdigest())
    assert dest.read_bytes() == OTHER


def test_download_all(server, tmp_path):
    base, state = server
    entries = [
        {"url": f"{base}/data.bin", "path": "a/data.bin", "sha256": PAYLOAD_SHA},
        {"url": f"{base}/other.bin", "path": "b/other.bin"},
    ]
    out = download_all(entries, tmp_path, progress=False)
    assert out == [tmp_path / "a" / "data.bin", tmp_path / "b" / "other.bin"]
    assert out[0].read_bytes() == PAYLOAD and out[1].read_bytes() == OTHER
    # second run: everything present -> no new requests
    n = len(state.requests)
    download_all(entries, tmp_path, progress=False)
    assert len(state.requests) == n


def test_download_all_validates_before_downloading(server, tmp_path):
    base, state = server
    with pytest.raises(DataError, match="escapes"):
        download_all(
            [{"url": f"{base}/data.bin", "path": "ok.bin"}, {"url": f"{base}/other.bin", "path": "../evil.bin"}],
            tmp_path,
            progress=False,
        )
    with pytest.raises(SpecError, match="'url'"):
        download_all([{"path": "x.bin"}], tmp_path, progress=False)
    assert state.requests == []
