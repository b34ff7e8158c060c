"""Metric definitions for mmbench: pure functions, each definition stated in its docstring.

Conventions follow the projects users compare against (see the repository's REFERENCE.md):

* classification: scikit-learn's ``precision_recall_fscore_support`` with
  ``labels=range(num_classes)`` and ``zero_division=0``, computed from one confusion matrix;
* CMU-MOSI / MOSEI regression: MMSA's ``metricsTop.py`` (Has0 / Non0 Acc-2 and weighted F1,
  Acc-7, Acc-5, MAE, Pearson correlation);
* image-text retrieval: LAION CLIP_benchmark's ``zeroshot_retrieval.py`` recall@k with several
  captions per image, with an explicit tie rule;
* seeded percentile bootstrap confidence intervals.

Bad input (mismatched lengths, empty arrays, non-finite values, labels out of range) raises
:class:`mmbench.core.errors.DataError`. Retrieval recall@k lives in
:mod:`mmbench.evaluation.retrieval` (re-exported here); torch is imported only by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mmbench.core.errors import DataError
from mmbench.evaluation.arrays import as_1d as _as_1d
from mmbench.evaluation.arrays import divide as _divide
from mmbench.evaluation.arrays import to_numpy as _to_numpy
from mmbench.evaluation.retrieval import retrieval_metrics  # noqa: F401 - re-exported (its home: evaluation.retrieval)

__all__ = [
    "METRICS",
    "MetricInfo",
    "bootstrap_ci",
    "classification_metrics",
    "compute_metrics",
    "confusion_matrix",
    "metric_names",
    "binary_score_metrics",
    "mosi_metrics",
    "multilabel_metrics",
    "per_class_metrics",
    "retrieval_metrics",
]

TargetType = Literal["multiclass", "binary", "regression", "retrieval", "multilabel"]


# --------------------------------------------------------------------------- input checks


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if len(a) != len(b):
        raise DataError(f"{na} and {nb} have different lengths ({len(a)} vs {len(b)})")


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        raise DataError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def _labels(x: Any, name: str, num_classes: int) -> np.ndarray:
    """Integer class labels in [0, num_classes) as int64 (integral floats and bools accepted)."""
    arr = _as_1d(x, name)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            bad = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise DataError(f"{name}: non-finite value {arr[bad]} at index {bad}")
        rounded = np.round(arr)
        if not np.array_equal(rounded, arr):
            bad = int(np.flatnonzero(rounded != arr)[0])
            raise DataError(f"{name}: class labels must be integers, got {arr[bad]} at index {bad}")
        arr = rounded.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.dtype != np.int64:
            if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
                raise DataError(f"{name}: label {arr.max()} out of range [0, {num_classes})")
            arr = arr.astype(np.int64)
    else:
        raise DataError(f"{name}: class labels must be integers, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        bad_value = lo if lo < 0 else hi
        bad = int(np.flatnonzero(arr == bad_value)[0])
        raise DataError(f"{name}: label {bad_value} at index {bad} is out of range [0, {num_classes})")
    return arr


def _reals(x: Any, name: str) -> np.ndarray:
    """Finite real values as float64."""
    arr = _as_1d(x, name)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise DataError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise DataError(f"{name}: non-finite value {arr[bad]} at index {bad}")
    return arr


# --------------------------------------------------------------------------- classification


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Confusion matrix ``M`` of shape (num_classes, num_classes), dtype int64.

    ``M[t, p]`` = number of samples whose true label is ``t`` and predicted label is ``p``
    (rows = true class, columns = predicted class; the layout of
    ``sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(num_classes))``).
    Labels must be integers in ``[0, num_classes)``. Computed with one ``np.bincount`` over
    ``y_true * num_classes + y_pred``.
    """
    c = _check_num_classes(num_classes)
    t = _labels(y_true, "y_true", c)
    p = _labels(y_pred, "y_pred", c)
    _same_length(t, p, "y_true", "y_pred")
    return _confusion(t, p, c)


def _confusion(t: np.ndarray, p: np.ndarray, c: int) -> np.ndarray:
    key = t * c  # int64 (labels are validated to [0, c), so no overflow)
    key += p
    return np.bincount(key, minlength=c * c).astype(np.int64, copy=False).reshape(c, c)


def _prf_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (zero_division=0)."""
    tp = np.diag(cm).astype(np.int64)
    pred_sum = cm.sum(axis=0)
    true_sum = cm.sum(axis=1)
    precision = _divide(tp, pred_sum)
    recall = _divide(tp, true_sum)
    # F1 as scikit-learn computes it: 2 tp / (true + pred), 0 when the class is absent
    # from both y_true and y_pred.
    f1 = _divide(2.0 * tp, true_sum.astype(np.float64) + pred_sum.astype(np.float64))
    return {"precision": precision, "recall": recall, "f1": f1, "support": true_sum}


def per_class_metrics(y_true: Any, y_pred: Any, num_classes: int) -> dict[str, list]:
    """Per-class precision, recall, F1 and support, one entry per class 0..num_classes-1.

    With ``tp_c`` = correct predictions of class c, ``pred_c`` = predictions of class c and
    ``true_c`` = samples of class c (the support):
    precision_c = tp_c / pred_c, recall_c = tp_c / true_c, F1_c = 2 tp_c / (true_c + pred_c),
    each 0.0 when its denominator is 0 (scikit-learn's ``zero_division=0``). Keys
    ``precision``, ``recall``, ``f1`` (lists of float) and ``support`` (list of int).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    prf = _prf_from_confusion(cm)
    return {
        "precision": [float(v) for v in prf["precision"]],
        "recall": [float(v) for v in prf["recall"]],
        "f1": [float(v) for v in prf["f1"]],
        "support": [int(v) for v in prf["support"]],
    }


def classification_metrics(y_true: Any, y_pred: Any, num_classes: int, binary: bool = False) -> dict[str, float]:
    """Accuracy and macro / weighted precision, recall and F1 (plus positive-class ones if binary).

    Definitions (identical to scikit-learn's ``precision_recall_fscore_support`` with
    ``labels=range(num_classes)`` and ``zero_division=0``):

    * ``accuracy`` = share of samples with ``y_pred == y_true``;
    * per class c (see :func:`per_class_metrics`): precision, recall and F1, where any 0/0
      is 0.0 -- a class never predicted has precision 0, a class absent from ``y_true`` has
      recall 0, and a class absent from both has F1 0;
    * ``*_macro`` = unweighted mean over **all** ``num_classes`` classes, including classes
      absent from ``y_true`` and/or ``y_pred`` (each such class contributes its 0.0, so macro
      scores drop when a declared class never occurs -- scikit-learn's behaviour when
      ``labels`` is given);
    * ``*_weighted`` = mean over classes weighted by support (classes absent from ``y_true``
      have weight 0);
    * ``binary=True`` (requires ``num_classes == 2``) adds ``precision``, ``recall`` and ``f1``
      of the positive label 1 (scikit-learn's ``average='binary', pos_label=1``).
    """
    c = _check_num_classes(num_classes)
    if binary and c != 2:
        raise DataError(f"binary metrics need num_classes == 2, got {c}")
    cm = confusion_matrix(y_true, y_pred, c)
    prf = _prf_from_confusion(cm)
    n = int(cm.sum())
    support = prf["support"].astype(np.float64)
    out = {"accuracy": float(np.trace(cm)) / n}
    for key in ("precision", "recall", "f1"):
        values = prf[key]
        out[f"{key}_macro"] = float(np.mean(values))
    for key in ("precision", "recall", "f1"):
        values = prf[key]
        out[f"{key}_weighted"] = float(np.sum(values * support) / np.sum(support))
    if binary:
        out["precision"] = float(prf["precision"][1])
        out["recall"] = float(prf["recall"][1])
        out["f1"] = float(prf["f1"][1])
    return out


# --------------------------------------------------------------------------- MOSI / MOSEI


def _binary_weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """scikit-learn's ``f1_score(truth, pred, average='weighted')`` for two boolean arrays.

    F1 of each label (False and True) is 2 tp / (true + pred) (0 when 0/0); the two are
    averaged with weights = the labels' counts in ``truth``.
    """
    n = len(truth)
    tp = int(np.count_nonzero(truth & pred))
    n_true = int(np.count_nonzero(truth))
    n_pred = int(np.count_nonzero(pred))
    tn = n - n_true - n_pred + tp
    f1_pos = _divide(2.0 * tp, float(n_true + n_pred))
    f1_neg = _divide(2.0 * tn, float((n - n_true) + (n - n_pred)))
    return float((f1_neg * (n - n_true) + f1_pos * n_true) / n)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r in float64; 0.0 when either side is constant (r undefined there)."""
    if x.min() == x.max() or y.min() == y.max():
        return 0.0
    xm = x - x.mean()
    ym = y - y.mean()
    den = np.sqrt(np.dot(xm, xm)) * np.sqrt(np.dot(ym, ym))
    if den == 0.0:  # pragma: no cover - only with denormal-scale spreads
        return 0.0
    return float(np.clip(np.dot(xm, ym) / den, -1.0, 1.0))


def mosi_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """CMU-MOSI / MOSEI sentiment-regression metrics, as MMSA's ``metricsTop.py`` defines them.

    ``y_true`` and ``y_pred`` are real sentiment scores (nominally in [-3, 3]).

    * ``acc2_has0`` / ``f1_has0``: all samples, binarised as ``pred >= 0`` vs ``truth >= 0``
      (zero counts as non-negative); accuracy and scikit-learn's *weighted* F1 of that
      binarisation (per-label F1 of False and True weighted by their counts in the truth).
    * ``acc2_non0`` / ``f1_non0``: samples whose truth is exactly 0 are dropped; binarised
      as ``pred > 0`` vs ``truth > 0``; accuracy and weighted F1. NaN when every truth is 0.
    * ``acc7``: share with ``round(clip(pred, -3, 3)) == round(clip(truth, -3, 3))``, numpy's
      rounding (half to even, e.g. 0.5 -> 0, 1.5 -> 2, -2.5 -> -2).
    * ``acc5``: the same with clipping to [-2, 2].
    * ``mae``: mean absolute error.
    * ``corr``: Pearson correlation of pred and truth; 0.0 when either side is constant
      (where Pearson's r is undefined; MMSA would give NaN there).

    Values are not rounded (MMSA rounds to 4 decimals for display).
    """
    t, p = _mosi_inputs(y_true, y_pred)
    return {name: fn(t, p) for name, fn in MOSI_METRIC_FNS.items()}


def _mosi_inputs(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _reals(y_true, "y_true")
    p = _reals(y_pred, "y_pred")
    _same_length(t, p, "y_true", "y_pred")
    return t, p


def _acc2_non0(t: np.ndarray, p: np.ndarray) -> float:
    nz = t != 0
    return float(np.mean((t[nz] > 0) == (p[nz] > 0))) if nz.any() else float("nan")


def _f1_non0(t: np.ndarray, p: np.ndarray) -> float:
    nz = t != 0
    return _binary_weighted_f1(t[nz] > 0, p[nz] > 0) if nz.any() else float("nan")


# mosi_metrics' definitions, one function each, so that one of them can be computed alone
MOSI_METRIC_FNS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "acc2_has0": lambda t, p: float(np.mean((t >= 0) == (p >= 0))),
    "f1_has0": lambda t, p: _binary_weighted_f1(t >= 0, p >= 0),
    "acc2_non0": _acc2_non0,
    "f1_non0": _f1_non0,
    "acc7": lambda t, p: float(np.mean(np.round(np.clip(p, -3.0, 3.0)) == np.round(np.clip(t, -3.0, 3.0)))),
    "acc5": lambda t, p: float(np.mean(np.round(np.clip(p, -2.0, 2.0)) == np.round(np.clip(t, -2.0, 2.0)))),
    "mae": lambda t, p: float(np.mean(np.abs(p - t))),
    "corr": lambda t, p: _pearson(p, t),
}


def single_metric(target_type: str, name: str, y_true: Any, y_pred: Any, num_classes: int | None = None,
                  scores: Any = None) -> float:
    """``compute_metrics(...)[name]``, computing only that metric where it can be computed
    alone (the sentiment-regression metrics): the bootstrap evaluates one metric on 1,000
    resamples, and MOSI's eight metrics together cost eight times one."""
    if target_type == "regression" and name in MOSI_METRIC_FNS:
        return MOSI_METRIC_FNS[name](*_mosi_inputs(y_true, y_pred))
    return float(compute_metrics(target_type, y_true, y_pred, num_classes, scores=scores)[name])


# --------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    metric_fn: Callable[..., float],
    arrays: Sequence[Any],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Seeded percentile-bootstrap confidence interval of ``metric_fn(*arrays)``.

    ``arrays`` is a tuple of arrays aligned on axis 0 (e.g. ``(y_true, y_pred)``; a single
    array is accepted too). Each of ``n_resamples`` resamples draws n row indices with
    replacement from ``np.random.default_rng(seed)`` (the same index set for every array) and
    evaluates ``metric_fn`` on the resampled arrays, which must return a real number.
    Returns ``low`` / ``high`` = the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the
    resampled values (numpy's linear interpolation), ``mean`` and ``std`` (ddof=1) of them.
    Non-finite resample values (a metric undefined on that resample) are left out; all four
    are NaN if none is finite. The same inputs and seed always give the same numbers.
    """
    if isinstance(arrays, np.ndarray) or hasattr(arrays, "detach"):
        arrays = (arrays,)
    arrs = tuple(_to_numpy(a, f"arrays[{i}]") for i, a in enumerate(arrays))
    if not arrs:
        raise DataError("bootstrap_ci needs at least one array")
    for i, a in enumerate(arrs):
        if a.ndim == 0:
            raise DataError(f"arrays[{i}]: expected an array, got a scalar")
    n = len(arrs[0])
    if n == 0:
        raise DataError("bootstrap_ci: arrays are empty")
    for i, a in enumerate(arrs[1:], start=1):
        if len(a) != n:
            raise DataError(f"bootstrap_ci: arrays[0] and arrays[{i}] have different lengths ({n} vs {len(a)})")
    if isinstance(n_resamples, (bool, np.bool_)) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise DataError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not (0.0 < float(confidence) < 1.0):
        raise DataError(f"confidence must be in (0, 1), got {confidence!r}")

    rng = np.random.default_rng(seed)
    values = np.empty(int(n_resamples), dtype=np.float64)
    for r in range(int(n_resamples)):
        ix = rng.integers(0, n, size=n)
        v = metric_fn(*(a[ix] for a in arrs))
        try:
            values[r] = float(v)
        except (TypeError, ValueError):
            raise DataError(f"bootstrap_ci: metric_fn must return a real number, got {type(v).__name__}") from None
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        nan = float("nan")
        return {"low": nan, "high": nan, "mean": nan, "std": nan}
    alpha = (1.0 - float(confidence)) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return {"low": float(low), "high": float(high), "mean": float(np.mean(finite)), "std": std}


# --------------------------------------------------------------------------- metric table


@dataclass(frozen=True)
class MetricInfo:
    """One metric key: its name, direction, the target type it belongs to, one-line meaning.

    ``target_type`` "multiclass" metrics apply to binary tasks too; "binary" ones
    (``precision``, ``recall``, ``f1`` of label 1) only to binary tasks.
    """

    name: str
    higher_is_better: bool
    target_type: TargetType
    description: str
    also: tuple[str, ...] = ()  # further target types it applies to (accuracy and F1 to multilabel)
    needs_scores: bool = False  # computed from scores, not labels (auroc)


def _table() -> dict[str, MetricInfo]:
    rows: list[tuple[str, bool, TargetType, str]] = [
        ("accuracy", True, "multiclass", "share of samples whose predicted class equals the true class"),
        ("precision_macro", True, "multiclass", "unweighted mean over all classes of per-class precision (0 for never-predicted classes)"),
        ("recall_macro", True, "multiclass", "unweighted mean over all classes of per-class recall (0 for classes absent from the truth)"),
        ("f1_macro", True, "multiclass", "unweighted mean over all classes of per-class F1"),
        ("precision_weighted", True, "multiclass", "per-class precision averaged with weights = class support"),
        ("recall_weighted", True, "multiclass", "per-class recall averaged with weights = class support"),
        ("f1_weighted", True, "multiclass", "per-class F1 averaged with weights = class support"),
        ("precision", True, "binary", "precision of the positive label 1"),
        ("recall", True, "binary", "recall of the positive label 1"),
        ("f1", True, "binary", "F1 of the positive label 1"),
        ("acc2_has0", True, "regression", "binary accuracy of pred >= 0 vs truth >= 0 over all samples (MMSA Has0_acc_2)"),
        ("f1_has0", True, "regression", "weighted F1 of pred >= 0 vs truth >= 0 over all samples (MMSA Has0_F1_score)"),
        ("acc2_non0", True, "regression", "binary accuracy of pred > 0 vs truth > 0, samples with truth 0 dropped (MMSA Non0_acc_2)"),
        ("f1_non0", True, "regression", "weighted F1 of pred > 0 vs truth > 0, samples with truth 0 dropped (MMSA Non0_F1_score)"),
        ("acc7", True, "regression", "share with round(clip(pred, -3, 3)) == round(clip(truth, -3, 3)) (7 sentiment classes)"),
        ("acc5", True, "regression", "share with round(clip(pred, -2, 2)) == round(clip(truth, -2, 2)) (5 sentiment classes)"),
        ("mae", False, "regression", "mean absolute error between prediction and truth"),
        ("corr", True, "regression", "Pearson correlation of prediction and truth (0 when either is constant)"),
    ]
    for k in (1, 5, 10):
        rows.append((f"t2i_recall@{k}", True, "retrieval", f"share of captions whose own image is among the top {k} images"))
    for k in (1, 5, 10):
        rows.append((f"i2t_recall@{k}", True, "retrieval", f"share of images with one of their own captions among the top {k} captions"))
    rows.append(("mean_recall", True, "retrieval", "mean of text-to-image and image-to-text recall at 1, 5 and 10"))
    return {name: MetricInfo(name, hib, tt, desc) for name, hib, tt, desc in rows}


def _multilabel_and_score_table() -> dict[str, MetricInfo]:
    """Multi-label metrics (accuracy and macro / weighted F1 reuse the multiclass names, as
    scikit-learn's functions do) and the score-based AUROC of binary tasks."""
    rows = [
        ("f1_micro", True, "multilabel", "F1 of all (sample, label) decisions pooled: 2 TP / (2 TP + FP + FN)"),
        ("f1_samples", True, "multilabel", "per-sample F1 of the predicted label set, averaged over samples (0 for empty vs empty)"),
        ("hamming_loss", False, "multilabel", "share of (sample, label) decisions that are wrong"),
        ("auroc", True, "binary", "area under the ROC curve of the label-1 score (ties count one half)"),
    ]
    out = {name: MetricInfo(name, hib, tt, desc, needs_scores=name == "auroc") for name, hib, tt, desc in rows}
    base = _table()
    for name in ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro"):
        out[name] = MetricInfo(name, True, "multiclass", base[name].description + " (multi-label: per label; "
                               "accuracy = exact match of the label set)", also=("multilabel",))
    return out


METRICS: dict[str, MetricInfo] = _table() | _multilabel_and_score_table()


def metric_names(target_type: str) -> list[str]:
    """Keys of METRICS that apply to a target type (binary tasks get the multiclass ones too)."""
    if target_type not in ("multiclass", "binary", "regression", "retrieval", "multilabel"):
        raise DataError(f"unknown target type {target_type!r}; expected multiclass, binary, regression, retrieval or multilabel")
    allowed = {"multiclass", "binary"} if target_type == "binary" else {target_type}
    return [name for name, info in METRICS.items() if info.target_type in allowed or target_type in info.also]


def compute_metrics(target_type: str, y_true: Any, y_pred: Any, num_classes: int | None = None,
                    scores: Any = None) -> dict[str, float]:
    """All metrics of a target type for one set of predictions.

    * ``multiclass``: :func:`classification_metrics` (``num_classes`` required);
    * ``binary``: :func:`classification_metrics` with ``binary=True`` (``num_classes`` 2 or None),
      plus :func:`binary_score_metrics` when ``scores`` (of label 1) are given;
    * ``regression``: :func:`mosi_metrics`;
    * ``multilabel``: :func:`multilabel_metrics` (``y_pred`` = 0/1 indicators or scores, ``[N, C]``).

    Retrieval needs embeddings rather than labels: use :func:`retrieval_metrics`.
    """
    if target_type == "multiclass":
        if num_classes is None:
            raise DataError("multiclass metrics need num_classes")
        return classification_metrics(y_true, y_pred, num_classes)
    if target_type == "binary":
        out = classification_metrics(y_true, y_pred, 2 if num_classes is None else num_classes, binary=True)
        return out | (binary_score_metrics(y_true, scores) if scores is not None else {})
    if target_type == "multilabel":
        return multilabel_metrics(y_true, y_pred, num_classes)
    if target_type == "regression":
        return mosi_metrics(y_true, y_pred)
    if target_type == "retrieval":
        raise DataError("retrieval metrics need embeddings: call retrieval_metrics(image_embeddings, "
                        "caption_embeddings, caption_image_index)")
    raise DataError(f"unknown target type {target_type!r}; expected multiclass, binary, regression, retrieval or multilabel")


# --------------------------------------------------------------------------- multi-label, AUROC


def _indicators(x: Any, name: str, num_classes: int | None, threshold: float | None) -> np.ndarray:
    """A 0/1 ``[N, C]`` matrix as bool; with `threshold`, real scores become ``score > threshold``."""
    arr = _to_numpy(x, name)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"{name}: expected a non-empty [N, C] label-indicator matrix, got shape {tuple(arr.shape)}")
    if num_classes is not None and arr.shape[1] != num_classes:
        raise DataError(f"{name}: has {arr.shape[1]} label columns for {num_classes} labels")
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise DataError(f"{name}: expected numbers, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        r, c = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(f"{name}: non-finite value {arr[r, c]} at row {r}, label {c}")
    if threshold is not None and np.issubdtype(arr.dtype, np.floating):
        return arr > threshold
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{name}: indicator values must be 0 or 1, got {arr[r, c]} at row {r}, label {c}")
    return arr.astype(bool)


def multilabel_metrics(y_true: Any, y_pred: Any, num_classes: int | None = None, threshold: float = 0.5) -> dict[str, float]:
    """Multi-label metrics, equal to scikit-learn's with ``zero_division=0``.

    ``y_true`` is a 0/1 ``[N, C]`` indicator matrix; ``y_pred`` the same, or float scores
    (probabilities) ``[N, C]`` that predict label c where ``score > threshold`` (0.5: a sigmoid
    output above one half, i.e. a positive logit). With per-label TP, FP, FN:

    * ``f1_micro`` = 2 sum TP / (2 sum TP + sum FP + sum FN) (``f1_score(average='micro')``);
    * ``f1_macro`` = mean over the C labels of 2 TP / (2 TP + FP + FN), 0 for a label absent
      from truth and prediction; ``f1_weighted`` weights it by each label's true count;
      ``precision_macro`` / ``recall_macro`` likewise;
    * ``f1_samples`` = mean over samples of the F1 of their label sets (0 when both are empty);
    * ``accuracy`` = share of samples whose predicted label set equals the true one (subset
      accuracy, ``accuracy_score``); ``hamming_loss`` = share of wrong (sample, label) cells.
    """
    t = _indicators(y_true, "y_true", num_classes, None)
    p = _indicators(y_pred, "y_pred", t.shape[1], threshold)
    if len(t) != len(p):
        raise DataError(f"y_true and y_pred have different lengths ({len(t)} vs {len(p)})")
    tp = (t & p).sum(0).astype(np.float64)
    true_sum = t.sum(0).astype(np.float64)
    pred_sum = p.sum(0).astype(np.float64)
    f1 = _divide(2 * tp, true_sum + pred_sum)
    support = true_sum.sum()
    per_sample_tp = (t & p).sum(1).astype(np.float64)
    return {
        "accuracy": float((t == p).all(1).mean()),
        "hamming_loss": float((t != p).mean()),
        "f1_micro": float(_divide(2 * tp.sum(), true_sum.sum() + pred_sum.sum())),
        "f1_macro": float(f1.mean()),
        "f1_weighted": float((f1 * true_sum).sum() / support) if support else 0.0,
        "f1_samples": float(_divide(2 * per_sample_tp, t.sum(1) + p.sum(1)).mean()),
        "precision_macro": float(_divide(tp, pred_sum).mean()),
        "recall_macro": float(_divide(tp, true_sum).mean()),
    }


def binary_score_metrics(y_true: Any, scores: Any) -> dict[str, float]:
    """``auroc``: the area under the ROC curve of `scores` for label 1, equal to
    ``sklearn.metrics.roc_auc_score``: the probability that a random positive scores above a
    random negative, ties counting one half (the Mann-Whitney U statistic from average ranks).
    NaN when ``y_true`` holds one class only (the area is undefined; scikit-learn raises)."""
    t = _labels(y_true, "y_true", 2)
    s = _reals(scores, "scores")
    _same_length(t, s, "y_true", "scores")
    pos = int(t.sum())
    neg = len(t) - pos
    if pos == 0 or neg == 0:
        return {"auroc": float("nan")}
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks (1-based) of tied groups
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    u = ranks[t == 1].sum() - pos * (pos + 1) / 2.0
    return {"auroc": float(u / (pos * neg))}
