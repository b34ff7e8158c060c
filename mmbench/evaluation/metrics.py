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
:class:`mmbench.core.errors.DataError`. torch is imported only by :func:`retrieval_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mmbench.core.errors import DataError

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


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy view/copy of an array-like or a torch tensor (moved to the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged lists and other unreadable inputs
        raise DataError(f"{name}: cannot be read as an array ({exc})") from None
    return arr


def _as_1d(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise DataError(f"{name}: is empty")
    return arr


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


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise in float64, 0.0 where den == 0 (scikit-learn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


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


# --------------------------------------------------------------------------- retrieval


def _check_ks(ks: Any) -> tuple[int, ...]:
    try:
        items = list(ks)
    except TypeError:
        raise DataError(f"ks must be a sequence of positive integers, got {ks!r}") from None
    if not items:
        raise DataError("ks must not be empty")
    out = []
    for k in items:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DataError(f"ks must be positive integers, got {k!r}")
        if int(k) not in out:
            out.append(int(k))
    return tuple(out)


def _embeddings(x: Any, name: str, device: Any, dtype: Any):
    """A 2-D float tensor on `device`, finite, rows L2-normalised (zero rows rejected)."""
    import torch

    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = _to_numpy(x, name)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
            raise DataError(f"{name}: expected real numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array (rows x dimensions), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise DataError(f"{name}: is empty (shape {tuple(t.shape)})")
    if t.is_complex():
        raise DataError(f"{name}: expected real numbers, got {t.dtype}")
    t = t.to(device=device, dtype=dtype)
    norms = torch.linalg.vector_norm(t, dim=1)
    if not bool(torch.isfinite(norms).all()):  # a NaN or inf entry makes its row's norm non-finite
        finite = torch.isfinite(t).all(dim=1)
        if not bool(finite.all()):
            bad = int(torch.nonzero(~finite)[0, 0])
            raise DataError(f"{name}: row {bad} has a non-finite value")
        # finite entries whose squares overflow: scale rows by their largest magnitude first
        t = t / t.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        norms = torch.linalg.vector_norm(t, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        bad = int(torch.nonzero(zero)[0, 0])
        raise DataError(f"{name}: row {bad} is a zero vector (it cannot be L2-normalised)")
    return (t / norms[:, None]).contiguous()


def _matmul_unit_roundoff(dtype) -> float:
    """Unit roundoff of matrix products in `dtype` (float32 ones may run in TF32 or bfloat16)."""
    import torch

    u = torch.finfo(dtype).eps / 2
    if dtype == torch.float32:
        u = {"high": 2.0**-11, "medium": 2.0**-8}.get(torch.get_float32_matmul_precision(), u)
    return u


def _own_score_brackets(cap, img, idx, cs):
    """Per image an interval [lo, hi] meant to contain the best score of its own captions as
    the chunked matrix product will compute it, from a separately computed estimate.

    Any dot product of length d computed in any order with unit roundoff u is within
    gamma_d = d u / (1 - d u) times sum|a_k b_k| (<= about 1 for unit rows) of the exact value;
    the bracket is the estimate +- twice the sum of both computations' bounds. retrieval_metrics
    checks the bracket against the exact scores afterwards, so results never depend on this
    bound, only the speed does. Infinite where the bound is useless (half precision)."""
    import torch

    n_img, d = img.shape
    dtype, device = img.dtype, img.device
    u_out = torch.finfo(dtype).eps / 2
    est_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    u_mm, u_est = _matmul_unit_roundoff(dtype), torch.finfo(est_dtype).eps / 2
    if d * u_mm >= 0.05:
        inf = torch.full((n_img,), float("inf"), dtype=dtype, device=device)
        return -inf, inf
    gamma_mm, gamma_est = d * u_mm / (1 - d * u_mm), d * u_est / (1 - d * u_est)
    err = 2 * (gamma_mm + gamma_est + u_out) + d * torch.finfo(dtype).tiny
    best = torch.full((n_img,), float("-inf"), dtype=est_dtype, device=device)
    for start in range(0, cap.shape[0], cs):
        ic = idx[start : start + cs]
        est = torch.linalg.vecdot(cap[start : start + cs].to(est_dtype), img.index_select(0, ic).to(est_dtype))
        best.scatter_reduce_(0, ic, est, reduce="amax")
    return (best - err).to(dtype), (best + err).to(dtype)


def _count_true(mask, dim: int):
    """Exact number of True values along `dim` (0 or 1) of a 2-D bool tensor, as int32.

    Summing in uint8 over blocks of 255 rows (no overflow) and int16 along rows of at most
    32,767 avoids casting every element to int32 first, which costs several times more."""
    import torch

    v = mask.view(torch.uint8)
    if dim == 1:
        return v.sum(dim=1, dtype=torch.int16 if v.shape[1] <= 32767 else torch.int32).to(torch.int32)
    full = v.shape[0] // 255 * 255
    out = v[full:].sum(dim=0, dtype=torch.uint8).to(torch.int32)
    if full:
        out += v[:full].view(-1, 255, v.shape[1]).sum(dim=1, dtype=torch.uint8).sum(dim=0, dtype=torch.int32)
    return out


def _merge_band(top, s, cols, lo, hi, kmax):
    """Merge the scores of `s` inside [lo, hi] (per column) into the running top-kmax `top`,
    whose columns `cols` (None: all) are the columns of `s`. Overwrites `s` (no chunk-sized copy)."""
    import torch

    out = s < lo
    out |= s > hi
    vals = s.masked_fill_(out, float("-inf"))
    blk = vals.topk(min(kmax, vals.shape[0]), dim=0, sorted=False).values
    if cols is None:
        top.copy_(torch.cat([top, blk]).topk(kmax, dim=0, sorted=False).values)
    else:
        top[:, cols] = torch.cat([top[:, cols], blk]).topk(kmax, dim=0, sorted=False).values


def _retrieval_pass(cap, img_t, idx, lo, hi, kmax, cs, buf, gt, flags, own, t2i_rank, threads):
    """One pass over caption chunks. Fills `own` (own-image scores) and `t2i_rank` in place and
    returns, per image, the number of captions scoring above `hi` and the (up to) kmax largest
    caption scores inside [lo, hi] ((kmax, n_img), -inf where fewer, in any order). `gt`: a bool
    and `flags` (or None) a float32 buffer of a chunk's shape. `threads`: if set, the matrix
    products use that many threads (the caller set one for the rest)."""
    import torch

    n_cap, n_img = cap.shape[0], img_t.shape[1]
    dtype, device = buf.dtype, buf.device
    above = torch.zeros(n_img, dtype=torch.int64, device=device)
    top = torch.full((kmax, n_img), float("-inf"), dtype=dtype, device=device)
    for start in range(0, n_cap, cs):
        stop = min(start + cs, n_cap)
        b = stop - start
        if threads:
            torch.set_num_threads(threads)
        s = torch.matmul(cap[start:stop], img_t, out=buf[:b])        # (b, n_img) scores
        if threads:
            torch.set_num_threads(1)
        ic = idx[start:stop]
        o = s.gather(1, ic[:, None])                                     # own-image scores
        own[start:stop] = o[:, 0]
        # text -> image: rank = number of images scoring strictly higher than the own one
        if flags is not None:  # 0/1 floats: their row sums are exact and cheaper than counting bools
            t2i_rank[start:stop] = torch.gt(s, o, out=flags[:b]).sum(dim=1)
        else:
            t2i_rank[start:stop] = _count_true(torch.gt(s, o, out=gt[:b]), 1)
        # image -> text: per image, the captions scoring >= lo other than its own ones (these
        # are never above hi); usually few images have any, and only those are looked at
        g = torch.ge(s, lo, out=gt[:b])
        n_ge = _count_true(g, 0)
        n_ge.index_add_(0, ic, (o[:, 0] >= lo[ic]).to(torch.int32), alpha=-1)
        cols = n_ge.nonzero().squeeze(1)
        if cols.numel() == 0:
            continue
        if cols.numel() * 8 <= n_img:
            sub = s.index_select(1, cols)
            n_hi = (sub > hi[cols]).sum(dim=0, dtype=torch.int32)
            above.index_add_(0, cols, n_hi.to(torch.int64))
            band = (n_ge[cols] > n_hi).nonzero().squeeze(1)              # others inside [lo, hi]
            if band.numel():
                bc = cols[band]
                _merge_band(top, sub.index_select(1, band), bc, lo[bc], hi[bc], kmax)
            continue
        g = torch.gt(s, hi, out=gt[:b])
        n_hi = _count_true(g, 0)
        above += n_hi
        band = (n_ge > n_hi).nonzero().squeeze(1)
        if band.numel() * 8 <= n_img:
            if band.numel():
                _merge_band(top, s.index_select(1, band), band, lo[band], hi[band], kmax)
        else:
            _merge_band(top, s, None, lo, hi, kmax)
    return above, top


def _retrieval_pass_fixed(cap, img, idx, lo, hi, kmax, cs, buf, mask, own, t2i_rank):
    """:func:`_retrieval_pass` for accelerators: the same results from fixed-shape ops only,
    so no chunk waits for the host (the CPU pass picks the columns to look at with
    ``nonzero``, a device-to-host copy per chunk that stalled a 1M x 1M run on an H200).

    Scores are computed transposed, ``s[i, j] = image_i . caption_j`` of shape (n_img, b),
    so that the per-image reductions run along contiguous rows. Per image, the returned top
    holds the kmax largest scores not above `hi` (not only those inside [lo, hi]): the ones
    below lo are below the image's best own score (the caller checks lo <= best), so they
    never count in its rank. `buf` and `mask` are flat float and bool buffers of at least
    ``n_img * cs`` elements."""
    import torch

    n_cap, n_img = cap.shape[0], img.shape[0]
    above = torch.zeros(n_img, dtype=torch.int64, device=img.device)
    top = torch.full((n_img, kmax), float("-inf"), dtype=img.dtype, device=img.device)
    hi_col = hi[:, None]
    for start in range(0, n_cap, cs):
        stop = min(start + cs, n_cap)
        b = stop - start
        s = torch.matmul(img, cap[start:stop].t(), out=buf[: n_img * b].view(n_img, b))
        m = mask[: n_img * b].view(n_img, b)
        ic = idx[start:stop]
        o = s.gather(0, ic[None, :])                                     # (1, b) own-image scores
        own[start:stop] = o[0]
        t2i_rank[start:stop] = torch.gt(s, o, out=m).sum(dim=0)         # images strictly above the own one
        torch.gt(s, hi_col, out=m)
        above += m.sum(dim=1)
        s.masked_fill_(m, float("-inf"))
        blk = s.topk(min(kmax, b), dim=1, sorted=False).values
        top = torch.cat([top, blk], dim=1).topk(kmax, dim=1, sorted=False).values
    return above, top.t()


def _fixed_shape_passes(device) -> bool:
    """Whether retrieval_metrics runs :func:`_retrieval_pass_fixed` (everywhere but the CPU)."""
    return device.type != "cpu"


_CPU_BLOCK_BYTES = 32 * 2**20  # target size of one block of scores on the CPU
_FLOAT_COUNTS_BELOW = 2**24  # float32 sums of 0/1 flags are exact up to this many images


def retrieval_metrics(
    image_embeddings: Any,
    caption_embeddings: Any,
    caption_image_index: Any,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
    device: Any = None,
    dtype: Any = None,
) -> dict[str, float]:
    """Image-text retrieval recall@k with several captions per image (CLIP_benchmark's COCO metric).

    ``image_embeddings`` (n_images, d) and ``caption_embeddings`` (n_captions, d) are numpy
    arrays or torch tensors; both are L2-normalised here (zero rows are rejected), and the
    score of caption j and image i is the cosine ``s[j, i] = caption_j . image_i``.
    ``caption_image_index[j]`` is the row of caption j's image; every image needs at least
    one caption.

    * ``t2i_recall@k``: over all captions, the share whose own image is among the top-k images
      for that caption.
    * ``i2t_recall@k``: over all images, the share for which at least one of its own captions
      is among the top-k captions for that image, i.e. whose best-scoring own caption is.
    * ``mean_recall``: mean of the six recalls, returned when ``ks`` is (1, 5, 10) in any order.

    Tie rule: the rank of an item is the number of candidates with a *strictly greater* score
    (0 = best), and it is a hit at k when rank < k. Candidates that tie with the item do not
    push it down (optimistic ties). With continuous embeddings ties practically never occur,
    and then this equals CLIP_benchmark's top-k membership; its ``topk`` breaks ties
    arbitrarily instead. Scores are compared exactly as computed (every score comes from the
    same chunked matrix product). Duplicated embeddings tie exactly when the product rounds
    identical rows identically, which BLAS kernels do not guarantee (float64 edge tiles on
    the CPU do not), so such ties can depend on ``chunk_size``.

    Computation is in torch, chunk by chunk over captions: each chunk of ``chunk_size``
    captions is scored against all images, and ranks come from counting strictly greater
    scores, with no sorting. A caption's own score is in its chunk. An image's best own-caption
    score is known exactly only after the last chunk, so an interval around it is computed
    first from the embeddings (a rounding-error bound of the dot products, ~2.4e-4 wide in
    float32 at 512 dimensions): chunks count the scores above the interval, and the few inside
    it (at most ``max(ks)`` per image) are kept and compared with the exact best own score at
    the end. Where the bound is too wide to help (half precision, float32 products in TF32),
    the ``max(ks)`` largest caption scores per image are kept instead; the interval is checked
    against the exact scores, and where it missed, the pass is repeated that way. Extra memory is O(chunk_size * n_images + max(ks) * n_images); the
    full similarity matrix is never formed. On the CPU, chunks are further capped at about
    32 MiB of scores, and only the matrix products use several threads: the memory-bound
    passes over the scores run on one (``torch.set_num_threads`` is restored on return).
    ``device`` (default: that of
    the input tensors, else the CPU) picks where it runs; ``dtype`` defaults to float32 (pass
    torch.float64 for double precision). ``chunk_size`` changes speed and memory, not results
    (up to floating-point rounding of the scores).
    """
    import torch

    ks = _check_ks(ks)
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise DataError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    if device is None:
        device = next((x.device for x in (image_embeddings, caption_embeddings) if isinstance(x, torch.Tensor)),
                      torch.device("cpu"))
    device = torch.device(device)
    dtype = torch.float32 if dtype is None else dtype
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise DataError(f"dtype must be a torch floating dtype, got {dtype!r}")

    img = _embeddings(image_embeddings, "image_embeddings", device, dtype)
    cap = _embeddings(caption_embeddings, "caption_embeddings", device, dtype)
    if img.shape[1] != cap.shape[1]:
        raise DataError(f"image_embeddings and caption_embeddings have different dimensions "
                        f"({img.shape[1]} vs {cap.shape[1]})")
    n_img, n_cap = img.shape[0], cap.shape[0]

    idx_np = _as_1d(caption_image_index, "caption_image_index")
    if idx_np.dtype == np.bool_ or not np.issubdtype(idx_np.dtype, np.integer):
        if np.issubdtype(idx_np.dtype, np.floating) and np.isfinite(idx_np).all() and np.array_equal(np.round(idx_np), idx_np):
            idx_np = idx_np.astype(np.int64)
        else:
            raise DataError(f"caption_image_index: expected integer image rows, got dtype {idx_np.dtype}")
    if len(idx_np) != n_cap:
        raise DataError(f"caption_image_index has {len(idx_np)} entries but there are {n_cap} captions")
    lo, hi = int(idx_np.min()), int(idx_np.max())
    if lo < 0 or hi >= n_img:
        bad_value = lo if lo < 0 else hi
        raise DataError(f"caption_image_index: image row {bad_value} is out of range [0, {n_img})")
    idx_np = idx_np.astype(np.int64, copy=False)
    counts = np.bincount(idx_np, minlength=n_img)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        shown = ", ".join(str(int(i)) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(f"caption_image_index: {len(missing)} image(s) have no caption (rows {shown}); "
                        "image-to-text recall is undefined for them")
    idx = torch.from_numpy(np.ascontiguousarray(idx_np)).to(device)

    kmax = max(ks)
    t2i_rank = torch.empty(n_cap, dtype=torch.int64, device=device)
    own = torch.empty(n_cap, dtype=dtype, device=device)
    cs = min(chunk_size, n_cap)
    threads = torch.get_num_threads()
    serial_passes = False
    if device.type == "cpu":
        # On the CPU, blocks that mostly stay in the last-level cache make the passes over the
        # scores after the matrix product (comparisons, counts, gathers) cheaper ...
        cs = min(cs, max(64, _CPU_BLOCK_BYTES // (n_img * img.element_size())))
        # ... and those passes run on one thread: they are memory-bound, and on a busy
        # machine the thread synchronisation of each small parallel op costs more than it
        # saves. The matrix product keeps all threads; the setting is restored below.
        serial_passes = threads > 1
    fixed = _fixed_shape_passes(device)
    buf = torch.empty((cs, n_img), dtype=dtype, device=device)
    gt = torch.empty((cs, n_img), dtype=torch.bool, device=device)
    flags = (torch.empty((cs, n_img), dtype=torch.float32, device=device)
             if n_img < _FLOAT_COUNTS_BELOW and not fixed else None)
    img_t = img.t()
    with torch.no_grad():
        try:
            if serial_passes:
                torch.set_num_threads(1)
            lo, hi = _own_score_brackets(cap, img, idx, cs)
            for _ in range(2):
                if fixed:
                    above, top = _retrieval_pass_fixed(cap, img, idx, lo, hi, kmax, cs, buf.view(-1), gt.view(-1), own,
                                                       t2i_rank)
                else:
                    above, top = _retrieval_pass(cap, img_t, idx, lo, hi, kmax, cs, buf, gt, flags, own, t2i_rank,
                                                 threads if serial_passes else None)
                # best own-caption score of every image, exactly as the product computed it
                best = torch.full((n_img,), float("-inf"), dtype=dtype, device=device)
                best = best.scatter_reduce(0, idx, own, reduce="amax", include_self=True)
                if bool(((lo <= best) & (best <= hi)).all()):
                    break
                # the rounding bound did not hold (an unusual matmul backend): an infinite
                # bracket keeps the kmax largest of all scores instead, which is always exact
                lo = torch.full_like(lo, float("-inf"))
                hi = torch.full_like(hi, float("inf"))
        finally:
            if serial_passes:
                torch.set_num_threads(threads)
        # rank of the best own caption: captions above hi, plus those inside the bracket above
        # it (the kmax largest suffice: ranks are only compared with ks)
        i2t_rank = above + (top > best[None, :]).sum(dim=0)

    out: dict[str, float] = {}
    for k in ks:
        out[f"t2i_recall@{k}"] = float((t2i_rank < k).double().mean())
    for k in ks:
        out[f"i2t_recall@{k}"] = float((i2t_rank < k).double().mean())
    if sorted(ks) == [1, 5, 10]:
        six = [out[f"{d}_recall@{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10)]
        out["mean_recall"] = float(np.mean(six))
    return out


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
