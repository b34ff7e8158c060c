"""Run a model over a split under the task's missing-modality conditions and score it."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mmbench.data.samples import Split
from mmbench.data.masks import Condition, condition_masks
from mmbench.evaluation.scoring import predicted_labels, robustness_summary, score, uses_scores  # noqa: F401 - re-exported
from mmbench.data.tasks import TaskSpec


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


def apply_condition(split: Split, condition: Condition, seed: int) -> Split:
    masks = condition_masks(condition, split.ids, split.modality_names, seed=seed, split=split.name)
    return split.with_present({m: torch.from_numpy(v) for m, v in masks.items()})


def evaluate_conditions(
    spec: TaskSpec,
    split: Split,
    predict_fn: Callable[[Split], np.ndarray],
    conditions: Sequence[Condition] | None = None,
    seed: int | None = None,
    keep_predictions: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """{condition name: {metric: value}} for `predict_fn` (Split -> predictions) under each
    condition; `keep_predictions`, when given, receives each condition's predictions."""
    conditions = list(conditions if conditions is not None else spec.conditions())
    seed = spec.missing.seed if seed is None else seed
    y_true = split.targets.cpu().numpy()
    results = {}
    for cond in conditions:
        preds = predict_fn(apply_condition(split, cond, seed))
        results[cond.name] = score(spec, y_true, preds)
        if keep_predictions is not None:
            keep_predictions[cond.name] = preds
    return results

