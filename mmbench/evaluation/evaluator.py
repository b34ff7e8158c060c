"""Run a model over a split under the task's missing-modality conditions and score it."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mmbench.data import Split
from mmbench.masks import Condition, condition_masks
from mmbench.metrics import compute_metrics
from mmbench.tasks import TaskSpec


@torch.no_grad()
def predict(model: nn.Module, split: Split, device: torch.device | str = "cpu", batch_size: int = 1024,
            autocast_dtype: torch.dtype | None = None) -> Tensor:
    """Raw model outputs for every row of `split`, in order, as float32 on the CPU."""
    model.eval()
    device = torch.device(device)
    data = split if split.targets.device == device else split.to(device)
    outs = []
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data)), device=device)
        b = data.batch(index)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(b.modalities, b.present, b.lengths)
        outs.append(out.float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def uses_scores(spec: TaskSpec) -> bool:
    """A binary task with a score-based metric (auroc): its predictions are label-1 scores."""
    from mmbench.metrics import METRICS

    return spec.target.type == "binary" and any(METRICS[m.name].needs_scores for m in spec.metrics)


def outputs_to_predictions(outputs: Tensor, target: str | TaskSpec) -> np.ndarray:
    """Class labels (argmax of logits), real values (regression), label probabilities
    ``[N, C]`` (multilabel: sigmoid of the logits), or, for a task given as a spec that
    :func:`uses_scores`, the softmax probability of label 1."""
    target_type = target if isinstance(target, str) else target.target.type
    if target_type == "regression":
        return outputs.reshape(len(outputs), -1)[:, 0].numpy().astype(np.float64)
    if target_type == "multilabel":
        return torch.sigmoid(outputs.float()).numpy().astype(np.float64)
    if not isinstance(target, str) and uses_scores(target):
        return torch.softmax(outputs.float(), -1)[:, 1].numpy().astype(np.float64)
    return outputs.argmax(-1).numpy().astype(np.int64)


def predicted_labels(spec: TaskSpec, y_pred: np.ndarray) -> np.ndarray:
    """Labels from predictions: label-1 scores above 0.5 for a task that :func:`uses_scores`
    (what the argmax of two softmax outputs gives), else the predictions themselves."""
    return (np.asarray(y_pred) > 0.5).astype(np.int64) if uses_scores(spec) else y_pred


def score(spec: TaskSpec, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The task's metrics (those listed in the spec) for one set of predictions."""
    scores = y_pred if uses_scores(spec) else None
    allm = compute_metrics(spec.target.type, y_true, predicted_labels(spec, y_pred), spec.target.num_classes, scores=scores)
    return {m.name: float(allm[m.name]) for m in spec.metrics}


def apply_condition(split: Split, condition: Condition, seed: int) -> Split:
    masks = condition_masks(condition, split.ids, split.modality_names, seed=seed, split=split.name)
    return split.with_present({m: torch.from_numpy(v) for m, v in masks.items()})


def evaluate_conditions(
    spec: TaskSpec,
    split: Split,
    predict_fn: Callable[[Split], np.ndarray],
    conditions: Sequence[Condition] | None = None,
    seed: int | None = None,
) -> dict[str, dict[str, float]]:
    """{condition name: {metric: value}} for `predict_fn` (Split -> predictions) under each condition."""
    conditions = list(conditions if conditions is not None else spec.conditions())
    seed = spec.missing.seed if seed is None else seed
    y_true = split.targets.cpu().numpy()
    results = {}
    for cond in conditions:
        preds = predict_fn(apply_condition(split, cond, seed))
        results[cond.name] = score(spec, y_true, preds)
    return results


def robustness_summary(per_condition: dict[str, dict[str, float]], metric: str, higher_is_better: bool) -> dict[str, Any]:
    """Drop from clean per condition, and the normalised area under metric-vs-missing-rate
    (trapezoid over the rates evaluated, with clean as rate 0, divided by the rate span)."""
    out: dict[str, Any] = {"metric": metric}
    clean = per_condition.get("clean", {}).get(metric)
    if clean is not None:
        sign = 1.0 if higher_is_better else -1.0
        out["drop_from_clean"] = {c: sign * (clean - v[metric]) for c, v in per_condition.items() if c != "clean"}
        worst = max(out["drop_from_clean"].values(), default=0.0)
        out["worst_drop"] = worst
    rates = sorted((float(c.split(":")[1]), v[metric]) for c, v in per_condition.items() if c.startswith("rate:"))
    if clean is not None and not any(r == 0.0 for r, _ in rates):
        rates = [(0.0, clean)] + rates
    if len(rates) >= 2:
        xs = np.array([r for r, _ in rates])
        ys = np.array([v for _, v in rates])
        out["auc_rate"] = float(np.trapezoid(ys, xs) / (xs[-1] - xs[0]))
        out["rates"] = {f"{r:g}": v for r, v in rates}
    return out
