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
:func:`retrieval_cluster_arrays`; recall@k is a ratio of weighted sums, so it has influence values
like the others); each equals :func:`mmbench.evaluation.metrics.compute_metrics` on the resampled
arrays (tests/test_significance.py). Any other metric falls back to one call per resample.

:func:`two_level_values` is the resampling scheme of :mod:`mmbench.evaluation.significance`:
each resample draws the test items with replacement, the same draw for every entry (paired),
and draws each entry's seeds with replacement, independently per entry; the entry's value on
the resample is the mean, over its drawn seeds, of the metric on the drawn items. With
``clusters`` (one key per item: the recording, the video, the dialogue...) the first level
draws whole clusters with replacement instead of items (the cluster bootstrap: Davison &
Hinkley 1997, sec. 3.8; Field & Welsh 2007, "Bootstrapping clustered data", JRSS B 69), the
same clusters for every entry; an item's count is its cluster's count, so a resample holds
a varying number of items and every metric here normalises by the row's total weight.
Every cluster a single item reproduces the item bootstrap draw for draw.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
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


def cluster_index(clusters: Any, n: int) -> tuple[np.ndarray, int]:
    """Each item's cluster number (``[n]``, in order of first appearance, so that distinct keys
    number the items 0..n-1) and the number of clusters; None gives every item its own."""
    if clusters is None:
        return np.arange(n), n
    keys = np.asarray(clusters)
    if keys.shape != (n,):
        raise ValueError(f"{keys.size} cluster keys for {n} items")
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)], len(first)


def unit_weights(clusters: Any, n: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of item-count rows ``[b, n]`` drawn by cluster: each row draws the clusters
    with replacement (:func:`item_weights` over the clusters) and gives every item its
    cluster's count. With ``clusters`` None or all distinct: exactly :func:`item_weights`."""
    index, g = cluster_index(clusters, n)
    if g == n and np.array_equal(index, np.arange(n)):
        yield from item_weights(n, n_resamples, rng)
        return
    for wc in item_weights(g, n_resamples, rng):
        yield wc[:, index]


class ClusterBumps:
    """The weight rows ``1 + step * [item in cluster g]``, one per cluster g, as the products the
    vectorised metrics take (``w @ columns``, ``w.sum(axis=1)``) without the ``[G, n]``
    matrix: ``1 @ columns`` plus ``step`` times the columns summed within each cluster. Each
    row's metric, minus the test set's, over ``step`` is the cluster's empirical influence."""

    def __init__(self, index: np.ndarray, g: int, step: float) -> None:
        self.index, self.g, self.step = index, g, step
        self.sizes = np.bincount(index, minlength=g).astype(np.float64)
        self.shape = (g, len(index))

    def __len__(self) -> int:
        return self.g

    def astype(self, dtype: Any) -> ClusterBumps:
        return self

    def sum(self, axis: int = 1, dtype: Any = None) -> np.ndarray:
        return len(self.index) + self.step * self.sizes

    def __matmul__(self, columns: np.ndarray) -> np.ndarray:
        c = np.asarray(columns, dtype=np.float64)
        flat = c.reshape(len(c), -1)
        within = np.zeros((self.g, flat.shape[1]))
        if self.g < len(self.index):
            np.add.at(within, self.index, flat)
        else:  # one item per cluster
            within[self.index] = flat
        return (flat.sum(axis=0)[None, :] + self.step * within).reshape((self.g, *c.shape[1:]))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.ones(self.shape, np.float64)
        out[self.index, np.arange(len(self.index))] += self.step
        return out


def _totals(w: np.ndarray) -> np.ndarray:
    """Each resample row's number of items ``[b, 1]`` (n for an item resample)."""
    return np.asarray(w.sum(axis=1, dtype=np.float64))[:, None]


def _sums(w: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``w @ columns`` in float64; 0/1 columns go through float32 (exact: integer sums < 2^24)."""
    if isinstance(w, ClusterBumps):
        return w @ columns
    if columns.dtype == bool:
        return (w @ columns.astype(np.float32)).astype(np.float64)
    return w.astype(np.float64) @ columns


def _classification(metric: str, num_classes: int, y: np.ndarray, preds: np.ndarray, w: np.ndarray) -> np.ndarray:
    s, n = preds.shape
    if metric == "accuracy":
        return (_sums(w, (preds == y).T) / _totals(w)).T
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
        return (_sums(w, per_item.T) / _totals(w)).T
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
        return (_sums(w, cols) / _totals(w)).T
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
    tot = _totals(w)[:, :1]
    sx, sy = w64 @ x / tot, w64 @ yv / tot
    vx, vy = w64 @ (x * x) / tot - sx**2, w64 @ (yv * yv) / tot - sy**2
    cxy = w64 @ (x * yv) / tot - sx * sy
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
    w64 = np.asarray(w, dtype=np.float64)
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
    if target_type == "retrieval" and _retrieval_metric(metric):
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


def _retrieval_metric(metric: str) -> bool:
    """Whether `metric` is one :func:`_retrieval` computes (recall@1/5/10 either way, their mean)."""
    if metric == "mean_recall":
        return True
    direction, _, k = metric.partition("_recall@")
    return direction in ("t2i", "i2t") and k.isdigit() and int(k) in RETRIEVAL_KS


def _retrieval(metric: str, captions: np.ndarray, sums: np.ndarray, w: np.ndarray) -> np.ndarray:
    """recall@k (or mean_recall) of each seed's per-image arrays (``sums``: ``[s, n, 6]``,
    :func:`retrieval_cluster_arrays`) on each image resample (rows of ``w``): ``[s, b]``.
    Text-to-image: ``w @ sums / w @ captions``; image-to-text: ``w @ hits / w.sum()``."""
    n, m = len(captions), len(RETRIEVAL_KS)
    sums = np.asarray(sums, dtype=np.float64).reshape(-1, n, 2 * m)
    s = len(sums)
    tot = _sums(w, sums.transpose(1, 0, 2).reshape(n, s * 2 * m)).reshape(-1, s, 2 * m)  # [b, s, 6]
    with np.errstate(invalid="ignore", divide="ignore"):
        t2i = tot[:, :, :m] / _sums(w, np.asarray(captions, np.float64)[:, None])[:, :, None]
        i2t = tot[:, :, m:] / _totals(w)[:, :, None]
    if metric == "mean_recall":
        return ((t2i.sum(axis=2) + i2t.sum(axis=2)) / (2 * m)).T
    direction, k = metric.split("_recall@")
    return (t2i if direction == "t2i" else i2t)[:, :, RETRIEVAL_KS.index(int(k))].T


def _spread(a: np.ndarray) -> float:
    """The exact bootstrap variance of ``sum_g (W_g - 1) a_g`` with W multinomial(G, 1/G)."""
    return float(a @ a - a.sum() ** 2 / max(len(a), 1))


@dataclass(frozen=True)
class TwoLevel:
    """The entries' two-level resamples. ``values`` ``[E, B]``: each entry's value on each
    resample (its drawn seeds' mean on the drawn clusters); per entry e, ``per_seed[e]``
    ``[k, B]``: every seed's value on the drawn clusters (the seed level is then averaged
    exactly, :meth:`pair_variance`), ``linear[e]`` ``[k, B]``: its linear approximation in the
    cluster counts, ``seed_points[e]`` ``[k]``: each seed's value on the test set and
    ``influence[e]`` ``[k, G]``: its derivative in each cluster's weight. ``seed_level``: False
    when the seeds are averaged with equal weights (no seed draws). A weighted sum of
    TwoLevels on the same draws (:meth:`combine`) is again one."""

    values: np.ndarray
    per_seed: tuple[np.ndarray, ...]
    linear: tuple[np.ndarray, ...]
    seed_points: tuple[np.ndarray, ...]
    influence: tuple[np.ndarray, ...]
    seed_level: bool = True

    @property
    def point(self) -> np.ndarray:
        """Each entry's seed mean on the test set."""
        return np.array([v.mean() for v in self.seed_points])

    def take(self, order: list[int]) -> TwoLevel:
        """The entries in `order`."""
        pick = lambda xs: tuple(xs[e] for e in order)  # noqa: E731
        return TwoLevel(self.values[order], pick(self.per_seed), pick(self.linear), pick(self.seed_points),
                        pick(self.influence), self.seed_level)

    def shifted(self, c: float) -> TwoLevel:
        """Every entry's statistic plus the constant c (no difference changes)."""
        return TwoLevel(self.values + c, tuple(v + c for v in self.per_seed), tuple(v + c for v in self.linear),
                        tuple(v + c for v in self.seed_points), self.influence, self.seed_level)

    @staticmethod
    def combine(parts: list[tuple[float, TwoLevel]]) -> TwoLevel:
        """``sum(a * part)`` over (a, part) drawn with the same draws (a robustness score)."""
        def total(get: Any) -> Any:
            out = None
            for a, p in parts:
                out = a * get(p) if out is None else out + a * get(p)
            return out

        n = len(parts[0][1].per_seed)
        each = lambda name: tuple(total(lambda p, e=e: getattr(p, name)[e]) for e in range(n))  # noqa: E731
        return TwoLevel(total(lambda p: p.values), each("per_seed"), each("linear"), each("seed_points"),
                        each("influence"), parts[0][1].seed_level)

    def pair_variance(self, i: int, j: int) -> tuple[float, float, int]:
        """The two-level bootstrap variance of entry i minus entry j around the observed
        difference d, its Monte-Carlo standard error and the resamples used. The seed level is
        averaged exactly: given the clusters drawn, the seed draws add each entry's variance
        over its seeds divided by their number (Rao-Blackwellised). Every cluster-level term
        uses its linear approximation in the cluster counts as a control variate: the exact
        expectation of the linear part plus the mean over resamples of the rest (Davison &
        Hinkley 1997, sec. 9.3.1). So a statistic linear in the counts (accuracy over items)
        has no Monte-Carlo error at all."""
        d = self.point[i] - self.point[j]
        t = self.per_seed[i].mean(axis=0) - self.per_seed[j].mean(axis=0)
        lin = self.linear[i].mean(axis=0) - self.linear[j].mean(axis=0)
        q = (t - d) ** 2 - (lin - d) ** 2
        exact = _spread(self.influence[i].mean(axis=0) - self.influence[j].mean(axis=0))
        if self.seed_level:
            for e in (i, j):
                k = len(self.per_seed[e])
                if k > 1:
                    infl = self.influence[e]
                    exact += (np.var(self.seed_points[e]) + sum(_spread(a) for a in infl - infl.mean(axis=0)) / k) / k
                    q = q + (self.per_seed[e].var(axis=0) - self.linear[e].var(axis=0)) / k
        q = q[np.isfinite(q)]  # a resample where the metric is undefined (one class drawn) is left out
        if q.size < 2:
            return math.nan, math.nan, int(q.size)
        return exact + float(q.mean()), float(q.std(ddof=1) / math.sqrt(q.size)), int(q.size)


EPS = 1e-4  # the step of the numerical derivative in a cluster's weight


def _linearisable(metric: str, target_type: str, scores: bool) -> bool:
    """Whether :func:`resampled_metric` computes `metric` from weighted sums (so fractional
    weights are meaningful), not by repeating items."""
    if scores and metric == "auroc":
        return True
    if target_type == "retrieval":
        return _retrieval_metric(metric)
    if target_type in ("multiclass", "binary"):
        return metric == "accuracy" or metric in _PRF
    return (target_type == "regression" and metric in _REGRESSION) or (target_type == "multilabel" and metric in _MULTILABEL)


def two_level(y: np.ndarray, preds: list[np.ndarray], metric: str, target_type: str, num_classes: int | None,
              n_resamples: int, seed: Any, seed_level: bool = True, scores: bool = False,
              clusters: Any = None) -> TwoLevel:
    """The two-level resample of every entry, with its linear approximation. ``preds[e]`` is
    entry e's ``[seeds, n]`` predictions on the shared items ``y``. The cluster draws come from
    ``SeedSequence(seed)``'s first child, entry e's seed draws from child e + 1, so the
    cluster draws do not depend on the seeds. With ``seed_level=False`` each entry's seeds are
    averaged with equal weights (the item bootstrap alone). `scores`: see :func:`resampled_metric`.
    ``clusters`` (one key per item, or None): the first level draws clusters, not items
    (:func:`unit_weights`); all-distinct keys give the item bootstrap exactly."""
    n = len(y)
    index, g = cluster_index(clusters, n)
    children = np.random.SeedSequence(seed).spawn(len(preds) + 1)
    per_seed = [np.empty((len(p), n_resamples)) for p in preds]
    counts = np.empty((n_resamples, g), np.float32)
    rng = np.random.default_rng(children[0])
    pos = 0
    distinct = g == n and np.array_equal(index, np.arange(n))
    for wc in item_weights(g, n_resamples, rng):
        w = wc if distinct else wc[:, index]
        for e, p in enumerate(preds):
            per_seed[e][:, pos : pos + len(w)] = resampled_metric(metric, target_type, num_classes, y, p, w, scores)
        counts[pos : pos + len(w)] = wc
        pos += len(w)
    # each seed's value on the test set and its derivative in each cluster's weight
    smooth = _linearisable(metric, target_type, scores)
    step = EPS if smooth else 1.0
    ones = np.ones((1, n), np.float64 if smooth else np.float32)
    seed_vals = [resampled_metric(metric, target_type, num_classes, y, p, ones, scores)[:, 0] for p in preds]
    infl = [np.zeros((len(p), g)) for p in preds]
    if smooth:  # every cluster's row at once, as weighted sums
        for e, p in enumerate(preds):
            m = resampled_metric(metric, target_type, num_classes, y, p, ClusterBumps(index, g, step), scores)
            infl[e][:] = np.nan_to_num((m - seed_vals[e][:, None]) / step)
    block = max(1, BLOCK_CELLS // max(n, 1))
    for start in range(0, 0 if smooth else g, block):  # row r: cluster start + r's weight raised by one
        rows = np.arange(start, min(g, start + block))
        bump = np.ones((len(rows), n), ones.dtype)
        bump[rows[:, None] == index[None, :]] += step
        for e, p in enumerate(preds):
            m = resampled_metric(metric, target_type, num_classes, y, p, bump, scores)  # [k, rows]
            infl[e][:, rows] = np.nan_to_num((m - seed_vals[e][:, None]) / step)
    out = np.empty((len(preds), n_resamples))
    moved = counts.astype(np.float64)
    moved -= 1.0
    stacked = (moved @ np.concatenate(infl).T).T  # one product for every seed of every entry: [sum k, B]
    cuts = np.cumsum([len(f) for f in infl])[:-1]
    lin = [v[:, None] + part for v, part in zip(seed_vals, np.split(stacked, cuts))]
    for e, m in enumerate(per_seed):
        k = len(m)
        if k == 1 or not seed_level:
            out[e] = m.mean(axis=0)
            continue
        draws = np.random.default_rng(children[e + 1]).integers(0, k, size=(n_resamples, k))
        draws += (np.arange(n_resamples) * k)[:, None]
        c = np.bincount(draws.ravel(), minlength=n_resamples * k).reshape(n_resamples, k)
        out[e] = np.einsum("bk,kb->b", c / k, m)
    return TwoLevel(out, tuple(per_seed), tuple(lin), tuple(seed_vals), tuple(infl), seed_level)


def two_level_values(y: np.ndarray, preds: list[np.ndarray], metric: str, target_type: str, num_classes: int | None,
                     n_resamples: int, seed: Any, seed_level: bool = True, scores: bool = False,
                     clusters: Any = None) -> np.ndarray:
    """``[entries, n_resamples]``: each entry's value on each two-level resample (:func:`two_level`'s
    ``values``)."""
    return two_level(y, preds, metric, target_type, num_classes, n_resamples, seed, seed_level, scores, clusters).values
