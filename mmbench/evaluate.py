"""Turn a trained model (or, later, a submission) into a validated `Result`."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from mmbench.data import Split
from mmbench.evaluation.evaluator import apply_condition, evaluate_conditions, outputs_to_predictions, predict, robustness_summary, score
from mmbench.metrics import bootstrap_ci
from mmbench.results import Result, make_result
from mmbench.tasks import TaskSpec


def state_hash(model: nn.Module) -> str:
    """sha256 over the model's parameter names and bytes: identifies the exact weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def primary_ci(spec: TaskSpec, y_true: np.ndarray, y_pred: np.ndarray, seed: int = 0, n_resamples: int = 1000) -> dict[str, float]:
    metric = spec.primary_metric
    return bootstrap_ci(lambda t, p: score(spec, t, p)[metric], (y_true, y_pred), n_resamples=n_resamples, seed=seed)


@torch.no_grad()
def measure_efficiency(model: nn.Module, split: Split, device: torch.device | str, batch_size: int = 64, repeats: int = 5) -> dict[str, Any]:
    """Parameters, FLOPs per sample (torch's FlopCounterMode), median latency per batch, peak GPU memory."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device)
    model.eval()
    b = split.batch(torch.arange(min(batch_size, len(split)))).to(device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(b.modalities, b.present, b.lengths)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(b.modalities, b.present, b.lengths)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    out = {
        "params": int(sum(p.numel() for p in model.parameters())),
        "flops_per_sample": float(counter.get_total_flops() / len(b)),
        "latency_ms_per_batch": float(np.median(times[1:]) * 1000),
        "batch_size": len(b),
        "device": str(device),
    }
    if device.type == "cuda":
        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def evaluate_trained(spec: TaskSpec, trained: Any, test_split: Split, dataset_fingerprint: str, name: str | None = None) -> Result:
    """Score a `TrainResult` on the test split under every condition of the task."""
    model = trained.model
    device = next(model.parameters()).device
    run = lambda s: outputs_to_predictions(predict(model, s, device), spec.target.type)  # noqa: E731
    per_condition = evaluate_conditions(spec, test_split, run)
    clean = apply_condition(test_split, next(c for c in spec.conditions() if c.name == "clean"), spec.missing.seed) \
        if "clean" in per_condition else test_split
    ci = {"clean": {spec.primary_metric: primary_ci(spec, test_split.targets.cpu().numpy(), run(clean), seed=trained.config.seed)}}
    return make_result(
        task=spec.name,
        name=name or trained.config.fusion,
        kind="baseline",
        fusion=trained.config.fusion,
        seed=trained.config.seed,
        primary_metric=spec.primary_metric,
        higher_is_better=spec.primary.higher_is_better,
        metrics=per_condition,
        confidence_intervals=ci,
        robustness=robustness_summary(per_condition, spec.primary_metric, spec.primary.higher_is_better),
        efficiency=measure_efficiency(model, test_split, device),
        dataset_fingerprint=dataset_fingerprint,
        submission_hash=state_hash(model),
        device=str(device),
        extra={"best_epoch": trained.best_epoch, "validation": trained.val_metrics, "train_seconds": trained.seconds},
    )
