"""Trainer: determinism, run-folder contents, exact resume, modality dropout, interactions."""

import json

import pytest
import torch

import mmbench.training.trainer as trainer_mod
from mmbench.core.errors import MMBenchError
from mmbench.training.trainer import TrainConfig, load_model, train

FAST = dict(epochs=4, batch_size=64, embed_dim=16, hidden_dim=32, lr=3e-3, device="cpu",
            dataset_options={"n_samples": 600})


def test_same_seed_same_metrics_different_seed_differs():
    a = train(TrainConfig(task="synthetic-redundant", fusion="concat", seed=3, **FAST), progress=False)
    b = train(TrainConfig(task="synthetic-redundant", fusion="concat", seed=3, **FAST), progress=False)
    c = train(TrainConfig(task="synthetic-redundant", fusion="concat", seed=4, **FAST), progress=False)
    assert a.history == b.history and a.test_metrics == b.test_metrics
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


def test_run_folder_contents_and_checkpoint_roundtrip(tmp_path):
    seen = []  # on_epoch runs after the epoch's record is written
    result = train(TrainConfig(task="synthetic-unique", fusion="attention", **FAST), tmp_path, progress=False,
                   on_epoch=lambda e: seen.append((e, len((tmp_path / "log.jsonl").read_text().splitlines()))))
    assert seen == [(e, e + 1) for e in range(FAST["epochs"])]
    for name in ["config.json", "log.jsonl", "last.safetensors", "best.safetensors", "metrics.json"]:
        assert (tmp_path / name).exists(), name
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(FAST["epochs"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"] == result.test_metrics
    model, config = load_model(tmp_path / "best.safetensors")
    assert config["fusion"] == "attention"
    x = {m: torch.randn(5, 16) for m in ("m0", "m1")}
    p = {m: torch.ones(5, dtype=torch.bool) for m in ("m0", "m1")}
    model.eval(), result.model.eval()
    torch.testing.assert_close(model(x, p), result.model(x, p))


@pytest.mark.parametrize("fusion", ["concat", "gnn"])
def test_interrupted_run_resumes_to_identical_metrics(tmp_path, monkeypatch, fusion):
    cfg = TrainConfig(task="synthetic-synergy", fusion=fusion, seed=1, modality_dropout=0.2, **FAST)
    full = train(cfg, tmp_path / "full", progress=False)

    real_write = trainer_mod._write_epoch

    def crash_after_epoch_1(run_dir, cfg_, model, mc, opt, record, *args):
        real_write(run_dir, cfg_, model, mc, opt, record, *args)
        if record["epoch"] == 1:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(trainer_mod, "_write_epoch", crash_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(trainer_mod, "_write_epoch", real_write)
    resumed = train(cfg, tmp_path / "cut", progress=False)
    assert resumed.history == full.history
    assert resumed.test_metrics == full.test_metrics
    assert (tmp_path / "cut" / "log.jsonl").read_text() == (tmp_path / "full" / "log.jsonl").read_text()


def test_resume_refuses_a_different_config(tmp_path):
    train(TrainConfig(task="synthetic-unique", fusion="add", **FAST), tmp_path, progress=False)
    with pytest.raises(MMBenchError, match="different config"):
        train(TrainConfig(task="synthetic-unique", fusion="add", **{**FAST, "lr": 0.1}), tmp_path, progress=False)


def test_unknown_config_field_is_named():
    with pytest.raises(MMBenchError, match="unknown config field 'epoch'"):
        TrainConfig.from_dict({"task": "synthetic-unique", "fusion": "add", "epoch": 3})


def test_synergy_needs_both_modalities():
    """On XOR-like data a model seeing one modality stays near chance; fusion does not.

    A smaller, less noisy draw than the task's (at noise 1.2 even the Bayes-optimal fused
    classifier stays near 0.8), so the fused model is clearly right within a few epochs.
    """
    options = {"n_samples": 1200, "noise": 0.6}
    cfg = {"epochs": 8, "batch_size": 64, "embed_dim": 32, "hidden_dim": 64, "lr": 3e-3, "device": "cpu", "patience": 8,
           "dataset_options": options}
    fused = train(TrainConfig(task="synthetic-synergy", fusion="concat", **cfg), progress=False)
    from mmbench.data.splits import apply_condition
    from mmbench.evaluation.evaluator import outputs_to_predictions, predict
    from mmbench.data.masks import parse_condition
    from mmbench.data.splits import load_task_split
    from mmbench.data.tasks import get_task

    spec = get_task("synthetic-synergy")
    spec = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"options": spec.dataset.options | options})})
    test = load_task_split(spec, "test")
    assert fused.test_metrics["accuracy"] > 0.9
    for dropped in ("m0", "m1"):
        alone = apply_condition(test, parse_condition(f"drop:{dropped}"), 0)
        acc_one = (outputs_to_predictions(predict(fused.model, alone), "binary") == test.targets.numpy()).mean()
        assert abs(acc_one - 0.5) < 0.08  # one modality alone carries no information about the label


def test_compile_gives_the_same_run():
    """--compile (torch.compile; the quick aot_eager backend here, inductor by default) trains the same model."""
    cfg = dict(FAST, epochs=2)
    plain = train(TrainConfig(task="synthetic-unique", fusion="concat", **cfg), progress=False)
    compiled = train(TrainConfig(task="synthetic-unique", fusion="concat", compile=True, compile_backend="aot_eager", **cfg),
                     progress=False)
    assert [h["train_loss"] for h in compiled.history] == pytest.approx([h["train_loss"] for h in plain.history], rel=1e-5)
    assert compiled.test_metrics == pytest.approx(plain.test_metrics, abs=0.02)


def test_compile_mode_reaches_torch_compile(monkeypatch, tmp_path):
    from mmbench.core.errors import SpecError
    from mmbench.training.trainer import compile_mode

    assert compile_mode(TrainConfig(task="t", fusion="concat")) is None  # inductor's default mode
    assert compile_mode(TrainConfig(task="t", fusion="concat", compile_mode="reduce-overhead")) == "reduce-overhead"
    # other backends take no mode
    assert compile_mode(TrainConfig(task="t", fusion="concat", compile_mode="reduce-overhead", compile_backend="eager")) is None
    with pytest.raises(SpecError, match="compile_mode must be one of default, reduce-overhead, max-autotune"):
        compile_mode(TrainConfig(task="t", fusion="concat", compile_mode="fast"))
    with pytest.raises(SpecError, match="compile_mode must be one of"):  # refused before the run folder is made
        train(TrainConfig(task="synthetic-unique", fusion="concat", compile=True, compile_mode="fast"),
              tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    seen = []
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: (seen.append(kw), real(model, backend="eager"))[1])
    train(TrainConfig(task="synthetic-unique", fusion="concat", epochs=1, compile=True, compile_mode="max-autotune",
                      dataset_options={"n_samples": 200}), progress=False)
    assert seen == [{"backend": "inductor", "mode": "max-autotune"}]
