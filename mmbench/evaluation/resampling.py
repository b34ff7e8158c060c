"""Vectorised bootstrap of a metric over test items, and the two-level (items x seeds) resample.

An item resample is a row of counts ``W[b, i]`` (how often item ``i`` was drawn in resample
``b``; each row sums to n). Every metric the board ranks by is a function of a few weighted
sums over the items (``W @ indicator`` or ``W @ value``), so the metric of every seed of
every entry on a block of resamples is a handful of matrix products: no Python loop per
resample. :func:`resampled_metric` does this for accuracy and the confusion-based
classification metrics (precision / recall / F1, macro, weighted and of label 1), AUROC from
label-1 scores (a weighted Mann-Whitney U over the sorted scores), the multi-label metrics
(subset accuracy, Hamming loss, micro / macro / weighted / per-sample F1, macro precision and
recall), and for the
sentiment-regression metrics (Acc-2 has0 / non0, F1 has0 / non0, Acc-7, Acc-5, MAE,
Pearson's r) and image-text retrieval recall@k (the items are images, each with its captions:
:func:`retrieval_cluster_arrays`); each equals :func:`mmbench.evaluation.metrics.compute_metrics` on the resampled
arrays (tests/test_significance.py). Any other metric falls back to one call per resample.

:func:`two_level_values` is the resampling scheme of :mod:`mmbench.evaluation.significance`:
each resample draws the test items with replacement, the same draw for every entry (paired),
and draws each entry's seeds with replacement, independently per entry; the entry's value on
the resample is the mean, over its drawn seeds, of the metric on the drawn items.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from mmbench.evaluation.arrays import divide as _div

# classification metrics computed from per-class (tp, predicted, true) counts
_PRF = {f"{k}_{avg}" for k in ("precision", "recall", "f1") for avg in ("macro", "weighted")} | {"precision", "recall", "f1"}
_MULTILABEL = {"accuracy", "hamming_loss", "f1_micro", "f1_macro", "f1_weighted", "f1_samples", "precision_macro",
               "recall_macro"}
_REGRESSION = {"acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5", "mae", "corr"}
BLOCK_CELLS = 4_000_000  # item-count cells per block of resamples (bounds memory: ~16 MB per block)


def item_weights(n: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of item-count rows ``[b, n]`` (float32; each row sums to n), ``n_resamples`` rows
    in all, drawn with replacement from `rng` (blocks of a fixed size: deterministic)."""
    block = max(1, min(n_resamples, BLOCK_CELLS // max(n, 1)))
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        idx += (np.arange(b, dtype=idx.dtype) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float32)


def _sums(w: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``w @ columns`` in float64; 0/1 columns go through float32 (exact: integer sums < 2^24)."""
    if columns.dtype == bool:
        return (w @ columns.astype(np.float32)).astype(np.float64)
    return w.astype(np.float64) @ columns


def _classification(metric: str, num_classes: int, y: np.ndarray, preds: np.ndarray, w: np.ndarray) -> np.ndarray:
    s, n = preds.shape
    if metric == "accuracy":
        return (_sums(w, (preds == y).T) / n).T
    c = num_classes
    onehot_p = (preds[:, :, None] == np.arange(c)).transpose(1, 0, 2).reshape(n, s * c)  # [n, s*c]
    tp = _sums(w, onehot_p & (y[:, None] == np.tile(np.arange(c), s))).reshape(-1, s, c)
    pred = _sums(w, onehot_p).reshape(-1, s, c)
    true = _sums(w, y[:, None] == np.arange(c))[:, None, :]  # [b, 1, c]
    stat = metric.rsplit("_", 1)[0] if metric not in ("precision", "recall", "f1") else metric
    per_class = {"precision": lambda: _div(tp, pred), "recall": lambda: _div(tp, np.broadcast_to(true, tp.shape)),
                 "f1": lambda: _div(2.0 * tp, true + pred)}[stat]()
    if metric.endswith("_macro"):
        out = per_class.mean(axis=2)
    elif metric.endswith("_weighted"):
        out = (per_class * true).sum(axis=2) / true.sum(axis=2)
    else:  # binary: label 1
        out = per_class[:, :, 1]
    return out.T


def _multilabel(metric: str, t: np.ndarray, preds: np.ndarray, w: np.ndarray) -> np.ndarray:
    """metrics.multilabel_metrics per seed (``preds`` ``[s, n, C]`` 0/1) and resample row."""
    t = t.astype(bool)
    p = preds.astype(bool)
    s, n, c = p.shape
    if metric in ("accuracy", "hamming_loss", "f1_samples"):
        if metric == "accuracy":
            per_item = (p == t).all(axis=2)
        elif metric == "hamming_loss":
            per_item = (p != t).mean(axis=2)
        else:
            per_item = _div(2.0 * (p & t).sum(axis=2), t.sum(axis=1) + p.sum(axis=2))
        return (_sums(w, per_item.T) / n).T
    tp = _sums(w, (p & t).transpose(1, 0, 2).reshape(n, s * c)).reshape(-1, s, c)
    pred = _sums(w, p.transpose(1, 0, 2).reshape(n, s * c)).reshape(-1, s, c)
    true = _sums(w, t)[:, None, :]
    if metric == "f1_micro":
        return _div(2.0 * tp.sum(axis=2), true.sum(axis=2) + pred.sum(axis=2)).T
    if metric == "precision_macro":
        return _div(tp, pred).mean(axis=2).T
    if metric == "recall_macro":
        return _div(tp, np.broadcast_to(true, tp.shape)).mean(axis=2).T
    f1 = _div(2.0 * tp, true + pred)
    if metric == "f1_macro":
        return f1.mean(axis=2).T
    support = true.sum(axis=2)  # f1_weighted
    return _div((f1 * true).sum(axis=2), support).T


def _weighted_binary_f1(w: np.ndarray, mask: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """metrics._binary_weighted_f1 on the items of `mask`, per resample row and seed."""
    n_m = _sums(w, mask[:, None])  # [b, 1]
    n_true = _sums(w, (mask & truth)[:, None])
    n_pred = _sums(w, (mask[:, None] & pred.T))  # [b, s]
    tp = _sums(w, (mask & truth)[:, None] & pred.T)
    tn = n_m - n_true - n_pred + tp
    f1_pos = _div(2.0 * tp, n_true + n_pred)
    f1_neg = _div(2.0 * tn, (n_m - n_true) + (n_m - n_pred))
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((f1_neg * (n_m - n_true) + f1_pos * n_true) / n_m).T


def _regression(metric: str, t: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    n = len(t)
    if metric in ("acc2_has0", "acc7", "acc5", "mae"):
        if metric == "acc2_has0":
            cols = (t >= 0)[:, None] == (p >= 0).T
        elif metric == "mae":
            cols = np.abs(p - t).T
        else:
            lim = 3.0 if metric == "acc7" else 2.0
            cols = (np.round(np.clip(t, -lim, lim))[:, None] == np.round(np.clip(p, -lim, lim)).T)
        return (_sums(w, cols) / n).T
    if metric == "acc2_non0":
        nz = t != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            return (_sums(w, nz[:, None] & ((t > 0)[:, None] == (p > 0).T)) / _sums(w, nz[:, None])).T
    if metric in ("f1_has0", "f1_non0"):
        if metric == "f1_has0":
            return _weighted_binary_f1(w, np.ones(n, bool), t >= 0, p >= 0)
        return _weighted_binary_f1(w, t != 0, t > 0, p > 0)
    # corr: Pearson's r from weighted moments of values centred on the full sample's means
    x, yv = (p - p.mean(axis=1, keepdims=True)).T, (t - t.mean())[:, None]  # [n, s], [n, 1]
    w64 = w.astype(np.float64)
    sx, sy = w64 @ x / n, w64 @ yv / n
    vx, vy = w64 @ (x * x) / n - sx**2, w64 @ (yv * yv) / n - sy**2
    cxy = w64 @ (x * yv) / n - sx * sy
    tiny = 1e-12 * max(float(np.max(np.abs(x))) if x.size else 0.0, float(np.max(np.abs(yv))), 1.0) ** 2
    ok = (vx > tiny) & (vy > tiny)
    r = np.zeros_like(cxy)
    np.divide(cxy, np.sqrt(np.where(ok, vx * vy, 1.0)), out=r, where=ok)
    return np.clip(r, -1.0, 1.0).T


def _auroc(y: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC of each seed's scores on each resample: weighted Mann-Whitney U, ties one half
    (metrics.binary_score_metrics on the resampled arrays); NaN without both classes."""
    pos = y == 1
    out = np.empty((len(scores), len(w)))
    w64 = w.astype(np.float64)
    n_pos, n_neg = w64 @ pos, w64 @ ~pos
    for s, sc in enumerate(scores):  # per seed; every resample at once
        order = np.argsort(sc, kind="mergesort")
        ss = sc[order]
        starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
        ws = w64[:, order]
        p_g = np.add.reduceat(ws * pos[order], starts, axis=1)
        n_g = np.add.reduceat(ws * ~pos[order], starts, axis=1)
        below = np.cumsum(n_g, axis=1) - n_g
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s] = (p_g * (below + 0.5 * n_g)).sum(axis=1) / (n_pos * n_neg)
    out[:, (n_pos == 0) | (n_neg == 0)] = np.nan
    return out


def resampled_metric(metric: str, target_type: str, num_classes: int | None, y: np.ndarray, preds: np.ndarray,
                     w: np.ndarray, scores: bool = False) -> np.ndarray:
    """`metric` of each seed's predictions (rows of ``preds``, ``[s, n]``) on each item
    resample (rows of the counts ``w``, ``[b, n]``): ``[s, b]``. A row of ones gives the
    metric on the test set itself. With `scores`, ``preds`` are label-1 scores of a binary
    task: AUROC from the scores, the label metrics from ``score > 0.5``."""
    preds = np.atleast_2d(np.asarray(preds))
    y = np.asarray(y)
    if scores:
        if metric == "auroc":
            return _auroc(y, preds.astype(np.float64), w)
        preds = (preds > 0.5).astype(np.int64)
    if target_type in ("multiclass", "binary") and (metric == "accuracy" or metric in _PRF):
        return _classification(metric, 2 if num_classes is None else int(num_classes), y, preds, w)
    if target_type == "regression" and metric in _REGRESSION:
        return _regression(metric, y.astype(np.float64), preds.astype(np.float64), w)
    if target_type == "retrieval":
        return _retrieval(metric, y, preds, w)
    if target_type == "multilabel" and metric in _MULTILABEL:
        return _multilabel(metric, y, preds.reshape(-1, *y.shape) > 0.5 if preds.dtype.kind == "f" else preds.reshape(-1, *y.shape), w)
    from mmbench.evaluation.metrics import compute_metrics

    out = np.empty((len(preds), len(w)))
    for b, row in enumerate(w):  # the slow path: a metric without weighted sums here
        idx = np.repeat(np.arange(len(y)), row.astype(np.int64))
        out[:, b] = [compute_metrics(target_type, y[idx], p[idx], num_classes)[metric] for p in preds]
    return out


RETRIEVAL_KS = (1, 5, 10)


def retrieval_cluster_arrays(records: dict[str, Any], order: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """From a retrieval result's per-query records (``extra["test_queries"]``), per image of
    `order` (image ids: the clusters): (its number of captions ``[n]``, and ``[n, 6]`` the sums
    over its captions of the expected text-to-image hits at k = 1, 5, 10, then its own
    expected image-to-text hits at 1, 5, 10). Resampling images with these (a row of counts
    ``w``) resamples each image with all its captions: ``t2i_recall@k = w @ sums / w @ captions``."""
    from mmbench.evaluation.retrieval import COUNT_KEYS, expected_hits

    pos = {c: i for i, c in enumerate(order)}
    n = len(order)
    t2i, i2t = records["t2i"], records["i2t"]
    rows = np.array([pos[c] for c in t2i["cluster"]], dtype=np.int64)
    captions = np.bincount(rows, minlength=n).astype(np.float64)
    out = np.zeros((n, 2 * len(RETRIEVAL_KS)))
    for c, k in enumerate(RETRIEVAL_KS):
        out[:, c] = np.bincount(rows, weights=expected_hits(*(t2i[key] for key in COUNT_KEYS), k), minlength=n)
    image_rows = np.array([pos[c] for c in i2t["ids"]], dtype=np.int64)
    for c, k in enumerate(RETRIEVAL_KS):
        out[image_rows, len(RETRIEVAL_KS) + c] = expected_hits(*(i2t[key] for key in COUNT_KEYS), k)
    return captions, out


def _retrieval(metric: str, captions: np.ndarray, sums: np.ndarray, w: np.ndarray) -> np.ndarray:
    """recall@k (or mean_recall) of each seed's per-image arrays (``sums``: ``[s, n, 6]``,
    :func:`retrieval_cluster_arrays`) on each image resample: ``[s, b]``."""
    w64 = w.astype(np.float64)
    sums = np.asarray(sums, dtype=np.float64).reshape(-1, len(captions), 2 * len(RETRIEVAL_KS))
    t2i = np.einsum("bn,snk->skb", w64, sums[:, :, : len(RETRIEVAL_KS)]) / (w64 @ captions)
    i2t = np.einsum("bn,snk->skb", w64, sums[:, :, len(RETRIEVAL_KS):]) / w64.sum(axis=1)
    if metric == "mean_recall":
        return (t2i.sum(axis=1) + i2t.sum(axis=1)) / (2 * len(RETRIEVAL_KS))
    direction, k = metric.split("_recall@")
    return (t2i if direction == "t2i" else i2t)[:, RETRIEVAL_KS.index(int(k))]


def two_level_values(y: np.ndarray, preds: list[np.ndarray], metric: str, target_type: str, num_classes: int | None,
                     n_resamples: int, seed: Any, seed_level: bool = True, scores: bool = False) -> np.ndarray:
    """``[entries, n_resamples]``: each entry's value on each two-level resample. ``preds[e]``
    is entry e's ``[seeds, n]`` predictions on the shared items ``y``. The item draws come
    from ``SeedSequence(seed)``'s first child, entry e's seed draws from child e + 1, so the
    item draws do not depend on the seeds. With ``seed_level=False`` each entry's seeds are
    averaged with equal weights (the item bootstrap alone). `scores`: see :func:`resampled_metric`."""
    children = np.random.SeedSequence(seed).spawn(len(preds) + 1)
    per_seed = [np.empty((len(p), n_resamples)) for p in preds]
    pos = 0
    for w in item_weights(len(y), n_resamples, np.random.default_rng(children[0])):
        for e, p in enumerate(preds):
            per_seed[e][:, pos : pos + len(w)] = resampled_metric(metric, target_type, num_classes, y, p, w, scores)
        pos += len(w)
    out = np.empty((len(preds), n_resamples))
    for e, m in enumerate(per_seed):
        k = len(m)
        if k == 1 or not seed_level:
            out[e] = m.mean(axis=0)
            continue
        draws = np.random.default_rng(children[e + 1]).integers(0, k, size=(n_resamples, k))
        draws += (np.arange(n_resamples) * k)[:, None]
        counts = np.bincount(draws.ravel(), minlength=n_resamples * k).reshape(n_resamples, k)
        out[e] = np.einsum("bk,kb->b", counts / k, m)
    return out
