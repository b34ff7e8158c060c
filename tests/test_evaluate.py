"""`mmbench evaluate`: predictions files (CSV, JSON lines, Parquet; class labels, scores,
regression values; retrieval embeddings), model submissions (a trained baseline checkpoint, a
Python factory run in the sandbox, a torch.export program), the Result record, the
leaderboard copy + `mmbench leaderboard verify`, and 16 concurrent evaluations."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmbench.core.errors import SubmissionError
from mmbench.evaluation.evaluator import evaluate_model
from mmbench.evaluation.scoring import evaluate_predictions, robustness_summary, score
from mmbench.data.masks import condition_masks
from mmbench.evaluation.sandbox.runner import SandboxConfig
from mmbench.data.tasks import get_task
from _cli import run_main
from _cocofiles import write_train2017_stub

TASK = "synthetic-synergy"
SPEC = get_task(TASK)
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def split():
    from mmbench.data.splits import load_task_split

    return load_task_split(SPEC, "test")




def mask_aware_predictions(split, conditions) -> pd.DataFrame:
    """A 'model' that is right when both modalities are kept and guesses 0 otherwise, computed
    from the masks a submitter gets from `mmbench data masks`."""
    rows = []
    y = split.targets.numpy()
    for c in conditions:
        masks = condition_masks(c, split.ids, split.modality_names, SPEC.missing.seed, split.name)
        both = masks["m0"] & masks["m1"]
        rows.append(pd.DataFrame({"id": split.ids, "condition": c.name, "prediction": np.where(both, y, 0)}))
    return pd.concat(rows, ignore_index=True)


# --------------------------------------------------------------------------------------------
# predictions files
# --------------------------------------------------------------------------------------------


def test_formats_agree_and_result_fields(split, tmp_path):
    conds = SPEC.conditions()
    df = mask_aware_predictions(split, conds).sample(frac=1.0, random_state=0)  # row order does not matter
    files = {"csv": tmp_path / "p.csv", "jsonl": tmp_path / "p.jsonl", "parquet": tmp_path / "p.parquet"}
    df.to_csv(files["csv"], index=False)
    df.to_json(files["jsonl"], orient="records", lines=True)
    df.to_parquet(files["parquet"], index=False)
    results = {k: evaluate_predictions(SPEC, p, f"sub-{k}", n_resamples=200) for k, p in files.items()}
    y = split.targets.numpy()
    aliases = results["csv"].extra["condition_aliases"]  # equal masks on this test set: named
    assert aliases == {"pattern:m0+m1": "clean", "pattern:m0": "drop:m1", "pattern:m1": "drop:m0"}
    for c in conds:
        sub = df[df.condition == c.name].set_index("id").loc[split.ids, "prediction"].to_numpy()
        expected = score(SPEC, y, sub)
        for r in results.values():  # every condition the file gives is scored
            assert r.metrics[c.name] == pytest.approx(expected)
    r = results["csv"]
    assert r.metrics["clean"]["accuracy"] == 1.0 and r.metrics["drop:m0"]["accuracy"] < 0.6
    assert r.kind == "predictions" and r.task == TASK and r.name == "sub-csv"
    assert r.submission_hash == hashlib.sha256(files["csv"].read_bytes()).hexdigest()
    assert r.robustness == robustness_summary(r.metrics, "accuracy", True)
    ci = r.confidence_intervals["clean"]["accuracy"]
    assert ci["low"] <= r.metrics["clean"]["accuracy"] <= ci["high"]
    assert r.dataset_fingerprint and r.mmbench_version and r.hardware and r.created
    assert r.extra["format"] == "csv" and r.extra["conditions_not_evaluated"] == []
    assert np.array(r.extra["confusion_matrix"]).sum() == len(split)  # for reports, as for trained baselines
    assert results["jsonl"].extra["format"] == "jsonl" and results["parquet"].extra["format"] == "parquet"


def test_scores_and_missing_condition_column(split, tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(len(split), 2))
    labels = scores.argmax(1)
    a, b = tmp_path / "scores.csv", tmp_path / "labels.parquet"
    pd.DataFrame({"id": split.ids, "score_0": scores[:, 0], "score_1": scores[:, 1]}).to_csv(a, index=False)
    pd.DataFrame({"id": split.ids, "prediction": labels}).to_parquet(b, index=False)
    ra, rb = evaluate_predictions(SPEC, a, "a", n_resamples=0), evaluate_predictions(SPEC, b, "b", n_resamples=0)
    assert ra.metrics == rb.metrics and list(ra.metrics) == ["clean"]
    assert ra.extra["values"] == "scores" and rb.extra["values"] == "labels"
    assert "drop:m0" in ra.extra["conditions_not_evaluated"] and ra.confidence_intervals == {}
    # rows with an empty condition count as clean
    c = tmp_path / "mixed.csv"
    df = pd.DataFrame({"id": split.ids * 2, "condition": [""] * len(split) + ["drop:m1"] * len(split),
                       "prediction": list(labels) * 2})
    df.to_csv(c, index=False)
    rc = evaluate_predictions(SPEC, c, "c", n_resamples=0)
    assert set(rc.metrics) == {"clean", "drop:m1"} and rc.metrics["clean"] == ra.metrics["clean"]
    # only the requested conditions
    rd = evaluate_predictions(SPEC, c, "d", conditions=["drop:m1"], n_resamples=0)
    assert list(rd.metrics) == ["drop:m1"]


def test_masks_export_matches_evaluation(split, tmp_path, monkeypatch, capsys):
    """A submitter applies the exported masks; the evaluator scores each condition with them."""
    masks_csv = tmp_path / "masks.csv"
    rc, out, err = run_main(["data", "masks", TASK, "--out", masks_csv], monkeypatch, capsys)
    assert rc == 0, err
    masks = pd.read_csv(masks_csv, dtype={"id": str})
    y = dict(zip(split.ids, split.targets.numpy()))
    masks["prediction"] = np.where((masks.m0 == 1) & (masks.m1 == 1), masks.id.map(y), 0)
    preds = tmp_path / "from-masks.csv"
    masks[["id", "condition", "prediction"]].to_csv(preds, index=False)
    from_masks = evaluate_predictions(SPEC, preds, "m", n_resamples=0)
    direct = tmp_path / "direct.csv"
    mask_aware_predictions(split, SPEC.conditions()).to_csv(direct, index=False)
    assert from_masks.metrics == evaluate_predictions(SPEC, direct, "d", n_resamples=0).metrics


def test_cli_writes_result_entry_copy_and_verify(split, tmp_path, monkeypatch, capsys):
    preds = tmp_path / "my preds.csv"
    mask_aware_predictions(split, SPEC.conditions()).to_csv(preds, index=False)
    board, out = tmp_path / "lb", tmp_path / "out" / "result.json"
    rc, stdout, stderr = run_main(["evaluate", TASK, "--predictions", preds, "--name", "team-a", "--output", out,
                                   "--leaderboard", board], monkeypatch, capsys)
    assert rc == 0, stderr
    assert "clean: accuracy 1.0000" in stdout and "robustness" in stdout
    result = json.loads(out.read_text())
    entry = json.loads((board / TASK / "team-a.json").read_text())
    assert entry["predictions_file"] == f"{TASK}/predictions/team-a.csv"
    assert (board / entry["predictions_file"]).read_bytes() == preds.read_bytes()
    assert result["metrics"] == entry["metrics"] and result["submission_hash"] == entry["submission_hash"]

    # a second entry without stored predictions is skipped by verify
    from mmbench.board.entries import write_entry
    from mmbench.evaluation.results import Result

    other = Result.model_validate(entry | {"name": "no-preds", "predictions_file": None})
    write_entry(board, other)
    rc, stdout, stderr = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 0, stdout + stderr
    assert f"OK      {TASK}/team-a" in stdout and f"SKIP    {TASK}/no-preds" in stdout

    # a hand-edited metric is flagged
    edited = json.loads((board / TASK / "team-a.json").read_text())
    edited["metrics"]["drop:m0"]["accuracy"] = 0.99
    (board / TASK / "team-a.json").write_text(json.dumps(edited))
    rc, stdout, stderr = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and f"DIFFERS {TASK}/team-a: drop:m0 accuracy: entry 0.99" in stdout
    assert stderr.startswith("error: leaderboard verification failed: 1 entry differs")

    # so is a swapped predictions file (the entry's sha256 no longer matches)
    (board / TASK / "team-a.json").write_text(json.dumps(entry))
    stored = board / entry["predictions_file"]
    df = pd.read_csv(stored, dtype={"id": str})
    df.loc[df.condition == "clean", "prediction"] = 0
    df.to_csv(stored, index=False)
    rc, stdout, stderr = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and "changed (sha256" in stdout

    # resubmitting a name is refused; with --force it bumps its version and keeps the old entry in history/
    rc, stdout, stderr = run_main(["evaluate", TASK, "--predictions", preds, "--name", "team-a", "--leaderboard", board,
                                   "--bootstrap", "0"], monkeypatch, capsys)
    assert rc == 1 and "already has an entry named 'team-a'" in stderr
    rc, stdout, stderr = run_main(["evaluate", TASK, "--predictions", preds, "--name", "team-a", "--leaderboard", board,
                                   "--bootstrap", "0", "--force"], monkeypatch, capsys)
    assert rc == 0, stderr
    assert json.loads((board / TASK / "team-a.json").read_text())["version"] == 2
    assert (board / TASK / "history" / "team-a.v1.json").exists()
    rc, stdout, stderr = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 0, stdout + stderr


def test_default_name_is_the_file_stem(split, tmp_path, monkeypatch, capsys):
    preds = tmp_path / "baseline-v2.jsonl"
    pd.DataFrame({"id": split.ids, "prediction": split.targets.numpy()}).to_json(preds, orient="records", lines=True)
    rc, stdout, stderr = run_main(["evaluate", TASK, "-p", preds, "--json", "--bootstrap", "0", "--allow-partial"],
                                  monkeypatch, capsys)
    assert rc == 0, stderr
    assert json.loads(stdout)["name"] == "baseline-v2"


def _mosi_labels_spec(tmp_path):
    """The mosi task with a tokenizer text encoder: the same test split and labels, no MiniLM run."""
    import yaml

    from mmbench.core.errors import MMBenchError

    try:
        base = get_task("mosi")
    except MMBenchError:
        pytest.skip("no mosi task registered")
    from _datapaths import real_data_root

    root = real_data_root()
    data = base.model_dump(exclude={"source"})
    data["name"] = "mosi-labels"
    data["dataset"]["options"] = dict(data["dataset"]["options"]) | {"text_encoder": "tokens"}
    path = tmp_path / "mosi-labels.yaml"
    path.write_text(yaml.safe_dump(data))
    return get_task(str(path)), root


def test_regression_predictions_mosi(tmp_path, monkeypatch):
    spec, root = _mosi_labels_spec(tmp_path)
    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "cache"))
    from mmbench.core.errors import MMBenchError
    from mmbench.evaluation.metrics import mosi_metrics
    from mmbench.evaluation.submissions.tables import load_test_labels

    try:
        labels = load_test_labels(spec, root)
    except (MMBenchError, ImportError) as exc:
        pytest.skip(f"mosi test split not loadable here: {exc}")
    rng = np.random.default_rng(0)
    pred = np.clip(labels.targets + rng.normal(scale=0.8, size=len(labels.ids)), -3, 3)
    p = tmp_path / "mosi.csv"
    pd.DataFrame({"id": labels.ids, "prediction": pred}).to_csv(p, index=False, float_format="%.17g")
    r = evaluate_predictions(spec, p, "mosi-noise", data_dir=root, n_resamples=100)
    expected = mosi_metrics(labels.targets, pred)
    assert r.metrics["clean"] == pytest.approx({m.name: expected[m.name] for m in spec.metrics})
    assert r.primary_metric == "acc2_non0" and r.higher_is_better
    # class scores make no sense for a regression task; a string value is refused
    bad = tmp_path / "bad.jsonl"
    pd.DataFrame({"id": labels.ids, "prediction": ["high"] * len(labels.ids)}).to_json(bad, orient="records", lines=True)
    with pytest.raises(SubmissionError, match="must be a number"):
        evaluate_predictions(spec, bad, "bad", data_dir=root)


# --------------------------------------------------------------------------------------------
# retrieval (coco-retrieval on a small generated captions JSON: the gallery needs no images)
# --------------------------------------------------------------------------------------------


def _coco(tmp: Path, n_images=20, per_image=5, dim=24):
    root = tmp / "data"
    ann = root / "coco" / "annotations"
    ann.mkdir(parents=True)
    images = [{"id": 1000 + 7 * i, "file_name": f"{1000 + 7 * i:012d}.jpg"} for i in range(n_images)]
    anns = [{"id": 50000 + k, "image_id": images[k // per_image]["id"], "caption": f"caption {k}"}
            for k in range(n_images * per_image)]
    (ann / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    write_train2017_stub(ann)  # the test split: all of val2017
    rng = np.random.default_rng(7)
    img = rng.normal(size=(n_images, dim)).astype(np.float32)
    cap = (np.repeat(img, per_image, 0) + rng.normal(scale=0.9, size=(n_images * per_image, dim))).astype(np.float32)
    return root, np.array([im["id"] for im in images]), img, np.array([a["id"] for a in anns]), cap


def test_retrieval_embeddings(tmp_path, monkeypatch, capsys):
    from mmbench.core.errors import MMBenchError

    try:
        spec = get_task("coco-retrieval")
    except MMBenchError:
        pytest.skip("no coco-retrieval task registered")
    from mmbench.evaluation.metrics import retrieval_metrics

    root, image_ids, img, caption_ids, cap = _coco(tmp_path)
    good = tmp_path / "emb.npz"
    np.savez(good, image_ids=image_ids, image_embeddings=img, caption_ids=caption_ids, caption_embeddings=cap)
    r = evaluate_predictions(spec, good, "zero-shot", data_dir=root)
    expected = retrieval_metrics(img, cap, np.repeat(np.arange(len(image_ids)), 5))
    assert r.metrics["clean"] == pytest.approx({m.name: expected[m.name] for m in spec.metrics})
    assert 0 < r.metrics["clean"]["t2i_recall@1"] < 1 and r.extra["embedding_dim"] == 24
    # the order of the submitted rows does not matter; string ids work too
    perm_i, perm_c = np.random.default_rng(1).permutation(len(image_ids)), np.random.default_rng(2).permutation(len(caption_ids))
    shuffled = tmp_path / "shuffled.npz"
    np.savez_compressed(shuffled, image_ids=image_ids[perm_i].astype(str), image_embeddings=img[perm_i],
                        caption_ids=caption_ids[perm_c], caption_embeddings=cap[perm_c].astype(np.float64))
    assert evaluate_predictions(spec, shuffled, "shuffled", data_dir=root).metrics["clean"] == pytest.approx(r.metrics["clean"])
    # through the CLI, to a leaderboard, then verified (the gallery is found through MMBENCH_DATA)
    board = tmp_path / "lb"
    rc, out, err = run_main(["evaluate", "coco-retrieval", "-p", good, "--name", "zs", "--data-dir", root,
                             "--leaderboard", board], monkeypatch, capsys)
    assert rc == 0, err
    assert (board / "coco-retrieval" / "predictions" / "zs.npz").read_bytes() == good.read_bytes()
    monkeypatch.setenv("MMBENCH_DATA", str(root))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 0 and "OK      coco-retrieval/zs" in out, out + err
    # the trained baseline: tests/test_coco_layouts.py; model submissions: tests/test_evaluate_retrieval_model.py
    with pytest.raises(SubmissionError, match="--model baseline needs --weights"):
        evaluate_model(spec, "baseline", None, "x")


# --------------------------------------------------------------------------------------------
# model submissions: one trained baseline, three ways
# --------------------------------------------------------------------------------------------


FACTORY = '''
import json
from pathlib import Path

from mmbench.models.model import MultimodalModel

CONFIG = json.loads(Path(__file__).with_name("model_config.json").read_text())


def build(task_info):
    assert task_info["task"] == "synthetic-synergy" and task_info["outputs"] == 2
    return MultimodalModel(CONFIG)
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from mmbench.training.trainer import TrainConfig, load_model, train

    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(task=TASK, fusion="concat", epochs=2, embed_dim=16, hidden_dim=32, device="cpu", seed=0)
    train(cfg, run, progress=False)
    best = run / "best.safetensors"
    model, config = load_model(best)
    (run / "model_config.json").write_text(json.dumps(config))
    (run / "factory.py").write_text(FACTORY)
    model.eval()
    from mmbench.data.splits import load_task_split

    b = load_task_split(SPEC, "test").batch(torch.arange(8))
    dim = torch.export.Dim("batch", min=1, max=1 << 20)
    ep = torch.export.export(model, (b.modalities, b.present, b.lengths),
                             dynamic_shapes=({k: {0: dim} for k in b.modalities}, {k: {0: dim} for k in b.present}, {}))
    torch.export.save(ep, run / "model.pt2")
    return run


def test_trained_baseline_three_ways(trained, tmp_path, monkeypatch, capsys):
    best = trained / "best.safetensors"
    board = tmp_path / "lb"
    out = tmp_path / "baseline.json"
    rc, stdout, stderr = run_main(["evaluate", TASK, "--model", "baseline", "--weights", best, "--name", "concat-2ep",
                                   "--output", out, "--leaderboard", board, "--device", "cpu"], monkeypatch, capsys)
    assert rc == 0, stderr
    base = json.loads(out.read_text())
    assert base["kind"] == "baseline" and base["fusion"] == "concat"
    assert base["predictions_file"] == f"{TASK}/predictions/concat-2ep.parquet"  # stored: verify rescores it
    assert base["submission_hash"] == hashlib.sha256(best.read_bytes()).hexdigest()
    # conditions equal on this test set are evaluated once: the patterns are clean and the drops
    aliases = base["extra"]["condition_aliases"]
    assert aliases == {"pattern:m0+m1": "clean", "pattern:m0": "drop:m1", "pattern:m1": "drop:m0"}
    assert set(base["metrics"]) == {c.name for c in SPEC.conditions()} - set(aliases)
    assert base["extra"]["masks_protocol"] == 2 and base["extra"]["conditions_not_evaluated"] == []
    assert base["efficiency"]["params"] > 0 and base["efficiency"]["flops_per_sample"] > 0
    assert "accuracy" in base["confidence_intervals"]["clean"]
    assert (board / TASK / "concat-2ep.json").exists()

    cfg = SandboxConfig(timeout_s=300)
    fac = evaluate_model(SPEC, f"{trained / 'factory.py'}:build", best, "concat-factory", sandbox_config=cfg,
                         n_resamples=0)
    pt2 = evaluate_model(SPEC, str(trained / "model.pt2"), None, "concat-pt2", sandbox_config=cfg, n_resamples=0)
    for r in (fac, pt2):
        assert r.kind == "model" and set(r.metrics) == set(base["metrics"])
        for cond, values in base["metrics"].items():
            for metric, v in values.items():
                assert abs(r.metrics[cond][metric] - v) <= 2 / 600, (r.name, cond, metric)
        assert r.efficiency["params"] == base["efficiency"]["params"]
    assert len(fac.extra["submission_files"]) == 2  # factory file + weights
    assert pt2.submission_hash == hashlib.sha256((trained / "model.pt2").read_bytes()).hexdigest()

    # a checkpoint trained on other dataset options: refused, naming what differs and why
    from mmbench.training.trainer import TrainConfig, train

    wide = train(TrainConfig(task=TASK, fusion="concat", epochs=1, embed_dim=8, hidden_dim=8, device="cpu",
                             dataset_options={"dim": 12, "n_samples": 200}), tmp_path / "wide", progress=False)
    with pytest.raises(SubmissionError, match=r"m0: trained on \[12\], test data \[16\]; m1: trained on \[12\], "
                                              r"test data \[16\]\); task 'synthetic-synergy' decodes with its spec's"):
        evaluate_model(SPEC, "baseline", wide.run_dir / "best.safetensors", "wide")

    # a checkpoint of another task is refused
    other = get_task("synthetic-unique")
    with pytest.raises(SubmissionError, match="trained for task 'synthetic-synergy'"):
        evaluate_model(other, "baseline", best, "wrong-task")


# --------------------------------------------------------------------------------------------
# concurrency
# --------------------------------------------------------------------------------------------


def test_16_concurrent_evaluations(split, tmp_path):
    rng = np.random.default_rng(0)
    y = split.targets.numpy()
    board = tmp_path / "lb"
    procs = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMBENCH_MAX")} | {"OMP_NUM_THREADS": "1"}
    for k in range(16):
        p = tmp_path / f"preds{k}.csv"
        pred = np.where(rng.random(len(y)) < 0.5 + k / 40, y, 1 - y)
        pd.DataFrame({"id": split.ids, "prediction": pred}).to_csv(p, index=False)
        procs.append(subprocess.Popen([sys.executable, "-m", "mmbench.cli", "evaluate", TASK, "--predictions", str(p),
                                       "--name", f"n{k}", "--leaderboard", str(board), "--allow-partial"],
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for k, proc in enumerate(procs):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"n{k}: {err}"
    entries = sorted(p.name for p in (board / TASK).glob("*.json"))
    assert entries == sorted(f"n{k}.json" for k in range(16))
    for k in range(16):
        e = json.loads((board / TASK / f"n{k}.json").read_text())
        assert e["version"] == 1 and (board / e["predictions_file"]).read_bytes() == (tmp_path / f"preds{k}.csv").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "mmbench.cli", "leaderboard", "--dir", str(board), "--format", "json"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["entries"]
    assert len(rows) == 16 and sorted(r["name"] for r in rows) == sorted(f"n{k}" for k in range(16))
    assert [r["rank"] for r in rows] == list(range(1, 17))
    assert not list((board / TASK).glob(".*.tmp")) and not (board / TASK / "history").exists()
