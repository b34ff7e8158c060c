"""The trainer's choice of step (eager, compiled, CUDA graphs): decided on the CPU for a CUDA
device, so the choice is checked without a GPU (its speed is measured by benchmarks case 1)."""

import logging

import pytest
import torch

import mmbench.training.trainer as trainer
from mmbench.models.model import MultimodalModel
from mmbench.training.trainer import CUDA_GRAPH_MIN_STEPS, TrainConfig, choose_step_mode

CUDA = torch.device("cuda")
LONG = CUDA_GRAPH_MIN_STEPS * 2


def _model(encoder: dict | None = None, shape=(5,), sequence=False) -> MultimodalModel:
    inputs = {"a": {"shape": list(shape), "sequence": sequence}, "b": {"shape": [4], "sequence": False}}
    return MultimodalModel({"inputs": inputs, "target_type": "classification", "num_classes": 2, "fusion": "concat",
                            "encoders": {"a": encoder or {}}, "embed_dim": 8, "hidden_dim": 8})


CFG = TrainConfig(task="synthetic-synergy", fusion="concat")


def test_long_cuda_runs_of_measured_encoders_get_cuda_graphs():
    # the vmapped seeds too, batch-norm CNNs included: their step hands the new running
    # statistics back instead of writing them (issue 29; before, it fell back to eager)
    for vectorised in (False, True):
        for model in (_model(), _model({"name": "cnn", "channels": 8, "blocks": 1, "norm": "batch"}, (1, 12, 12))):
            mode = choose_step_mode(CFG, CUDA, model, LONG, vectorised=vectorised)
            assert (mode.compile, mode.mode, mode.fallback) == (True, "reduce-overhead", False), mode
            assert ("vmapped" in mode.reason) == vectorised


def test_eager_where_compiling_does_not_pay_or_is_not_cuda():
    cpu = choose_step_mode(CFG, torch.device("cpu"), _model(), LONG)
    short = choose_step_mode(CFG, CUDA, _model(), CUDA_GRAPH_MIN_STEPS - 1)
    off = choose_step_mode(TrainConfig(task="synthetic-synergy", fusion="concat", auto_compile=False), CUDA, _model(), LONG)
    for mode in (cpu, short, off):
        assert not mode.compile and not mode.fallback, mode
    assert "too few to repay compiling" in short.reason


@pytest.mark.parametrize("case,expected", [
    ("gru", "GRUEncoder not yet measured"),
    ("distributed", "DistributedDataParallel"),
    ("vectorised_gru", "GRUEncoder not yet measured"),
    ("vectorised_ragged", "last batch of each epoch is shorter"),
])
def test_fallbacks_say_why(case, expected):
    model = _model({"name": "gru"}, (3,), True) if "gru" in case else _model()
    mode = choose_step_mode(CFG, CUDA, model, LONG, distributed=case == "distributed", vectorised=case.startswith("vectorised"),
                            static_shapes=case != "vectorised_ragged")
    assert not mode.compile and mode.fallback and expected in mode.reason, mode


def test_an_explicit_compile_is_kept():
    cfg = TrainConfig(task="synthetic-synergy", fusion="concat", compile=True, compile_mode="max-autotune")
    for device in (torch.device("cpu"), CUDA):
        mode = choose_step_mode(cfg, device, _model({"name": "gru"}, (3,), True), 10)
        assert (mode.compile, mode.mode) == (True, "max-autotune")


def test_the_trainer_runs_the_chosen_step(monkeypatch, caplog):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(kw) or module)
    monkeypatch.setattr(trainer, "choose_step_mode", lambda cfg, device, model, steps, distributed=False, vectorised=False:
                        trainer.StepMode(True, "reduce-overhead", f"{steps} steps", fallback=True))
    cfg = TrainConfig(task="synthetic-synergy", fusion="concat", epochs=2, batch_size=100, embed_dim=8, hidden_dim=8,
                      device="cpu", dataset_options={"n_samples": 300})
    with caplog.at_level(logging.INFO, logger="mmbench.training"):
        trainer.train(cfg, progress=False)
    assert compiled == [{"backend": "inductor", "mode": "reduce-overhead"}]
    # a fallback is a warning naming the run and the reason
    assert any(r.levelno == logging.WARNING and r.getMessage().startswith("synthetic-synergy concat seed 0: ")
               and r.getMessage().endswith(" steps") for r in caplog.records)
