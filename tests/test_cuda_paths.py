"""The GPU paths of training, on a CUDA device: skipped where there is none (CI, the CPU machine).

`benchmarks/gpu_session.sh` runs this file on the GPU machine. Everything else in the suite
runs on the CPU, so these are the tests that see the trainer's CUDA code: data resident on the
device or gathered through pinned memory, bf16 autocast, the vmapped seeds with fused AdamW,
and the masked batch norm's static route (the one CUDA takes when rows are missing).

MMBENCH_CUDA_TESTS_DEVICE=cpu runs the same tests on the CPU (except the pinned-memory one),
to check the tests themselves where no GPU is lent.
"""

import os

import pytest
import torch

from mmbench.training.multiseed import train_seeds
from mmbench.training.trainer import TrainConfig, train

DEVICE = os.environ.get("MMBENCH_CUDA_TESTS_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")

# synthetic MLP models without dropout: CUDA and CPU runs then differ by float rounding only
# (dropout masks come from each device's own generator)
EXACT = dict(task="synthetic-synergy", fusion="concat", epochs=3, batch_size=50, embed_dim=16, hidden_dim=32,
             lr=3e-4, max_grad_norm=0.25, dataset_options={"n_samples": 300}, dropout=0.0,
             fusion_options={"dropout": 0.0}, encoders={"m0": {"dropout": 0.0}, "m1": {"dropout": 0.0}})


def _close_runs(a, b, loss_tol: float, acc_tol: float) -> None:
    assert len(a.history) == len(b.history)
    for ha, hb in zip(a.history, b.history):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=loss_tol)
        assert abs(ha["val"]["accuracy"] - hb["val"]["accuracy"]) <= acc_tol
    assert abs(a.test_metrics["accuracy"] - b.test_metrics["accuracy"]) <= acc_tol


def test_fp32_training_on_the_device_matches_the_cpu():
    on_device = train(TrainConfig(**EXACT, device=DEVICE, precision="fp32"), progress=False)
    on_cpu = train(TrainConfig(**EXACT, device="cpu", precision="fp32"), progress=False)
    _close_runs(on_device, on_cpu, loss_tol=1e-4, acc_tol=0.02)
    assert next(on_device.model.parameters()).device.type == torch.device(DEVICE).type


def test_default_precision_learns():
    # precision "auto": bf16 autocast on CUDA; the synthetic task is learnable well above chance
    # (8 epochs on the CPU: 0.825 concat, 0.812 attention, fp32 and bf16 alike)
    cfg = TrainConfig(task="synthetic-synergy", fusion="attention", epochs=8, device=DEVICE)
    result = train(cfg, progress=False)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    assert result.test_metrics["accuracy"] > 0.75  # chance is 0.5


@pytest.mark.skipif(DEVICE != "cuda", reason="pinned memory needs CUDA")
def test_pinned_memory_gathering_equals_device_resident_data(monkeypatch):
    # data that does not fit on the device is gathered per batch into pinned host memory
    cfg = TrainConfig(**EXACT, device=DEVICE, precision="fp32")
    resident = train(cfg, progress=False)
    free, total = torch.cuda.mem_get_info()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (0, total))  # "no room": the pinned path
    pinned = train(cfg, progress=False)
    assert [h["train_loss"] for h in pinned.history] == [h["train_loss"] for h in resident.history]
    assert pinned.test_metrics == resident.test_metrics


def test_vmapped_seeds_on_the_device_match_one_by_one():
    cfg = TrainConfig(**EXACT, device=DEVICE, precision="fp32")
    seeds = [0, 3]
    vec = train_seeds(cfg, seeds, vectorize=True)
    for s, v in zip(seeds, vec):
        one = train(TrainConfig(**{**cfg.to_dict(), "seed": s}), progress=False)
        assert v.best_epoch == one.best_epoch
        _close_runs(v, one, loss_tol=1e-4, acc_tol=0.01)


def test_masked_batch_norm_on_the_device_matches_the_present_rows():
    # with rows missing, CUDA takes the static masked route; its values equal batch norm over
    # the present rows alone (computed on the CPU), and the running statistics move the same
    from mmbench.models.encoders.cnn import MaskedBatchNorm2d

    torch.manual_seed(0)
    x = torch.randn(12, 4, 5, 5)
    present = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    x[~present] = 1e6  # a fill that must not reach anything
    bn = MaskedBatchNorm2d(4).to(DEVICE).train()
    ref = torch.nn.BatchNorm2d(4).train()
    xd = x.clone().to(DEVICE).requires_grad_(True)
    xr = x[present].clone().requires_grad_(True)
    out, want = bn(xd, present.to(DEVICE)), ref(xr)
    torch.testing.assert_close(out[present.to(DEVICE)].cpu(), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bn.running_mean.cpu(), ref.running_mean, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bn.running_var.cpu(), ref.running_var, rtol=1e-4, atol=1e-4)
    w = torch.randn(want.shape)  # a random projection: the sum of squares of a normalised output is constant
    (out[present.to(DEVICE)] * w.to(DEVICE)).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(xd.grad[present.to(DEVICE)].cpu(), xr.grad, rtol=1e-3, atol=1e-3)
    assert torch.all(xd.grad[~present.to(DEVICE)] == 0)


def test_batch_norm_cnns_train_with_modality_dropout():
    # the AV-MNIST baselines' encoders with missing rows in every batch: finite, and the
    # batch-norm statistics recalibrated before each validation
    from tests.test_cnn_norm import _image_splits

    enc = {"channels": 8, "blocks": 2, "norm": "batch"}
    cfg = TrainConfig(task="avmnist", fusion="concat", epochs=2, batch_size=40, embed_dim=16, hidden_dim=16,
                      device=DEVICE, modality_dropout=0.3, bn_recalibration=80, encoders={"image": enc, "audio": dict(enc)})
    for vectorize in (False, True):
        results = train_seeds(cfg, [0, 1], splits=_image_splits(), vectorize=vectorize)
        for r in results:
            assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in r.history)
            state = r.model.state_dict()
            assert all(torch.isfinite(v.float()).all() for k, v in state.items() if "running" in k)


def test_vmapped_batch_norm_seeds_on_the_device_match_one_by_one():
    # issue 29: the vmapped step's batch norm hands its running statistics back (functional);
    # on the device the seeds still follow their one-by-one runs, the statistics included
    from tests.test_multiseed import _image_splits, bn_config, vectorised_matches_one_by_one

    vectorised_matches_one_by_one(bn_config(device=DEVICE, precision="fp32"), [0, 2], _image_splits())


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need CUDA")
def test_compiled_vmapped_step_runs_in_cuda_graphs():
    # the step `train_seeds` compiles by default on CUDA: inductor with CUDA graphs, which it
    # skips for a graph that mutates its inputs (the in-place batch norm before issue 29)
    from torch._dynamo.utils import counters

    from mmbench.training.multiseed import StackedModels
    from tests.test_multiseed import _bn_models, _per_seed_batches

    models, split = _bn_models(k=3, missing=True)
    stacked = StackedModels([m.to(DEVICE) for m in models], DEVICE).train()
    _, mods, present, lengths, targets = (x if not isinstance(x, dict) else {k: v.to(DEVICE) for k, v in x.items()}
                                          for x in _per_seed_batches(split, 3))
    targets = targets.to(DEVICE)
    loss = lambda out, y: torch.nn.functional.cross_entropy(out.float(), y.long())  # noqa: E731
    step = stacked.loss_step(loss)
    want_losses, want_new = step(stacked.params, stacked.buffers, mods, present, lengths, targets)
    for t in (*stacked.params.values(), *stacked.buffers.values()):
        torch._dynamo.mark_static_address(t)
    compiled = torch.compile(step, mode="reduce-overhead")
    skips = counters["inductor"]["cudagraph_skips"]
    for _ in range(3):  # recorded, then replayed
        losses, new = compiled(stacked.params, stacked.buffers, mods, present, lengths, targets)
        got_losses, got_new = losses.detach().clone(), {n: t.clone() for n, t in new.items()}
        losses.sum().backward()
    assert counters["inductor"]["cudagraph_skips"] == skips
    torch.testing.assert_close(got_losses, want_losses.detach(), rtol=1e-4, atol=1e-5)
    for name, t in want_new.items():
        torch.testing.assert_close(got_new[name], t, rtol=1e-4, atol=1e-5)
