"""`mmbench data info` counts from annotation files and the file system, never by encoding;
takes `--set key=value` dataset options; warnings reach the user as one plain line (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests._cli import run_main
from tests._datapaths import REPO, real_data_root


def _no_encoding(monkeypatch):
    from mmbench.data.datasets import coco, text

    def refuse(*a, **k):
        raise AssertionError("data info encoded something")

    monkeypatch.setattr(text, "text_features", refuse)
    for name in ("image_features", "minilm_embeddings"):
        if hasattr(coco, name):
            monkeypatch.setattr(coco, name, refuse)


def test_coco_retrieval_counts_without_encoding(monkeypatch, capsys):
    root = real_data_root()
    _no_encoding(monkeypatch)
    on_disk = len(list((root / "coco" / "val2017").glob("*.jpg")))
    # The dataset itself: the whole val2017 caption file is its test split.
    rc, out, err = run_main(["data", "info", "coco-captions", "--data-dir", root, "--set", "mode=retrieval", "--json"], monkeypatch, capsys)
    assert rc == 0, err
    test = json.loads(out)["splits"]["test"]
    assert test == {"images": 5000, "images_on_disk": on_disk, "captions": 25014}
    rc, out, err = run_main(["data", "info", "coco-captions", "--data-dir", root, "--set", "mode=retrieval"], monkeypatch, capsys)
    assert f"images 5,000 in the annotations, {on_disk:,} on disk; captions 25,014" in out
    # The task tests on the whole file (no train2017 here, so it has no train / val), and prints
    # the test set's fingerprint: the one docs/datasets.md lists for val2017
    rc, out, err = run_main(["data", "info", "coco-retrieval", "--data-dir", root, "--json"], monkeypatch, capsys)
    assert rc == 0, err
    info = json.loads(out)
    assert set(info["splits"]) == {"test"} and info["splits"]["test"] == test
    assert info["test_set"] == {"task": "coco-retrieval", "protocol": "coco-val2017-5k", "split": "test",
                                "items": 25014, "fingerprint": "ts1-b5a921ac9ec3cf6f", "masks_protocol": 2,
                                "conditions": {"clean": "dataset"}}
    rc, out, err = run_main(["data", "info", "coco-retrieval", "--data-dir", root], monkeypatch, capsys)
    assert "protocol: coco-val2017-5k" in out and "fingerprint ts1-b5a921ac9ec3cf6f" in out
    # The explicit carve task cuts val2017 into train / val / test: the splits add up to the file.
    rc, out, err = run_main(["data", "info", "coco-retrieval-val2017-carve", "--data-dir", root, "--json"],
                            monkeypatch, capsys)
    assert rc == 0, err
    carve = json.loads(out)
    splits = carve["splits"]
    assert set(splits) == {"train", "val", "test"} and splits["test"]["images"] == 1000
    assert carve["test_set"]["protocol"] == "coco-val2017-carve-60-20-20-seed0"
    assert carve["test_set"]["fingerprint"] != info["test_set"]["fingerprint"]
    totals = {k: sum(s[k] for s in splits.values()) for k in ("images", "images_on_disk", "captions")}
    assert totals == {"images": 5000, "images_on_disk": on_disk, "captions": 25014}


def test_mosi_counts_equal_the_loaded_split(monkeypatch, capsys):
    """The counts from the source files are `Split.summary()` of the loaded (encoded) split."""
    from mmbench.data.datasets.base import load_dataset

    root = real_data_root()
    ds = load_dataset("mosi", root)
    expected = ds.load_split("test").summary()  # encodes (feature cache)
    _no_encoding(monkeypatch)
    got = load_dataset("mosi", root).split_summary("test")
    assert got["samples"] == expected["samples"] == 686 and got["present"] == expected["present"]
    assert got["target"] == pytest.approx(expected["target"], rel=1e-6)
    rc, out, err = run_main(["data", "info", "mosi", "--data-dir", root, "--json", "--set", "max_samples=10"],
                            monkeypatch, capsys)
    assert rc == 0, err
    splits = json.loads(out)["splits"]
    assert {s: v["samples"] for s, v in splits.items()} == {"train": 10, "val": 10, "test": 10}


def test_bad_set_option_is_one_line(monkeypatch, capsys):
    rc, out, err = run_main(["data", "info", "synthetic-synergy", "--set", "no_such_option=1"], monkeypatch, capsys)
    assert rc == 1 and err.startswith("error: ") and "no_such_option" in err and err.count("\n") == 1


def test_a_warning_is_one_plain_line(tmp_path: Path, monkeypatch, capsys):
    """An image without captions makes the COCO loader warn: the user sees one line, no source."""
    doc = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 8, "width": 8},
                      {"id": 2, "file_name": "000000000002.jpg", "height": 8, "width": 8}],
           "annotations": [{"id": 10, "image_id": 1, "caption": "a cat"}, {"id": 11, "image_id": 1, "caption": "a dog"}]}
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "val2017").mkdir()
    (tmp_path / "coco" / "annotations" / "captions_val2017.json").write_text(json.dumps(doc))
    (tmp_path / "coco" / "val2017" / "000000000001.jpg").write_bytes(b"\xff\xd8\xff")
    # A separate process, as a user runs it: in-process, pytest records the warning itself.
    proc = subprocess.run([sys.executable, "-m", "mmbench.cli", "data", "info", "coco-captions", "--data-dir", str(tmp_path),
                           "--set", "mode=retrieval"], capture_output=True, text=True, cwd=REPO, timeout=300)
    rc, out, err = proc.returncode, proc.stdout, proc.stderr
    assert rc == 0, err
    assert "images 1 in the annotations, 1 on disk; captions 2" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: coco: 1 image(s) of split 'test' have no caption"), err
    assert ".py:" not in err and "warnings.warn" not in err


def test_mosi_says_vision_is_absent_and_which_conditions_are_one(monkeypatch, capsys):
    """A modality no test item has yields no condition (issue 32): `data info` names it, the
    conditions equal on the test set and each condition's level."""
    root = real_data_root()
    rc, out, err = run_main(["data", "info", "mosi", "--data-dir", root, "--json"], monkeypatch, capsys)
    assert rc == 0, err
    ts = json.loads(out)["test_set"]
    assert ts["absent_modalities"] == ["vision"] and ts["nothing_present"] == 0
    assert ts["condition_aliases"]["drop:vision"] == "clean" and ts["condition_aliases"]["pattern:audio"] == "drop:text"
    assert ts["conditions"]["rate:0.5"] == "instance" and ts["conditions"]["drop:text"] == "dataset"
    assert "drop:vision" not in ts["conditions"]
    rc, out, err = run_main(["data", "info", "mosi", "--data-dir", root], monkeypatch, capsys)
    assert "modality vision: absent from every test item" in out and "drop:vision = clean" in out
