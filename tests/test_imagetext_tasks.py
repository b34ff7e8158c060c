"""MM-IMDb, UPMC Food-101 and Hateful Memes in their release layouts (generated miniatures),
their Hugging Face copies through the `hf` dataset, and training / evaluating the three tasks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from _hfdata import FOOD_CLASSES, make_food101, make_hateful_memes, make_mmimdb, png_bytes, write_jsonl
from mmbench.data.datasets.food101 import CLASSES, Food101Dataset
from mmbench.data.datasets.hateful_memes import HatefulMemesDataset
from mmbench.data.datasets.mmimdb import GENRES, MMIMDbDataset
from mmbench.core.errors import DataError

FAST = {"image_encoder": "pixels", "image_size": 16, "text_encoder": "tokens"}


@pytest.mark.parametrize("layout", ["labels", "dataset"])
def test_mmimdb_release_layouts(tmp_path, layout):
    split_ids = make_mmimdb(tmp_path, layout=layout)
    ds = MMIMDbDataset(tmp_path, cache_dir=str(tmp_path / "c"), **FAST)
    for name, key in (("train", "train"), ("val", "dev"), ("test", "test")):
        split = ds.load_split(name)
        assert split.ids == split_ids[key]
        assert split.targets.shape == (len(split), 23) and split.targets.dtype == torch.float32
        assert split.present["image"].tolist() == [i != 3 for i in range(len(split))]  # movie 3 has no poster
        assert split.present["text"].tolist() == [i != 2 for i in range(len(split))]  # movie 2 has no plot
    first = json.loads(((tmp_path / "mmimdb" / ("labels" if layout == "labels" else "dataset")) / "0001000.json").read_text())
    row = ds.load_split("train").targets[0]
    assert [GENRES[k] for k in np.flatnonzero(row.numpy())] == sorted((g for g in first["genres"] if g in GENRES),
                                                                       key=GENRES.index)  # Talk-Show is ignored
    assert len(GENRES) == 23 and "Talk-Show" in first["genres"]


def test_mmimdb_bad_files(tmp_path):
    split_ids = make_mmimdb(tmp_path)
    ds = MMIMDbDataset(tmp_path, **FAST)
    (tmp_path / "mmimdb" / "labels" / f"{split_ids['test'][1]}.json").write_text("{not json")
    with pytest.raises(DataError, match=rf"{split_ids['test'][1]}.json.*invalid JSON"):
        ds.load_split("test")
    (tmp_path / "mmimdb" / "labels" / f"{split_ids['dev'][0]}.json").unlink()
    with pytest.raises(DataError, match=r"metadata of movie .* \(listed in split.json 'dev'\) not found"):
        ds.load_split("val")
    (tmp_path / "mmimdb" / "labels" / f"{split_ids['train'][0]}.json").write_text('{"genres": "Drama"}')
    with pytest.raises(DataError, match="no 'genres' list"):
        ds.load_split("train")


def test_food101_release_layout_validation_carve_and_errors(tmp_path):
    make_food101(tmp_path)
    ds = Food101Dataset(tmp_path, val_fraction=0.3, cache_dir=str(tmp_path / "c"), **FAST)
    train, val, test = (ds.load_split(s) for s in ("train", "val", "test"))
    assert len(train) + len(val) == 18 and len(val) > 0 and not set(train.ids) & set(val.ids)
    assert test.ids == [f"{c}_{i}.jpg" for c in FOOD_CLASSES for i in range(2)]
    assert test.targets.tolist() == [CLASSES.index(c) for c in FOOD_CLASSES for _ in range(2)]
    both = {i: (p_img, p_txt) for s in (train, val) for i, p_img, p_txt in
            zip(s.ids, s.present["image"].tolist(), s.present["text"].tolist())}
    assert both["apple_pie_1.jpg"][0] is False and both["pizza_0.jpg"][1] is False  # no photo / empty title
    assert sum(not p for p, _ in both.values()) == 1 and sum(not t for _, t in both.values()) == 1
    assert Food101Dataset(tmp_path, val_fraction=0.3, **FAST).load_split("val").ids == val.ids  # stable
    csv = tmp_path / "food101" / "texts" / "test_titles.csv"
    csv.write_text(csv.read_text() + "x.jpg,some title,borscht\n")
    with pytest.raises(DataError, match="test_titles.csv: line 7: 'borscht' is not a Food-101 class"):
        ds.load_split("test")


def test_hateful_memes_phase1_tests_on_dev(tmp_path):
    """Phase 1 (test.jsonl without labels): test = dev.jsonl, val = a seeded share of train
    (more layouts in tests/test_imagetext_protocols.py)."""
    make_hateful_memes(tmp_path)
    ds = HatefulMemesDataset(tmp_path, val_fraction=0.3, cache_dir=str(tmp_path / "c"), **FAST)
    assert ds.protocol() == "hateful-memes-phase1"
    assert ds.prepare()["test"] == "6 samples"
    test = ds.load_split("test")
    assert test.ids == [str(10012 + i) for i in range(6)] and test.targets.tolist() == [0, 1, 0, 1, 0, 1]
    assert test.present["image"].tolist() == [i != 1 for i in range(6)]
    assert test.present["text"].tolist() == [i != 2 for i in range(6)]
    train, val = ds.load_split("train"), ds.load_split("val")
    assert sorted(train.ids + val.ids) == [str(10000 + i) for i in range(12)] and len(val) > 0
    write_jsonl(tmp_path / "hateful_memes" / "dev.jsonl", [{"id": 1, "img": "img/1.png", "text": "x", "label": 2}])
    with pytest.raises(DataError, match="dev.jsonl: line 1: label 2 is not 0 or 1"):
        HatefulMemesDataset(tmp_path, **FAST).load_split("test")


def test_hf_copies_load_like_the_release_layouts(tmp_path):
    """A Hugging Face copy (Image column, genre list as Sequence(ClassLabel)) through the hf
    dataset gives the same split as the MM-IMDb release layout."""
    import datasets

    from mmbench.data.datasets.hf import HFDataset

    split_ids = make_mmimdb(tmp_path)
    release = MMIMDbDataset(tmp_path, cache_dir=str(tmp_path / "c"), **FAST).load_split("test")
    rows = {"id": [], "image": [], "plot": [], "genres": []}
    for movie in split_ids["test"]:
        meta = json.loads((tmp_path / "mmimdb" / "labels" / f"{movie}.json").read_text())
        poster = tmp_path / "mmimdb" / "images" / f"{movie}.jpeg"
        rows["id"].append(movie)
        rows["image"].append({"bytes": poster.read_bytes(), "path": None} if poster.exists() else None)
        rows["plot"].append(meta["plot"][0] if meta["plot"] else None)
        rows["genres"].append([g for g in meta["genres"] if g in GENRES])
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "plot": datasets.Value("string"),
                                  "genres": datasets.List(datasets.ClassLabel(names=list(GENRES)))})
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(tmp_path / "hf"))
    copy = HFDataset(tmp_path, path="hf", id="id", target="genres", target_type="multilabel",
                     modalities={"image": {"column": "image", "type": "image"}, "text": "plot"},
                     cache_dir=str(tmp_path / "c"), **FAST).load_split("test")
    assert copy.ids == release.ids and torch.equal(copy.targets, release.targets)
    for m in ("image", "text"):
        assert torch.equal(copy.present[m], release.present[m]) and torch.equal(copy.modalities[m], release.modalities[m])


@pytest.fixture(scope="module")
def miniatures(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagetext")
    make_mmimdb(root, counts=(10, 4, 6))
    make_food101(root)
    make_hateful_memes(root, counts=(14, 8, 4))
    return root


@pytest.mark.parametrize("task", ["mmimdb", "food101", "hateful-memes"])
def test_baselines_train_and_evaluate_on_miniatures(task, miniatures, tmp_path, monkeypatch, capsys):
    """`mmbench train` with the shipped baseline config (frozen EfficientNet-Lite0 and MiniLM
    features, concat fusion) for one epoch; then `mmbench evaluate` of the checkpoint and of a
    predictions file, under the task's conditions including the missing protocol."""
    from _cli import run_main
    from mmbench.data.tasks import get_task

    env = {"MMBENCH_CACHE": str(miniatures / "cache")}
    args = ["train", task, "--fusion", "concat", "--epochs", "1", "--data-dir", miniatures, "--out", tmp_path / "runs",
            "--device", "cpu", "--no-progress", "--set", "batch_size=8"]
    if task != "mmimdb":
        args += ["--set", "dataset_options.val_fraction=0.4"]
    rc, out, err = run_main(args, monkeypatch, capsys, env)
    assert rc == 0, err
    run = tmp_path / "runs" / task / "concat" / "seed0"
    spec = get_task(task)
    primary = spec.primary_metric
    assert f"test {primary} " in out or f"{primary} " in out
    rc, out, err = run_main(["evaluate", task, "--model", "baseline", "--weights", run / "best.safetensors",
                             "--name", "mini", "--data-dir", miniatures, "--output", tmp_path / "res.json"],
                            monkeypatch, capsys, env)
    assert rc == 0, err
    result = _result(tmp_path / "res.json")
    # every condition scored, once per distinct mask (a condition equal to another is named in condition_aliases)
    assert set(result.metrics) | set(result.extra.get("condition_aliases", {})) == {c.name for c in spec.conditions()}
    assert "missing:both:0.7" in result.metrics and primary in result.metrics["clean"]
    assert result.confidence_intervals["clean"][primary]["low"] <= result.confidence_intervals["clean"][primary]["high"]


def test_predictions_files_for_multilabel_and_auroc(miniatures, tmp_path, monkeypatch, capsys):
    from sklearn import metrics as skm

    from _cli import run_main
    from mmbench.evaluation.submissions.tables import load_test_labels
    from mmbench.data.tasks import get_task

    env = {"MMBENCH_CACHE": str(miniatures / "cache")}
    rng = np.random.default_rng(0)
    labels = load_test_labels(get_task("hateful-memes"), miniatures)
    scores = rng.random(len(labels.ids))
    pd.DataFrame({"id": labels.ids, "score": scores}).to_csv(tmp_path / "hm.csv", index=False)
    rc, out, err = run_main(["evaluate", "hateful-memes", "--predictions", tmp_path / "hm.csv", "--name", "rand",
                             "--data-dir", miniatures, "--output", tmp_path / "hm.json", "--allow-partial"],
                            monkeypatch, capsys, env)
    assert rc == 0, err
    clean = _result(tmp_path / "hm.json").metrics["clean"]
    assert clean["auroc"] == pytest.approx(skm.roc_auc_score(labels.targets, scores))
    assert clean["accuracy"] == pytest.approx(skm.accuracy_score(labels.targets, scores > 0.5))
    pd.DataFrame({"id": labels.ids, "prediction": (scores > 0.5).astype(int)}).to_csv(tmp_path / "hm-labels.csv", index=False)
    rc, out, err = run_main(["evaluate", "hateful-memes", "--predictions", tmp_path / "hm-labels.csv", "--name", "rand",
                             "--data-dir", miniatures, "--output", tmp_path / "x.json"], monkeypatch, capsys, env)
    assert rc == 1 and "scored by AUROC: give one 'score' column" in err and not (tmp_path / "x.json").exists()

    labels = load_test_labels(get_task("mmimdb"), miniatures)
    probs = rng.random((len(labels.ids), 23))
    frame = pd.DataFrame({"id": labels.ids} | {f"score_{k}": probs[:, k] for k in range(23)})
    conditions = [c.name for c in get_task("mmimdb").conditions()]
    pd.concat([frame.assign(condition=c) for c in conditions]).to_csv(tmp_path / "mm.csv", index=False)
    rc, out, err = run_main(["evaluate", "mmimdb", "--predictions", tmp_path / "mm.csv", "--name", "rand",
                             "--data-dir", miniatures, "--output", tmp_path / "mm.json", "--leaderboard", tmp_path / "board"],
                            monkeypatch, capsys, env)
    assert rc == 0, err
    rc, board, err = run_main(["leaderboard", "mmimdb", "--dir", tmp_path / "board", "--format", "csv"], monkeypatch, capsys)
    assert rc == 0 and all(f"missing:{t}:0.7" in board for t in ("text", "image", "both")), err
    clean = _result(tmp_path / "mm.json").metrics["clean"]
    with np.errstate(all="ignore"):
        import warnings

        warnings.simplefilter("ignore")
        want = skm.f1_score(labels.targets.astype(int), probs > 0.5, average="macro", zero_division=0)
    assert clean["f1_macro"] == pytest.approx(want)
    pd.DataFrame({"id": labels.ids} | {f"score_{k}": probs[:, k] * 2 for k in range(23)}).to_csv(tmp_path / "bad.csv", index=False)
    rc, out, err = run_main(["evaluate", "mmimdb", "--predictions", tmp_path / "bad.csv", "--name", "rand",
                             "--data-dir", miniatures, "--output", tmp_path / "y.json"], monkeypatch, capsys, env)
    assert rc == 1 and "is not a probability in [0, 1]" in err


def _result(path):
    from mmbench.evaluation.results import Result

    return Result.model_validate_json(path.read_text())
