"""`evaluate --model`'s prediction cache: a second run scores from the cache without running the
model, a killed evaluation resumes, and no cached prediction is served for another model (its
folder, its weights), another test set, other masks or other code."""

from __future__ import annotations

import json
import re

import pytest

from mmbench.data.tasks import get_task
from tests._cli import run_main

TASK = "synthetic-synergy"
QUICK = ["--bootstrap", "0", "--timeout", "120"]
CONDITIONS = ["clean", "drop:m0", "drop:m1", "rate:0.5"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny trained baseline of the task (its best.safetensors)."""
    from mmbench.training.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(task=TASK, fusion="concat", epochs=1, embed_dim=8, hidden_dim=8, seed=0), out, progress=False)
    return out / "best.safetensors"


def _evaluate(weights, spec=None, **kw):
    from mmbench.evaluation.evaluator import evaluate_model
    from mmbench.evaluation.prediction_cache import PredictionCache

    cache = PredictionCache()
    result = evaluate_model(spec or get_task(TASK), "baseline", weights, "b", conditions=CONDITIONS, n_resamples=0,
                            cache=cache, **kw)
    return result, cache


def _counts(cache, n):
    return cache.from_cache // n, cache.predicted // n  # conditions served, conditions predicted


def test_a_second_run_scores_from_the_cache_without_running_the_model(weights, monkeypatch):
    import mmbench.evaluation.evaluator as evaluator

    first, cache = _evaluate(weights)
    n = cache.predicted // len(CONDITIONS)  # test items
    assert _counts(cache, n) == (0, len(CONDITIONS))

    def no_model(*a, **k):
        raise AssertionError("the model ran")

    monkeypatch.setattr(evaluator, "predict", no_model)
    monkeypatch.setattr(evaluator, "measure_efficiency", no_model)
    second, cache = _evaluate(weights)
    assert _counts(cache, n) == (len(CONDITIONS), 0)
    assert second.metrics == first.metrics and second.efficiency == first.efficiency


def test_each_key_part_makes_another_entry(weights, tmp_path, monkeypatch):
    """Another model (weights), test set, masks or code: never served from the cache."""
    import shutil

    import mmbench.core.source as source
    import mmbench.evaluation.mixing as mixing
    from mmbench.data.splits import with_dataset_options

    base, cache = _evaluate(weights)
    n = cache.predicted // len(CONDITIONS)
    # other weights (one byte of a tensor changed, the checkpoint rewritten with its digest)
    from mmbench.models.checkpoint import load_model, save_model

    model, config = load_model(weights, "cpu")
    first = next(iter(model.parameters()))
    first.data[0] += 1.0
    other = tmp_path / "other.safetensors"
    save_model(other, model, config)
    result, cache = _evaluate(other)
    assert _counts(cache, n) == (0, len(CONDITIONS))
    # another test set (the synthetic data drawn with another seed: other items and targets)
    spec = with_dataset_options(get_task(TASK), {"seed": 12345})
    result, cache = _evaluate(weights, spec=spec)
    assert cache.from_cache == 0 and cache.predicted > 0
    # other masks for one condition (same name): that condition only is predicted again
    real = mixing.condition_masks

    def other_rate_masks(condition, ids, modalities, seed=0, split="test", present=None):
        out = real(condition, ids, modalities, seed=seed, split=split, present=present)
        name = condition if isinstance(condition, str) else condition.name
        if name == "rate:0.5":
            out = {m: ~keep for m, keep in out.items()}
        return out

    monkeypatch.setattr(mixing, "condition_masks", other_rate_masks)  # the masks drawn for what is sent
    result, cache = _evaluate(weights)
    assert _counts(cache, n) == (len(CONDITIONS) - 1, 1) and cache.conditions_from_cache == CONDITIONS[:3]
    monkeypatch.setattr(mixing, "condition_masks", real)
    # other code: another package source hash
    real_source = source.source_hash
    monkeypatch.setattr(source, "source_hash", lambda root=None: "src1-other")
    result, cache = _evaluate(weights)
    assert _counts(cache, n) == (0, len(CONDITIONS))
    monkeypatch.setattr(source, "source_hash", real_source)
    # and the unchanged evaluation is still served whole, with the same numbers
    again, cache = _evaluate(weights)
    assert _counts(cache, n) == (len(CONDITIONS), 0) and again.metrics == base.metrics
    shutil.rmtree(tmp_path / "cache")


def test_a_killed_sandboxed_evaluation_resumes_and_a_changed_folder_is_another_model(tmp_path, monkeypatch, capsys):
    """A factory submission runs in up to 4 worker calls; killed after the first, the next run
    predicts only what is missing and scores what an uninterrupted evaluation scores. A file
    added to the submission's folder makes it another submission."""
    import mmbench.evaluation.sandbox.runner as runner
    from mmbench.evaluation.submissions.contract import write_template

    model = write_template(get_task(TASK), tmp_path / "sub")
    args = ["evaluate", TASK, "--model", f"{model}:build", "--output", tmp_path / "r.json", *QUICK]
    for c in CONDITIONS:
        args += ["--conditions", c]
    real, calls = runner.run_model, []

    def killed_on_second_call(*a, **k):
        calls.append(a[3])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the evaluation is stopped here
        return real(*a, **k)

    monkeypatch.setattr(runner, "run_model", killed_on_second_call)
    rc, out, err = run_main(args, monkeypatch, capsys)
    assert len(calls) == 2 and not (tmp_path / "r.json").exists(), (rc, calls, err)  # stopped: nothing written
    monkeypatch.setattr(runner, "run_model", real)
    rc, out, err = run_main(args, monkeypatch, capsys)
    assert rc == 0, err
    served, predicted = map(lambda s: int(s.replace(",", "")),
                            re.search(r"prediction cache: ([\d,]+) item predictions from the cache, ([\d,]+) predicted",
                                      err).groups())
    assert served and predicted and served * (len(CONDITIONS) - 1) == predicted  # 1 condition kept, 3 predicted
    resumed = json.loads((tmp_path / "r.json").read_text())
    rc, out, err = run_main([*args, "--no-cache", "--output", tmp_path / "whole.json"], monkeypatch, capsys)
    assert rc == 0 and "prediction cache" not in err
    assert json.loads((tmp_path / "whole.json").read_text())["metrics"] == resumed["metrics"]
    rc, out, err = run_main(args, monkeypatch, capsys)
    assert f"{served + predicted:,} item predictions from the cache, 0 predicted" in err
    assert json.loads((tmp_path / "r.json").read_text())["extra"]["sandbox_seconds"] == 0
    (model.parent / "notes.txt").write_text("a file beside the model is part of the submission")
    rc, out, err = run_main(args, monkeypatch, capsys)
    assert f"0 item predictions from the cache, {served + predicted:,} predicted" in err
