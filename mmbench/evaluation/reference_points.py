"""Two named reference points per task, so that "near chance" always says which chance it means.

- **chance**: the expected score of a *uniform guess*, a prediction drawn uniformly and
  independently of the item. It is computed exactly from the test labels: every test item is
  paired once with every value the guess can take (the expected confusion matrix, scaled), and
  the task's own metric is computed on those pairs. For accuracy with C classes this is 1/C;
  for MOSI's Acc-2 0.5; for F1 it is the F1 of the expected confusion matrix (each true class
  spread evenly over the C predicted classes), the usual "expected agreement" of Cohen's kappa
  (Cohen 1960), not the mean of F1 over random draws (they differ by O(1/n)). What the guess
  ranges over, per metric: the classes (classification); for the sentiment-regression metrics
  the two signs (Acc-2, F1), the 7 or 5 rounded values (Acc-7, Acc-5), and the target range
  (MAE: ``E|y - U|`` for ``U ~ Uniform[a, b]`` is ``((y-a)^2 + (b-y)^2) / (2 (b-a))``; Pearson's
  r: 0); AUROC 0.5.
- **majority**: the *training* split's majority class, predicted for every test item, scored
  on the test labels. For the regression metrics the "class" is the metric's own: the training
  majority sign (Acc-2 and F1, non-zero or has-zero as the metric counts), the training mode of
  the rounded values (Acc-7, Acc-5), the training median (MAE; Pearson's r of a constant is 0).
  This is the honest "predict the prior" baseline: on MOSI the training split is mostly positive
  while the test split is 57.8% negative, so the majority baseline scores 0.422 on Acc-2 -- below
  the uniform guess. The test split's balance (:func:`split_balance`) is shown beside it.

Entries carry what the board needs without the data: ``extra.test_items`` (the test targets) and
``extra.training_majority`` (:func:`training_majority`: the constant per metric and the training
share of its class), written by ``reproduce`` (any entry of a task lends it to the others) and
added to an existing board by ``mmbench leaderboard majority``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mmbench.evaluation.metrics import compute_metrics

# the values a uniform guess takes for each sentiment-regression metric (MMSA's classes)
_SIGNS = (-1.0, 1.0)
_GUESSES = {"acc2_non0": _SIGNS, "acc2_has0": _SIGNS, "f1_non0": _SIGNS, "f1_has0": _SIGNS,
            "acc7": tuple(float(v) for v in range(-3, 4)), "acc5": tuple(float(v) for v in range(-2, 3))}


def _metric(target_type: str, metric: str, y: np.ndarray, pred: np.ndarray, num_classes: int | None,
            scores: Any = None) -> float | None:
    try:
        value = compute_metrics(target_type, y, pred, num_classes, scores=scores).get(metric)
    except (KeyError, ValueError):
        return None
    return None if value is None or not np.isfinite(value) else float(value)


def chance_value(target_type: str, metric: str, targets: Sequence[Any], num_classes: int | None = None,
                 value_range: Sequence[float] | None = None) -> float | None:
    """The uniform guess's expected ``metric`` on these test targets (see the module docstring);
    None where no uniform guess is defined (multi-label, retrieval, an unknown metric)."""
    y = np.asarray(targets)
    if y.size == 0:
        return None
    if target_type in ("multiclass", "binary"):
        c = int(num_classes or (2 if target_type == "binary" else 0))
        if c < 1:
            return None
        if metric == "auroc":
            return 0.5
        guesses = np.arange(c)
        return _metric(target_type, metric, np.repeat(y, c), np.tile(guesses, len(y)), c)
    if target_type == "regression":
        y = y.astype(np.float64)
        if metric == "corr":
            return 0.0
        if metric == "mae":
            if not value_range or len(value_range) != 2 or not value_range[1] > value_range[0]:
                return None
            a, b = float(value_range[0]), float(value_range[1])
            yc = np.clip(y, a, b)  # beyond the range, add the distance to it
            return float(np.mean(((yc - a) ** 2 + (b - yc) ** 2) / (2 * (b - a)) + np.abs(y - yc)))
        guesses = _GUESSES.get(metric)
        if guesses is None:
            return None
        g = np.asarray(guesses)
        return _metric(target_type, metric, np.repeat(y, len(g)), np.tile(g, len(y)), None)
    return None


def _mode(values: np.ndarray) -> tuple[float, float]:
    """(the most frequent value, smallest first among ties; its share)."""
    uniq, counts = np.unique(values, return_counts=True)
    k = int(np.argmax(counts))
    return float(uniq[k]), float(counts[k] / counts.sum())


def training_majority(target_type: str, train_targets: Sequence[Any], metrics: Sequence[str]) -> dict[str, Any]:
    """``{"constant": {metric: prediction}, "share": {metric: training share of its class}, "n":
    training items}``: the training split's majority, per metric (see the module docstring).
    Stored as an entry's ``extra.training_majority``."""
    y = np.asarray(train_targets)
    constant: dict[str, float] = {}
    share: dict[str, float] = {}
    if target_type in ("multiclass", "binary"):
        value, frac = _mode(y.astype(np.int64))
        constant = {m: value for m in metrics}
        share = {m: frac for m in metrics}
    elif target_type == "regression":
        y = y.astype(np.float64)
        for m in metrics:
            if m in ("acc2_non0", "f1_non0"):
                nz = y[y != 0]
                pos = float(np.mean(nz > 0)) if nz.size else 0.5
                constant[m], share[m] = (1.0, pos) if pos > 0.5 else (-1.0, 1.0 - pos)
            elif m in ("acc2_has0", "f1_has0"):
                nonneg = float(np.mean(y >= 0))
                constant[m], share[m] = (1.0, nonneg) if nonneg >= 0.5 else (-1.0, 1.0 - nonneg)
            elif m in ("acc7", "acc5"):
                bound = 3.0 if m == "acc7" else 2.0
                constant[m], share[m] = _mode(np.round(np.clip(y, -bound, bound)))
            elif m in ("mae", "corr"):
                constant[m] = float(np.median(y))
    return {"constant": constant, "share": share, "n": int(len(y))}


def with_training_majority(result: Any, spec: Any, train_targets: Any) -> Any:
    """``result`` with ``extra.training_majority`` of the task's metrics on these training
    targets (a tensor or an array); unchanged for a target type without classes to count
    (retrieval, multi-label) or when it is already there."""
    if spec.target.type not in ("multiclass", "binary", "regression") or "training_majority" in result.extra:
        return result
    y = train_targets.cpu().numpy() if hasattr(train_targets, "cpu") else np.asarray(train_targets)
    majority = training_majority(spec.target.type, y, [m.name for m in spec.metrics])
    return result.model_copy(update={"extra": {**result.extra, "training_majority": majority}})


def majority_value(target_type: str, metric: str, targets: Sequence[Any], majority: dict[str, Any] | None,
                   num_classes: int | None = None) -> float | None:
    """The test score of predicting the training majority's constant for every test item."""
    if not majority or metric not in majority.get("constant", {}):
        return None
    y = np.asarray(targets)
    const = majority["constant"][metric]
    if target_type in ("multiclass", "binary"):
        pred = np.full(len(y), int(const), dtype=np.int64)
        scores = np.full(len(y), 1.0 if int(const) == 1 else 0.0) if metric == "auroc" else None
        return _metric(target_type, metric, y.astype(np.int64), pred, num_classes, scores)
    return _metric(target_type, metric, y.astype(np.float64), np.full(len(y), float(const)), num_classes)


def class_name(target_type: str, metric: str, value: float) -> str:
    """How a constant reads on the page: ``positive``/``negative`` for a sign, ``class 3``."""
    if target_type == "regression" and metric in ("acc2_non0", "f1_non0"):
        return "positive" if value > 0 else "negative"
    if target_type == "regression" and metric in ("acc2_has0", "f1_has0"):
        return "non-negative" if value >= 0 else "negative"
    if target_type == "regression" and metric in ("mae", "corr"):
        return f"the median {value:g}"
    return f"class {value:g}"


def split_balance(target_type: str, metric: str, targets: Sequence[Any]) -> tuple[str, float] | None:
    """(the test split's largest class under ``metric``'s classes, its share): e.g. MOSI's
    Acc-2 ``("negative", 0.578)``; None for a metric without classes (MAE, r)."""
    y = np.asarray(targets)
    if y.size == 0:
        return None
    if target_type in ("multiclass", "binary"):
        value, frac = _mode(y.astype(np.int64))
        return class_name(target_type, metric, value), frac
    if target_type != "regression":
        return None
    y = y.astype(np.float64)
    if metric in ("acc2_non0", "f1_non0"):
        nz = y[y != 0]
        if not nz.size:
            return None
        value, frac = _mode(np.where(nz > 0, 1.0, -1.0))
    elif metric in ("acc2_has0", "f1_has0"):
        value, frac = _mode(np.where(y >= 0, 1.0, -1.0))
    elif metric in ("acc7", "acc5"):
        bound = 3.0 if metric == "acc7" else 2.0
        value, frac = _mode(np.round(np.clip(y, -bound, bound)))
    else:
        return None
    return class_name(target_type, metric, value), frac


@dataclass(frozen=True)
class ReferencePoints:
    """A task's two reference points on one metric (None where not defined or not stored)."""

    metric: str
    chance: float | None
    majority: float | None
    majority_class: str | None = None
    majority_train_share: float | None = None
    test_class: str | None = None
    test_share: float | None = None

    def chance_phrase(self) -> str:
        """``chance (a uniform guess): acc2_non0 0.500``: how every "near chance" sentence names it."""
        return f"chance (a uniform guess): {self.metric} {self.chance:.3f}" if self.chance is not None else ""

    def majority_phrase(self) -> str:
        if self.majority is None:
            return ""
        cls = f", {self.majority_class}" if self.majority_class else ""
        share = f" ({self.majority_train_share:.1%} of training items)" if self.majority_train_share is not None else ""
        return f"majority (the training split's majority{cls}{share}, predicted for every test item): {self.metric} {self.majority:.3f}"

    def balance_phrase(self) -> str:
        if self.test_share is None:
            return ""
        return f"test balance: {self.test_share:.1%} {self.test_class}"

    def note(self) -> str:
        """One line for a task page: both reference points and the test balance."""
        parts = [p for p in (self.chance_phrase(), self.majority_phrase(), self.balance_phrase()) if p]
        return ("Reference points: " + "; ".join(parts) + ".") if parts else ""

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "chance": self.chance, "majority": self.majority,
                "majority_class": self.majority_class, "majority_train_share": self.majority_train_share,
                "test_class": self.test_class, "test_share": self.test_share}


def reference_points(results: Sequence[Any], metric: str, value_range: Sequence[float] | None = None) -> ReferencePoints | None:
    """The reference points of one task's entries (``results``: its Result records) on ``metric``,
    from the test targets they store (``extra.test_items``) and the training majority they
    store (``extra.training_majority``); None when no entry stores test targets."""
    stored = [r for r in results if (r.extra or {}).get("test_items", {}).get("targets")]
    if not stored:
        return None
    it = stored[0].extra["test_items"]
    tt, nc, y = it["target_type"], it.get("num_classes"), it["targets"]
    majority = next((r.extra["training_majority"] for r in results if (r.extra or {}).get("training_majority")), None)
    maj = majority_value(tt, metric, y, majority, nc)
    const = (majority or {}).get("constant", {}).get(metric)
    balance = split_balance(tt, metric, y)
    return ReferencePoints(metric, chance_value(tt, metric, y, nc, value_range), maj,
                           class_name(tt, metric, const) if maj is not None and const is not None else None,
                           (majority or {}).get("share", {}).get(metric) if maj is not None else None,
                           *(balance or (None, None)))
