"""The `hf` dataset: Hugging Face datasets in each storage form, mapped by columns, offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _hfdata import image_text_columns, image_text_dict, png_bytes, write_image, write_jsonl
from mmbench.data.datasets.hf import HFDataset, decode_image_bytes
from mmbench.core.errors import DataError, SpecError
from mmbench.models.encoders.pretrained import normalize_pixels

SIZE = 16
MAPPING = {"image": {"column": "image", "type": "image"}, "text": {"column": "caption", "type": "text"},
           "meta": {"column": "meta", "type": "features"}}
FAST = {"image_encoder": "pixels", "image_size": SIZE, "text_encoder": "tokens"}
SPLITS = {"train": "train", "val": "validation", "test": "test"}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The same DatasetDict saved with save_to_disk, as Parquet files, as Arrow files, and as a
    Hub-style folder of Parquet shards."""
    root = tmp_path_factory.mktemp("hf")
    d = image_text_dict()
    d.save_to_disk(str(root / "disk"))
    (root / "hub" / "data").mkdir(parents=True)
    (root / "parquet").mkdir()
    for split, part in d.items():
        part.to_parquet(str(root / "parquet" / f"{split}.parquet"))
        part.to_parquet(str(root / "hub" / "data" / f"{split}-00000-of-00001.parquet"))
    return root


def load(root, split="train", **options):
    options = {"target": "label", "id": "uid", "modalities": MAPPING, "splits": SPLITS, "cache_dir": str(root / "cache")} | FAST | options
    return HFDataset(root, **options).load_split(split)


def expected(n, offset):
    cols = image_text_columns(n, offset)
    return cols, [png_bytes(offset + i) for i in range(n)]


def check_split(split, n, offset):
    cols, blobs = expected(n, offset)
    assert split.ids == cols["uid"]
    assert split.present["image"].tolist() == [im is not None for im in cols["image"]]
    assert split.present["text"].tolist() == [c is not None for c in cols["caption"]]
    assert split.present["meta"].tolist() == [m is not None for m in cols["meta"]]
    assert split.targets.tolist() == cols["label"]
    for i, ok in enumerate(split.present["image"].tolist()):
        want = normalize_pixels(decode_image_bytes(blobs[i], SIZE)) if ok else torch.zeros(3, SIZE, SIZE)
        assert torch.equal(split.modalities["image"][i], want)
    for i, m in enumerate(cols["meta"]):
        assert split.modalities["meta"][i].tolist() == (m if m is not None else [0.0, 0.0])
    lengths = split.lengths["text"]
    assert (lengths[~split.present["text"]] == 0).all() and (lengths[split.present["text"]] > 2).all()


def test_save_to_disk_folder_with_split_mapping_and_none_as_missing(stored):
    check_split(load(stored, path="disk"), 8, 0)
    check_split(load(stored, "val", path="disk"), 6, 100)
    ds = HFDataset(stored, target="label", modalities=MAPPING, splits=SPLITS, path="disk", **FAST)
    assert ds.split_names == ("train", "val", "test")
    assert "validation" in ds.locate()["splits"]


def test_parquet_arrow_and_hub_folder_give_the_same_split(stored):
    ref = load(stored, "test", path="disk")
    forms = {
        "parquet": {"data_files": {s: f"parquet/{s}.parquet" for s in ("train", "validation", "test")}},
        "arrow": {"data_files": {s: next((stored / "disk" / s).glob("*.arrow")).relative_to(stored).as_posix()
                                 for s in ("train", "validation", "test")}},
        "hub-folder": {"path": "hub"},
    }
    for name, where in forms.items():
        got = load(stored, "test", **where)
        assert got.ids == ref.ids, name
        for m in ref.modalities:
            assert torch.equal(got.modalities[m], ref.modalities[m]) and torch.equal(got.present[m], ref.present[m]), name
        assert torch.equal(got.targets, ref.targets), name


def test_json_lines_with_image_paths_string_labels_and_default_ids(tmp_path):
    rows = []
    for i in range(5):
        if i != 1:
            write_image(tmp_path / "pics" / f"{i}.png", i)
        rows.append({"img": None if i == 1 else f"pics/{i}.png", "text": None if i == 3 else f"text {i}",
                     "x": i * 0.5, "y": None if i == 4 else -1.0, "label": ["cat", "dog"][i % 2]})
    write_jsonl(tmp_path / "train.jsonl", rows)
    split = load(tmp_path, data_files={"train": "train.jsonl"}, id=None, splits=None, class_names=["cat", "dog"],
                 modalities={"image": {"column": "img", "type": "image"}, "text": "text",
                             "num": {"columns": ["x", "y"], "type": "features"}})
    assert split.ids == [f"train-{i}" for i in range(5)]
    assert split.present["image"].tolist() == [True, False, True, True, True]
    assert split.present["text"].tolist() == [True, True, True, False, True]
    assert split.present["num"].tolist() == [True, True, True, True, False]  # a None in any listed column
    assert split.modalities["num"][2].tolist() == [1.0, -1.0]
    assert split.targets.tolist() == [0, 1, 0, 1, 0]
    assert torch.equal(split.modalities["image"][2], normalize_pixels(decode_image_bytes(png_bytes(2), SIZE)))


def test_multilabel_target_from_label_lists_and_multi_hot(tmp_path):
    import datasets

    genres = ["Drama", "Comedy", "Horror"]
    feats = datasets.Features({"plot": datasets.Value("string"), "genres": datasets.List(datasets.ClassLabel(names=genres)),
                               "hot": datasets.List(datasets.Value("int64"))})
    datasets.Dataset.from_dict({"plot": ["a", "b", None], "genres": [[0, 2], [], [1]],
                                "hot": [[1, 0, 1], [0, 0, 0], [0, 1, 0]]}, features=feats).save_to_disk(str(tmp_path / "d"))
    opts = {"path": "d", "id": None, "splits": None, "modalities": {"text": "plot"}, "target_type": "multilabel"}
    want = [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert load(tmp_path, target="genres", **opts).targets.tolist() == want
    split = load(tmp_path, target="hot", target_format="multi_hot", num_classes=3, **opts)
    assert split.targets.dtype == torch.float32 and split.targets.tolist() == want
    with pytest.raises(SpecError, match="class_names or num_classes"):
        load(tmp_path, target="hot", target_format="multi_hot", **opts)


def test_bad_inputs_are_one_clear_error(stored, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no column 'capshun'"):
        load(stored, path="disk", modalities={"text": {"column": "capshun", "type": "text"}})
    with pytest.raises(DataError, match="no split 'dev'"):
        load(stored, "val", path="disk", splits={"val": "dev"})
    with pytest.raises(SpecError, match="exactly one of"):
        load(stored, path="disk", hub="someone/data")
    with pytest.raises(SpecError, match="modalities.a.type: 'audio' is not one of"):
        load(stored, path="disk", modalities={"a": {"column": "caption", "type": "audio"}})
    with pytest.raises(DataError, match="not found"):
        load(stored, path="nowhere")
    import datasets

    datasets.Dataset.from_dict({"t": ["a", "b", "c"], "label": [0, None, 1], "n": [1.0, float("nan"), 2.0],
                                "img": [b"not an image", None, None]}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match="1 of 3 rows have no target .*cannot be trained or evaluated"):
        load(tmp_path, path="bad", id=None, splits=None, modalities={"t": "t"})
    with pytest.raises(DataError, match="non-finite"):
        load(tmp_path, path="bad", id=None, splits=None, target="t", class_names=["a", "b", "c"],
             modalities={"n": {"column": "n", "type": "features"}})
    with pytest.raises(DataError, match="row 'train-0': cannot decode the image"):
        load(tmp_path, path="bad", id=None, splits=None, target="t", class_names=["a", "b", "c"],
             modalities={"i": {"column": "img", "type": "image"}})
    with pytest.raises(DataError, match="row 'train-2': label 'c' is not one of the class names"):
        load(tmp_path, path="bad", id=None, splits=None, target="t", class_names=["a", "b"], modalities={"t": "t"})


def test_hub_id_is_real_code_and_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="cannot load Hub dataset 'mmbench-nobody/no-such-set': HF_HUB_OFFLINE"):
        HFDataset(tmp_path, hub="mmbench-nobody/no-such-set", target="label", modalities={"text": "text"},
                  cache_dir=str(tmp_path / "c")).load_split("train")


def test_export_reads_back_identical_and_loads_through_hf(tmp_path, monkeypatch, capsys):
    import datasets

    from _cli import run_main
    from mmbench.data.splits import load_training_splits
    from mmbench.data.tasks import get_task

    rc, out, err = run_main(["data", "export", "synthetic-synergy", "-o", tmp_path / "exp"], monkeypatch, capsys)
    assert rc == 0, err
    back = datasets.load_from_disk(str(tmp_path / "exp"))
    spec = get_task("synthetic-synergy")
    splits = load_training_splits(spec)
    assert set(back) == {"train", "validation", "test"}
    for role, split in splits.items():
        part = back[role].with_format("numpy")[:]  # every column as one numpy array
        assert part["id"].tolist() == split.ids
        assert np.array_equal(part["target"], split.targets.numpy())
        for m in spec.modalities:
            assert part[m].dtype == split.modalities[m].numpy().dtype
            assert np.array_equal(part[m], split.modalities[m].numpy())
            assert np.array_equal(part[f"present_{m}"], split.present[m].numpy())
        assert json.loads(back[role].info.description)["mmbench_task"] == "synthetic-synergy"
    mapped = HFDataset(tmp_path, path="exp", id="id", target="target",
                       modalities={m: {"column": m, "type": "features"} for m in spec.modalities}).load_split("test")
    assert torch.equal(mapped.modalities["m0"], splits["test"].modalities["m0"])
    rc, out, err = run_main(["data", "export", "synthetic-synergy", "-o", tmp_path / "exp"], monkeypatch, capsys)
    assert rc == 1 and "not empty" in err
