"""Hateful Memes, MM-IMDb and UPMC Food-101 as the field runs them: generated miniatures in each
published layout (Hateful Memes phase 1, phase 2, the papers' prepared layout, the release zip's
data/ folder; MM-IMDb's two layouts; Food-101 with and without the papers' split.json and
class_idx.json), asserting which ids form each split, the protocol names, the test-set
fingerprints, and the answers to defective inputs. Labels only: nothing here is encoded."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from _hfdata import FOOD_CLASSES, make_food101, make_mmimdb, write_image, write_jsonl
from mmbench.core.errors import DataError, SpecError
from mmbench.data.datasets.food101 import CLASSES, Food101Dataset, Food101Warning
from mmbench.data.datasets.hateful_memes import HatefulMemesDataset
from mmbench.data.datasets.mmimdb import GENRES, MMIMDbDataset, MMIMDbWarning
from _cli import run_main

FAST = {"image_encoder": "pixels", "image_size": 16, "text_encoder": "tokens"}


# ----------------------------------------------------------------------------- Hateful Memes


def _memes(base: Path, name: str, ids: list[int], labelled: bool = True, images: bool = True) -> list[str]:
    rows = []
    for k, meme in enumerate(ids):
        row = {"id": meme, "img": f"img/{meme:05d}.png", "text": f"meme {meme} {'bad' if k % 2 else 'fine'}"}
        if labelled:
            row["label"] = k % 2
        rows.append(row)
        if images:
            write_image(base / "img" / f"{meme:05d}.png", meme)
    write_jsonl(base / name, rows)
    return [str(i) for i in ids]


def _phase2(base: Path) -> dict[str, list[str]]:
    """The phase-2 release: train, dev_seen, test_seen (labelled), dev_unseen, test_unseen."""
    return {"train": _memes(base, "train.jsonl", list(range(100, 112))),
            "dev_seen": _memes(base, "dev_seen.jsonl", list(range(200, 206))),
            "test_seen": _memes(base, "test_seen.jsonl", list(range(300, 308))),
            "dev_unseen": _memes(base, "dev_unseen.jsonl", list(range(400, 405))),
            "test_unseen": _memes(base, "test_unseen.jsonl", list(range(500, 507)))}


def _ids(ds, split: str) -> list[str]:
    return ds.load_labels(split)[0]


def test_hateful_memes_phase2_seen_and_unseen(tmp_path):
    files = _phase2(tmp_path / "hateful_memes")
    ds = HatefulMemesDataset(tmp_path, **FAST)
    assert ds.protocol() == "hateful-memes-phase2-seen"
    assert [_ids(ds, s) for s in ("train", "val", "test")] == [files["train"], files["dev_seen"], files["test_seen"]]
    unseen = HatefulMemesDataset(tmp_path, protocol="phase2-unseen", **FAST)
    assert unseen.protocol() == "hateful-memes-phase2-unseen"
    assert [_ids(unseen, s) for s in ("val", "test")] == [files["dev_unseen"], files["test_unseen"]]
    # ids keep their leading zeros? the release's ids are integers; the image names are zero-padded
    assert ds.load_labels("test")[1].tolist() == [k % 2 for k in range(8)]
    located = ds.locate()
    assert located["test"].endswith("test_seen.jsonl") and "missing" not in " ".join(located.values())
    with pytest.raises(SpecError, match="protocol 'phase3'"):
        HatefulMemesDataset(tmp_path, protocol="phase3")


def test_hateful_memes_papers_layout_and_release_zip_data_folder(tmp_path):
    base = tmp_path / "hateful_memes" / "data"  # where the released zip unpacks
    train = _memes(base, "train.jsonl", list(range(10, 20)))
    dev = _memes(base, "dev.jsonl", list(range(20, 24)))
    test = _memes(base, "test.jsonl", list(range(30, 35)))  # labelled: the papers' renamed test_seen
    ds = HatefulMemesDataset(tmp_path, **FAST)
    assert ds.protocol() == "hateful-memes-papers" and ds.base == base
    assert [_ids(ds, s) for s in ("train", "val", "test")] == [train, dev, test]
    summary = ds.split_summary("test")
    assert summary == {"samples": 5, "present": {"image": 5, "text": 5}, "classes": {"0": 3, "1": 2}}
    # img/ unpacked from img.tar.gz one level up (beside data/) is found too
    (base / "img").rename(tmp_path / "hateful_memes" / "img")
    assert ds.split_summary("test")["present"]["image"] == 5


def test_hateful_memes_phase1_data_info_names_the_unlabelled_file(tmp_path, monkeypatch, capsys):
    base = tmp_path / "hateful_memes"
    train = _memes(base, "train.jsonl", list(range(1000, 1040)))
    dev = _memes(base, "dev.jsonl", list(range(2000, 2006)))
    _memes(base, "test.jsonl", list(range(3000, 3004)), labelled=False)
    ds = HatefulMemesDataset(tmp_path, **FAST)
    assert ds.protocol() == "hateful-memes-phase1" and _ids(ds, "test") == dev
    val, rest = _ids(ds, "val"), _ids(ds, "train")
    assert sorted(val + rest) == sorted(train) and not set(val) & set(rest) and 0 < len(val) < 12
    # the carve is a hash of (split_seed, id): an independent re-computation
    from mmbench.data.masks import uniform_hash

    assert val == [i for i, u in zip(train, uniform_hash(0, "hateful-memes", "validation", train)) if u < 0.1]
    assert _ids(HatefulMemesDataset(tmp_path, split_seed=1, **FAST), "val") != val
    rc, out, err = run_main(["data", "info", "hateful-memes", "--data-dir", tmp_path], monkeypatch, capsys)
    assert rc == 0, err
    assert "protocol: hateful-memes-phase1" in out and "without labels" in out and "dev.jsonl" in out
    assert "dev_seen" not in out and "(missing)" not in out
    assert "test set of task hateful-memes: split 'test', 6 items, fingerprint ts1-" in out


def test_hateful_memes_fingerprints_differ_across_protocols_and_are_stable(tmp_path):
    from mmbench.data.tasks import get_task
    from mmbench.data.testset import task_test_set

    _phase2(tmp_path / "hateful_memes")
    seen = task_test_set(get_task("hateful-memes"), tmp_path)
    again = task_test_set(get_task("hateful-memes"), tmp_path)
    unseen = task_test_set(get_task("hateful-memes-unseen"), tmp_path)
    assert seen.fingerprint == again.fingerprint and seen.fingerprint.startswith("ts1-")
    assert unseen.fingerprint != seen.fingerprint and unseen.protocol == "hateful-memes-phase2-unseen"


def test_missing_images_folder_is_refused_unless_text_only(tmp_path):
    base = tmp_path / "hateful_memes"
    _memes(base, "train.jsonl", list(range(10)), images=False)
    _memes(base, "dev.jsonl", list(range(10, 14)), images=False)
    _memes(base, "test.jsonl", list(range(20, 24)), images=False)
    with pytest.raises(DataError, match=r"hateful_memes/img: none of the 4 images of split 'test' is on disk: the "
                                        r"images folder is missing .*text_only: true"):
        HatefulMemesDataset(tmp_path, **FAST).load_split("test")
    assert not (tmp_path / "cache").exists()
    (base / "img.tar.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"img.tar.gz is there: unpack it"):
        HatefulMemesDataset(tmp_path, **FAST).load_split("test")
    split = HatefulMemesDataset(tmp_path, text_only=True, cache_dir=str(tmp_path / "cache"), **FAST).load_split("test")
    assert not split.present["image"].any() and split.present["text"].all()
    # scoring needs the labels only: they load without images
    assert HatefulMemesDataset(tmp_path, **FAST).load_labels("test")[0] == [str(i) for i in range(20, 24)]


# ----------------------------------------------------------------------------- MM-IMDb


@pytest.mark.parametrize("layout", ["labels", "dataset"])
def test_mmimdb_layouts_and_plot_option(tmp_path, layout):
    split_ids = make_mmimdb(tmp_path, layout=layout)
    folder = tmp_path / "mmimdb" / ("labels" if layout == "labels" else "dataset")
    movie = split_ids["train"][0]
    meta = json.loads((folder / f"{movie}.json").read_text())
    meta["plot"] = ["short one.", "the longest summary of the three", "middle summary"]
    (folder / f"{movie}.json").write_text(json.dumps(meta))
    texts = {}
    for plot in ("first", "longest", "all"):
        ds = MMIMDbDataset(tmp_path, plot=plot, **FAST)
        assert ds.protocol() == f"mmimdb-plot-{plot}"
        assert [_ids(ds, s) for s in ("train", "val", "test")] == [split_ids[k] for k in ("train", "dev", "test")]
        texts[plot] = ds.rows("train").texts[0]
    assert texts == {"first": "short one.", "longest": "the longest summary of the three",
                     "all": "short one. the longest summary of the three middle summary"}
    assert MMIMDbDataset(tmp_path).protocol() == "mmimdb-plot-first"  # the documented default (as MMP)
    with pytest.raises(SpecError, match="plot 'random'"):
        MMIMDbDataset(tmp_path, plot="random")


def test_mmimdb_bad_genres_and_plots(tmp_path):
    split_ids = make_mmimdb(tmp_path)
    folder = tmp_path / "mmimdb" / "labels"
    movie = split_ids["test"][0]
    good = json.loads((folder / f"{movie}.json").read_text())
    (folder / f"{movie}.json").write_text(json.dumps(good | {"genres": ["drama", "comedy"]}))
    with pytest.raises(DataError, match=rf"{movie}.json: genre 'drama' is not one of the 23 .*'Drama'"):
        MMIMDbDataset(tmp_path).load_labels("test")
    (folder / f"{movie}.json").write_text(json.dumps(good | {"genres": ["Talk-Show"]}))
    with pytest.warns(MMIMDbWarning, match=rf"mmimdb: 1 of 4 movies of split 'test' have none of the 23 genres .*{movie}"):
        _, targets = MMIMDbDataset(tmp_path).load_labels("test")
    assert not targets[0].any() and targets[1:].any(axis=1).all()
    for plot, why in ((42, "got int"), ([1, "x"], "got list with a non-string item"), ({"a": 1}, "got dict")):
        (folder / f"{movie}.json").write_text(json.dumps(good | {"plot": plot}))
        with pytest.raises(DataError, match=rf"{movie}.json: 'plot' must be a string or a list of strings, {why}"):
            MMIMDbDataset(tmp_path).load_labels("test")


# ----------------------------------------------------------------------------- Food-101


def _papers_files(root: Path, order: list[str]) -> dict[str, list[str]]:
    """The papers' split.json (val taken from the release's train files) and class_idx.json."""
    base = root / "food101"
    train = [f"{c}_{i}.jpg" for c in FOOD_CLASSES for i in range(6)]
    split = {"train": [f for f in train if not f.endswith(("_4.jpg", "_5.jpg"))],
             "val": [f for f in train if f.endswith(("_4.jpg", "_5.jpg"))],
             "test": [f"{c}_{i}.jpg" for c in FOOD_CLASSES for i in range(2)]}
    (base / "split.json").write_text(json.dumps(split))
    (base / "class_idx.json").write_text(json.dumps({c: k for k, c in enumerate(order)}))
    return split


def test_food101_with_and_without_the_papers_files(tmp_path):
    make_food101(tmp_path)
    carve = Food101Dataset(tmp_path, val_fraction=0.3, **FAST)
    assert carve.protocol() == "food101-hash-val"
    train, val = _ids(carve, "train"), _ids(carve, "val")
    assert len(train) + len(val) == 18 and val and not set(train) & set(val)
    order = list(reversed(CLASSES))  # a class order other than sorted: theirs is used
    split = _papers_files(tmp_path, order)
    papers = Food101Dataset(tmp_path, **FAST)
    assert papers.protocol() == "food101-papers"
    for name in ("train", "val", "test"):
        ids, targets = papers.load_labels(name)
        assert ids == split[name]
        assert targets.tolist() == [order.index(f[:f.rfind("_")]) for f in ids]
    assert papers.rows("test").info["class_names"] == order
    from mmbench.data.tasks import get_task
    from mmbench.data.testset import task_test_set

    fp_papers = task_test_set(get_task("food101"), tmp_path).fingerprint
    (tmp_path / "food101" / "class_idx.json").unlink()
    assert task_test_set(get_task("food101"), tmp_path).fingerprint != fp_papers


def test_food101_bad_papers_files(tmp_path):
    make_food101(tmp_path)
    split = _papers_files(tmp_path, list(CLASSES))
    (tmp_path / "food101" / "class_idx.json").write_text(json.dumps({"apple_pie": 0}))
    with pytest.raises(DataError, match="class_idx.json: expected the 101 Food-101 classes"):
        Food101Dataset(tmp_path).load_labels("test")
    _papers_files(tmp_path, list(CLASSES))
    (tmp_path / "food101" / "split.json").write_text(json.dumps(split | {"test": ["pizza_9.jpg", "pizza_0.jpg"]}))
    with pytest.warns(Food101Warning, match=r"food101: 1 of 2 files of split 'test' in .*split.json have no row in "
                                            r"test_titles.csv and are left out.*'pizza_9.jpg'"):
        assert Food101Dataset(tmp_path).load_labels("test")[0] == ["pizza_0.jpg"]


def test_food101_csv_error_gives_the_line(tmp_path):
    make_food101(tmp_path)
    csv = tmp_path / "food101" / "texts" / "train_titles.csv"
    lines = csv.read_text().splitlines()
    lines[3] = "just_one_field"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="train_titles.csv: line 4: expected file,title,class"):
        Food101Dataset(tmp_path).load_labels("train")


def test_labels_only_never_decodes_images(tmp_path, monkeypatch):
    """load_labels / split_summary of the three loaders never reach the image decoder."""
    from mmbench.data.datasets import coco_features

    def refuse(*a, **k):
        raise AssertionError("an image was decoded for labels")

    monkeypatch.setattr(coco_features, "image_features", refuse)
    monkeypatch.setattr(coco_features, "decode_image_file", refuse)
    make_food101(tmp_path)
    make_mmimdb(tmp_path)
    _phase2(tmp_path / "hateful_memes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ds in (Food101Dataset(tmp_path), MMIMDbDataset(tmp_path), HatefulMemesDataset(tmp_path)):
            ids, targets = ds.load_labels("test")
            assert len(ids) == len(targets) == ds.split_summary("test")["samples"] > 0
    assert np.asarray(MMIMDbDataset(tmp_path).load_labels("test")[1]).shape[1] == len(GENRES)


def test_masks_csv_keeps_leading_zeros(tmp_path, monkeypatch, capsys):
    # the masks give the presence a model sees, so the split is loaded (images decoded) here
    import csv

    import pandas as pd

    split_ids = make_mmimdb(tmp_path)
    out = tmp_path / "masks.csv"
    rc, _, err = run_main(["data", "masks", "mmimdb", "--out", out, "--data-dir", tmp_path], monkeypatch, capsys)
    assert rc == 0, err
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[1][0] == split_ids["test"][0] == "0001012" and '"0001012"' in out.read_text()
    assert pd.read_csv(out, dtype={"id": str})["id"].iloc[0] == "0001012"  # as docs/datasets.md says


def test_values_in_messages_print_as_numbers():
    from mmbench.evaluation.submissions.checks import show_values

    assert show_values(np.array([1.5, 2.0])) == "1.5, 2.0" and show_values([np.int64(3), "a"]) == "3, 'a'"


def test_food101_malformed_csv_names_the_line(tmp_path):
    make_food101(tmp_path)
    csv = tmp_path / "food101" / "texts" / "test_titles.csv"
    csv.write_text(csv.read_text() + "x.jpg," + "t" * 200_000 + ",pizza\n")  # over csv's field size limit
    with pytest.raises(DataError, match=r"test_titles.csv: line 7: malformed CSV"):
        Food101Dataset(tmp_path).load_labels("test")
