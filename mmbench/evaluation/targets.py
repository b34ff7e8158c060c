"""What a task's predictions are: class labels, real values, or (a binary task scored by a
score-based metric such as AUROC) label-1 scores. Shared by the scoring and the predictions
tables, which import nothing else of each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mmbench.data.tasks import TaskSpec


def uses_scores(spec: TaskSpec) -> bool:
    """A binary task with a score-based metric (auroc): its predictions are label-1 scores."""
    from mmbench.evaluation.metrics import METRICS

    return spec.target.type == "binary" and any(METRICS[m.name].needs_scores for m in spec.metrics)


def predicted_labels(spec: TaskSpec, y_pred: np.ndarray) -> np.ndarray:
    """Labels from predictions: label-1 scores above 0.5 for a task that :func:`uses_scores`
    (what the argmax of two softmax outputs gives), else the predictions themselves."""
    return (np.asarray(y_pred) > 0.5).astype(np.int64) if uses_scores(spec) else y_pred
