"""Verdicts a task's entries support: a two-level paired bootstrap over test clusters and
seeds, every pair tested and Holm-adjusted, compact letters and rank ranges from the same
decisions.

Every result stores its clean per-item predictions (``extra["test_items"]``: ids, targets,
predictions, target type, class count, and, where the task declares a resampling unit, each
item's cluster key and the unit's name), so the entries of a task are compared item by item
without the data. :func:`task_significance` (entries) and :func:`significance_from_arrays`
(arrays) return a frozen :class:`TaskSignificance`:

- **the resampling unit**: test items that are not independent (AV-MNIST's four pairs of
  one recording, MOSI's clips of one video) are resampled together: the first level draws
  whole clusters with replacement, the same clusters for both entries of a pair (the
  cluster bootstrap: Davison & Hinkley 1997, "Bootstrap methods and their application",
  sec. 3.8; Field & Welsh 2007, "Bootstrapping clustered data", J. R. Statist. Soc. B 69).
  The default unit is the item; the caption says "resampled by video".
  A retrieval task's entries store per-query records instead (``extra["test_queries"]``):
  its clusters are the gallery's images, each drawn with all its captions
  (:func:`retrieval_significance`), and the caption says "resampled by image".
- **the test** (:mod:`mmbench.evaluation.resampling`): B seeded two-level resamples; each
  draws the clusters (paired) and each entry's seeds with replacement, independently per
  entry; an entry's value is the mean over its drawn seeds of the primary metric on the drawn
  items (any metric). So the seed spread of each entry is part of the test, not only the
  test-set sampling (Bouthillier et al. 2021, "Accounting for variance in machine learning
  benchmarks", MLSys; Dror et al. 2019, "Deep dominance", ACL). The p-value is the normal
  one from the bootstrap standard error of the difference, ``p = 2 (1 - Phi(|d| / se))``
  (Efron & Tibshirani 1993, "An introduction to the bootstrap", ch. 6 and 16), not a count
  of resamples: a counted p cannot go below ``1/(B+1)``, so after Holm every close pair sat
  on that floor and verdicts moved with the seed. The variance is estimated with almost no
  Monte-Carlo error: the seed level is averaged exactly given the clusters drawn, and the
  cluster level uses the statistic's linear approximation (its empirical influence values,
  the infinitesimal jackknife) as a control variate whose variance is exact (Davison &
  Hinkley 1997, sec. 2.7 and 9.3.1); for accuracy over items the estimate has no Monte-Carlo
  error at all. Each Holm p carries its Monte-Carlo standard error (Davison & Hinkley 1997,
  sec. 2.5.2, on Monte-Carlo error in bootstrap tests), and a verdict is decided against alpha
  given that error: while some Holm p lies within three errors of alpha, B is multiplied by 4
  (up to :data:`MAX_RESAMPLES`); a pair still that close is "undecided" and not declared
  different. Pairs of single-run entries scored by accuracy on independent items use the
  exact McNemar test instead (McNemar 1947; Dietterich 1998), and a single-run entry's row
  says that its seed variance is unknown.
- **all pairs, corrected**: every pair of the task is tested; p-values are adjusted with
  Holm's step-down procedure (Holm 1979, "A simple sequentially rejective multiple test
  procedure", Scand. J. Statist. 6), which controls the family-wise error over the task's
  pairs, as recommended for comparing several classifiers on shared data (Demšar 2006,
  "Statistical comparisons of classifiers over multiple data sets", JMLR 7; Benavoli et al.
  2016, "Should we really use post-hoc tests based on mean-ranks?", JMLR 17). One rule gives
  every verdict and marker: a pair differs iff ``p_holm < 0.05``. Each pair's interval is the
  normal interval at the pair's Holm level ``alpha * p / p_holm``, so it excludes 0 exactly
  when the pair differs.
- **compact letters**: Piepho's insert-and-absorb algorithm (Piepho 2004, "An algorithm for a
  letter-based representation of all-pairwise comparisons", J. Comput. Graph. Statist. 13):
  two rows share a letter iff their pair does not differ; letters are given in rank order.
- **rank ranges** (:func:`rank_intervals`): from the same decisions: 1 + the entries
  significantly better to n - the entries significantly worse. They hold together whenever
  every Holm decision does, so at the letters' family-wise level, and never exclude a rank
  that the letters leave open (the simultaneous ranking of Hall & Miller 2009, "Using the
  bootstrap to quantify the authority of an empirical ranking", Ann. Statist. 37, read off
  the multiple-comparison decisions).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from mmbench.core.errors import DataError

ALPHA = 0.05
DEFAULT_RESAMPLES = 2000
MAX_RESAMPLES = 32000


# ------------------------------------------------------------------------------------------
# per-item predictions stored in a result
# ------------------------------------------------------------------------------------------


def item_record(ids: Any, targets: Any, predictions: Any, target_type: str, num_classes: int | None,
                scores: bool = False, clusters: Any = None, unit: str | None = None) -> dict[str, Any]:
    """What a result stores (``extra["test_items"]``) for paired tests: the clean condition's
    prediction for every test id, with its target. With `scores` (a binary task scored from
    label-1 scores, such as AUROC) the predictions are the real-valued scores and the record
    says so (``"scores": true``); labels are then ``score > 0.5``. Multi-label probabilities
    are stored as their 0/1 label sets (``score > 0.5``). ``clusters`` (parallel to ids) and
    ``unit`` (what a cluster is: "video") are stored when the task declares a resampling unit."""
    preds = np.asarray(predictions)
    if target_type == "multilabel" and preds.dtype.kind == "f":
        preds = preds > 0.5  # the label sets every multi-label metric reads (metrics.multilabel_metrics)
    real = target_type == "regression" or scores
    as_list = preds.astype(float).tolist() if real else preds.astype(np.int64).tolist()
    targs = np.asarray(targets)
    return {"ids": [str(i) for i in ids], "targets": targs.astype(float).tolist() if target_type == "regression"
            else targs.astype(np.int64).tolist(), "predictions": as_list, "target_type": target_type,
            "num_classes": num_classes} | ({"scores": True} if scores else {}) | with_clusters(clusters, unit)


def with_clusters(clusters: Any, unit: str | None) -> dict[str, Any]:
    """The record's cluster fields: ``clusters`` (one key per id) and ``unit``; empty for None."""
    return {} if clusters is None else {"clusters": [str(c) for c in clusters], "unit": unit or "cluster"}


def item_record_differences(stored: dict[str, Any] | None, recomputed: dict[str, Any] | None) -> str | None:
    """How an entry's stored per-item record differs from the one recomputed from its stored
    predictions (None when they agree; a missing stored record is not a difference)."""
    if stored is None:
        return None
    if recomputed is None:
        return "the entry has per-item records, its stored predictions give none"
    for key in ("target_type", "num_classes"):
        if stored.get(key) != recomputed.get(key):
            return f"{key} {stored.get(key)!r}, recomputed {recomputed.get(key)!r}"
    if sorted(stored["ids"]) != sorted(recomputed["ids"]) or len(stored["ids"]) != len(stored["predictions"]):
        return f"{len(stored['ids'])} test ids stored, {len(recomputed['ids'])} recomputed, or other ids"
    pos = {i: k for k, i in enumerate(recomputed["ids"])}
    take = np.array([pos[i] for i in stored["ids"]])
    if stored.get("unit") != recomputed.get("unit"):
        return f"resampling unit {stored.get('unit')!r} stored, the task gives {recomputed.get('unit')!r}"
    if stored.get("clusters") is not None:
        want = [recomputed["clusters"][k] for k in take]
        bad = [k for k, (a, b) in enumerate(zip(stored["clusters"], want)) if a != b]
        if len(stored["clusters"]) != len(want) or bad:
            k = bad[0] if bad else 0
            return (f"clusters differ on {len(bad) or len(stored['ids'])} of {len(stored['ids'])} items (first: id "
                    f"{stored['ids'][k]!r}, stored {stored['clusters'][k]!r}, the task's rule gives {want[k]!r})")
    for key in ("targets", "predictions"):
        a, b = np.asarray(stored[key], dtype=float), np.asarray(recomputed[key], dtype=float)[take]
        if a.shape != b.shape:
            return f"{key} of shape {a.shape} stored, {b.shape} recomputed"
        bad = np.flatnonzero(~np.isclose(a, b, rtol=1e-6, atol=1e-9).reshape(len(a), -1).all(axis=1))
        if bad.size:
            k = int(bad[0])
            return (f"{key} differ on {bad.size} of {len(a)} items (first: id {stored['ids'][k]!r}, stored "
                    f"{a[k].tolist()}, recomputed {b[k].tolist()})")
    return None


# ------------------------------------------------------------------------------------------
# the tests
# ------------------------------------------------------------------------------------------


def exact_binomial_two_sided(k: int, n: int) -> float:
    """Two-sided exact binomial p-value of k successes in n trials at p = 1/2 (the distribution
    is symmetric, so: twice the smaller tail, at most 1)."""
    if n == 0:
        return 1.0
    lo = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(lo + 1))
    return min(1.0, 2.0 * tail / 2.0**n) if 2 * lo != n else 1.0


def mcnemar_exact(correct_a: Any, correct_b: Any) -> dict[str, float]:
    """Exact McNemar test of two classifiers on the same items: ``b`` = items only A gets right,
    ``c`` = items only B gets right, p = two-sided exact binomial of b in b + c at 1/2."""
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise DataError(f"McNemar needs the same items: {a.shape} vs {b_.shape}")
    only_a, only_b = int((a & ~b_).sum()), int((~a & b_).sum())
    return {"b": only_a, "c": only_b, "p": exact_binomial_two_sided(only_a, only_a + only_b)}


# ------------------------------------------------------------------------------------------
# multiple comparisons, letters, ranks, power
# ------------------------------------------------------------------------------------------


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given): the i-th smallest p becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(stepped)
    return out


def _letter(i: int) -> str:
    pool = "abcdefghijklmnopqrstuvwxyz"
    return pool[i] if i < 26 else pool[i // 26 - 1] + pool[i % 26]


def compact_letters(names: list[str], differ: set[frozenset[str]]) -> dict[str, str]:
    """Piepho's (2004) insert-and-absorb compact letter display: for every differing pair,
    each letter group holding both is split in two (one without each), then groups contained
    in another are absorbed. Two names share a letter iff their pair is not in `differ`.
    Letters follow `names`' order (the first name gets "a"); from the 27th group letters
    have two characters ("aa", "ab", ...)."""
    pos = {n: i for i, n in enumerate(names)}
    groups: list[frozenset[str]] = [frozenset(names)] if names else []
    for pair in sorted(differ, key=lambda p: sorted(pos[n] for n in p)):
        a, b = sorted(pair, key=pos.__getitem__)
        split = []
        for g in groups:
            split += [g - {a}, g - {b}] if a in g and b in g else [g]
        split = list(dict.fromkeys(g for g in split if g))
        groups = [g for g in split if not any(g < h for h in split)]
    groups.sort(key=lambda g: sorted(pos[n] for n in g))
    out = {n: "" for n in names}
    for i, g in enumerate(groups):
        for n in g:
            out[n] += _letter(i)
    return out


def rank_intervals(names: list[str], differ: set[frozenset[str]], better: dict[str, set[str]]) -> dict[str, tuple[int, int]]:
    """Each entry's rank interval from the same pairwise decisions as the letters: best rank 1 +
    the entries significantly better than it, worst rank n - the entries significantly worse
    (``better[a]``: the names a is ranked above; ``differ``: the significant pairs). All the
    intervals hold together whenever every decision does, so at the letters' family-wise
    level; an interval never excludes a rank that some order agreeing with the decisions
    gives the entry."""
    n = len(names)
    out = {}
    for a in names:
        above = sum(1 for b in names if b != a and frozenset((a, b)) in differ and a in better[b])
        below = sum(1 for b in names if b != a and frozenset((a, b)) in differ and b in better[a])
        out[a] = (1 + above, n - below)
    return out


def format_p(p: float) -> str:
    """A p-value for display: 2 significant digits (``p = 0.031``), ``p < 0.0001`` below that."""
    if p < 1e-4:
        return "p < 0.0001"
    return "p = 1" if p >= 0.995 else f"p = {p:.2g}"


# ------------------------------------------------------------------------------------------
# the result
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairTest:
    """One pair ``a`` vs ``b`` (``a`` ranked above ``b``): ``diff`` is a - b in the direction
    of better (positive: a is better), ``ci_low``/``ci_high`` its interval at the pair's Holm
    level (it excludes 0 exactly when the pair differs), ``p`` the raw two-sided p, ``p_holm``
    Holm-adjusted over the task's pairs, ``significant`` = p_holm < alpha (the one rule for
    verdicts and markers), ``p_display``/``p_holm_display`` as shown (:func:`format_p`),
    ``test`` "two-level-bootstrap", "item-bootstrap" (both single runs), "mcnemar-exact" or
    "undefined" (the metric is undefined on the test set: p 1, interval NaN), ``diff_sd`` the
    bootstrap standard deviation of the difference, ``mc_error`` the Monte-Carlo standard
    error of ``p_holm`` and ``undecided`` True when ``p_holm`` is within three Monte-Carlo
    errors of alpha after the most resamples (the pair is then not declared different)."""

    a: str
    b: str
    diff: float
    ci_low: float
    ci_high: float
    p: float
    p_holm: float
    significant: bool
    p_display: str
    p_holm_display: str
    test: str
    diff_sd: float
    mc_error: float = 0.0
    undecided: bool = False

    def oriented(self, first: str) -> PairTest:
        """The same test read from `first`'s side (diff and interval negated when first is b)."""
        if first == self.a:
            return self
        return PairTest(self.b, self.a, -self.diff, -self.ci_high, -self.ci_low, self.p, self.p_holm, self.significant,
                        self.p_display, self.p_holm_display, self.test, self.diff_sd, self.mc_error, self.undecided)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("diff", "ci_low", "ci_high", "p", "p_holm", "significant", "p_display",
                                               "p_holm_display", "test", "diff_sd", "mc_error", "undecided")}


@dataclass(frozen=True)
class RowSignificance:
    """One entry: ``value`` (seed mean of the metric on the test items), ``seeds``,
    ``letters`` (compact letter display), ``rank_interval`` (best, worst; from the same
    decisions as the letters) and ``seed_variance_known`` (False for a single run)."""

    name: str
    value: float
    seeds: int
    letters: str
    rank_interval: tuple[int, int]
    seed_variance_known: bool


@dataclass(frozen=True)
class TaskSignificance:
    """Everything the board, the site and the report show about a task's verdicts.

    Fields: ``task``, ``metric``, ``higher_is_better``, ``items`` (test items), ``n_resamples``
    (B, after any increase), ``seed``, ``alpha``, ``rows`` (:class:`RowSignificance`, in the
    ranked order given), ``pairs`` (:class:`PairTest`, every pair, a ranked above b),
    ``unit`` (what one resampled cluster is: "video"; "item" by default), ``clusters`` (how
    many), ``mc_error`` (the largest Monte-Carlo error of a Holm p) and ``caption`` (the
    test, the unit, the seeds, the pairs and the correction). :meth:`pair` reads a pair from
    either side; :meth:`matrix` is the JSON form ``{a: {b: pair}}`` for every ordered pair."""

    task: str
    metric: str
    higher_is_better: bool
    items: int
    n_resamples: int
    seed: int
    alpha: float
    rows: tuple[RowSignificance, ...]
    pairs: tuple[PairTest, ...]
    caption: str
    unit: str = "item"
    clusters: int = 0
    mc_error: float = 0.0
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({(t.a, t.b): t for t in self.pairs})

    def row(self, name: str) -> RowSignificance:
        return next(r for r in self.rows if r.name == name)

    def pair(self, a: str, b: str) -> PairTest:
        t = self._index.get((a, b)) or self._index[(b, a)]
        return t.oriented(a)

    def matrix(self) -> dict[str, dict[str, dict[str, Any]]]:
        names = [r.name for r in self.rows]
        return {a: {b: self.pair(a, b).to_json() for b in names if b != a} for a in names}

    def summary(self) -> dict[str, Any]:
        """The task-level fields as JSON (what each ranked row carries under ``significance``)."""
        return {"test": sorted({t.test for t in self.pairs}), "metric": self.metric, "items": self.items,
                "unit": self.unit, "clusters": self.clusters, "n_resamples": self.n_resamples, "seed": self.seed,
                "alpha": self.alpha, "pairs": len(self.pairs), "correction": "holm", "mc_error": self.mc_error,
                "caption": self.caption}


# ------------------------------------------------------------------------------------------
# computing it
# ------------------------------------------------------------------------------------------


def _caption(metric: str, items: int, seeds: list[int], single: list[str], n_pairs: int, b: int, mcnemar: bool,
             unit: str, clusters: int, mc: float) -> str:
    by = f"the {items:,} test items" if unit == "item" else f"the {items:,} test items resampled by {unit} ({clusters:,} {unit}s)"
    if n_pairs == 0:
        return f"One entry, scored on {by[4:]}: no pair to test."
    lo, hi = min(seeds), max(seeds)
    if hi == 1:
        head = f"Paired bootstrap of {metric} over {by} (single runs: seed variance unknown"
    else:
        unknown = f", seed variance unknown for the single run{'s' if len(single) > 1 else ''} {', '.join(single)}" if single else ""
        head = (f"Two-level paired bootstrap of {metric} over {by} and each entry's seeds "
                f"({lo if lo == hi else f'{lo}-{hi}'} seeds per entry{unknown}")
    return (f"{head}; B = {b:,} resamples, p-values from the bootstrap standard error, largest Monte-Carlo error of a "
            f"Holm p {mc:.1g}){', exact McNemar p-values for pairs of single runs' if mcnemar else ''}; "
            f"{'the one pair' if n_pairs == 1 else f'all {n_pairs} pairs'} tested, p-values Holm-adjusted: rows sharing a "
            f"letter are not distinguishable at family-wise alpha {ALPHA:g}, and each rank interval runs from 1 + the "
            f"entries found better to n - the entries found worse, at the same family-wise level.")


def significance_from_arrays(task: str, names: list[str], y: Any, preds: list[Any], metric: str, target_type: str,
                             num_classes: int | None, higher_is_better: bool, n_resamples: int = DEFAULT_RESAMPLES,
                             seed: Any = 0, alpha: float = ALPHA, scores: bool = False,
                             clusters: Any = None, unit: str | None = None) -> TaskSignificance:
    """The verdicts for entries `names` (best first) with ``preds[e]`` the ``[seeds, n]``
    predictions of entry e on the shared items with targets `y` (label-1 scores with
    `scores`); `seed` seeds the resamples; ``clusters`` (one key per item, or None) makes
    the first level resample clusters (:func:`mmbench.evaluation.resampling.unit_weights`),
    ``unit`` names them ("video")."""
    from mmbench.evaluation.resampling import cluster_index, two_level

    y = np.asarray(y)
    preds = [np.atleast_2d(np.asarray(p)) for p in preds]
    g = cluster_index(clusters, len(y))[1]
    # McNemar assumes independent items: with clusters of several items the bootstrap decides
    linear_acc = metric == "accuracy" and target_type in ("multiclass", "binary") and g == len(y)

    def exact(i: int, j: int) -> float:
        la, lb = ((run[0] > 0.5).astype(np.int64) if scores else run[0] for run in (preds[i], preds[j]))
        return mcnemar_exact(la == y, lb == y)["p"]

    def draw(b: int) -> Any:
        return two_level(y, preds, metric, target_type, num_classes, b, seed, scores=scores, clusters=clusters)

    return verdicts(task, names, draw, [len(p) for p in preds], len(y), metric, higher_is_better, n_resamples, seed,
                    alpha, exact if linear_acc else None, unit if g < len(y) else "item", g)


def _pair_test(d: float, v: float, v_err: float) -> tuple[float, float]:
    """(p, its Monte-Carlo error) of the normal-theory test of a difference d with bootstrap
    variance v (Monte-Carlo error v_err): p = 2 (1 - Phi(|d| / sqrt(v)))."""
    if d == 0:
        return 1.0, 0.0
    if v <= 1e-24:
        return 0.0, 0.0
    z = abs(d) / math.sqrt(v)
    return math.erfc(z / math.sqrt(2)), NormalDist().pdf(z) * z / v * v_err


def _holm_errors(p: np.ndarray, err: np.ndarray) -> np.ndarray:
    """The Monte-Carlo error of each Holm-adjusted p: the error of the raw p that sets it,
    times its multiplier (0 where the adjusted p is capped at 1)."""
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    best = 0
    for k in range(m):
        if stepped[k] >= stepped[best]:
            best = k
        out[order[k]] = 0.0 if stepped[best] >= 1.0 else (m - best) * err[order[best]]
    return out


def verdicts(task: str, names: list[str], draw: Any, seeds: list[int], items: int, metric: str, higher_is_better: bool,
             n_resamples: int = DEFAULT_RESAMPLES, seed: Any = 0, alpha: float = ALPHA, exact: Any = None,
             unit: str = "item", clusters: int = 0) -> TaskSignificance:
    """The verdicts from ``draw(B)``, the entries' two-level resamples
    (:class:`mmbench.evaluation.resampling.TwoLevel`, or any weighted sum of them on the same
    draws, e.g. a robustness score). B starts at `n_resamples` and is multiplied by 4 (up to
    :data:`MAX_RESAMPLES`) while a Holm p's Monte-Carlo error exceeds :data:`MC_TARGET`;
    ``exact(i, j)``, when given, is the exact p of a pair of single runs (McNemar)."""
    sign = 1.0 if higher_is_better else -1.0
    b = int(n_resamples)
    while True:
        res = draw(b)
        raw = []
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                d = sign * float(res.point[i] - res.point[j])
                v, v_err, used = res.pair_variance(i, j)
                test = "two-level-bootstrap" if seeds[i] > 1 or seeds[j] > 1 else "item-bootstrap"
                if not math.isfinite(d) or not math.isfinite(v) or used < 2:
                    raw.append((i, j, d, math.nan, 1.0, 0.0, "undefined"))
                    continue
                p, p_err = _pair_test(d, max(v, 0.0), v_err)
                if exact is not None and seeds[i] == 1 and seeds[j] == 1:
                    p, p_err, test = exact(i, j), 0.0, "mcnemar-exact"
                raw.append((i, j, d, math.sqrt(max(v, 0.0)), min(1.0, p), p_err, test))
        p_raw = np.array([r[4] for r in raw])
        adjusted = holm(p_raw)
        errors = _holm_errors(p_raw, np.array([r[5] for r in raw])) if raw else np.zeros(0)
        if not raw or not np.any(np.abs(adjusted - alpha) < 3 * errors) or b >= MAX_RESAMPLES:
            break  # every verdict is decided: no Holm p within three Monte-Carlo errors of alpha
        b = min(MAX_RESAMPLES, 4 * b)
    z = NormalDist().inv_cdf
    pairs = []
    for (i, j, d, sd, p, _, test), ph, err in zip(raw, adjusted, errors):
        undecided = abs(ph - alpha) < 3 * err
        if test == "undefined":
            lo = hi = math.nan
        else:  # the interval at the pair's Holm level alpha * p / p_holm: excludes 0 iff p_holm < alpha
            level = alpha * p / ph if ph > 0 else alpha
            half = z(1 - level / 2) * sd if level > 0 else math.inf
            lo, hi = d - half, d + half
        pairs.append(PairTest(names[i], names[j], float(d), float(lo), float(hi), float(p), float(ph),
                              bool(ph < alpha and not undecided), format_p(p), format_p(ph), test, float(sd), float(err),
                              bool(undecided)))
    differ = {frozenset((t.a, t.b)) for t in pairs if t.significant}
    letters = compact_letters(list(names), differ)
    better = {a: {b_ for b_ in names[k + 1:]} for k, a in enumerate(names)}
    for t in pairs:  # a pair's direction is its difference's sign, whatever the listed order
        if t.diff < 0:
            better[t.a].discard(t.b)
            better[t.b].add(t.a)
    intervals = rank_intervals(list(names), differ, better)
    rows = tuple(RowSignificance(n, float(res.point[e]), seeds[e], letters[n], intervals[n], seeds[e] > 1)
                 for e, n in enumerate(names))
    single = [n for n, k in zip(names, seeds) if k == 1]
    mc = float(errors.max()) if len(errors) else 0.0
    caption = _caption(metric, items, seeds, single, len(pairs), b, any(t.test == "mcnemar-exact" for t in pairs),
                       unit, clusters or items, mc)
    return TaskSignificance(task, metric, bool(higher_is_better), items, b, int(seed if np.isscalar(seed) else seed[0]),
                            alpha, rows, tuple(pairs), caption, unit, clusters or items, mc)


def comparable_items(task: str, groups: dict[str, list[Any]]) -> list[str] | None:
    """The task's common test-id order when every entry stores test items on the same ids with
    the same targets; None (no significance for this task) otherwise."""
    ref = None
    for results in groups.values():
        for r in results:
            it = (r.extra or {}).get("test_items")
            if not it or not it.get("ids"):
                return None
            key = dict(zip(it["ids"], it["targets"]))
            if len(key) != len(it["ids"]):
                raise DataError(f"task {task!r}: entry {r.name!r} stores duplicate test ids")
            if ref is None:
                ref = key
            elif key != ref:
                return None
    return sorted(ref) if ref else None


def task_clusters(task: str, order: list[str], groups: dict[str, list[Any]]) -> tuple[list[str] | None, str]:
    """(the cluster key of each test id of `order`, the unit's name) from the entries' per-item
    records (``clusters``, parallel to ``ids``, and ``unit``); (None, "item") when no entry
    stores them (every item its own unit). A DataError when two entries disagree."""
    keys: dict[str, str] | None = None
    unit, source = "item", ""
    for name, results in groups.items():
        for r in results:
            it = r.extra["test_items"]
            if it.get("clusters") is None:
                continue
            mine = dict(zip(it["ids"], it["clusters"]))
            if keys is None:
                keys, source, unit = mine, name, it.get("unit") or "cluster"
            elif mine != keys or (it.get("unit") or "cluster") != unit:
                bad = next((i for i in order if mine.get(i) != keys.get(i)), order[0])
                raise DataError(f"task {task!r}: entries {source!r} and {name!r} store different clusters for test id "
                                f"{bad!r} ({keys.get(bad)!r} vs {mine.get(bad)!r}, units {unit!r} and "
                                f"{it.get('unit')!r}); run `mmbench leaderboard clusters`")
    return (None, "item") if keys is None else ([keys[i] for i in order], unit)


def task_seed(task: str, seed: int) -> list[int]:
    """The resampling seed of a task: the board's seed and a hash of the task's name."""
    return [seed, int.from_bytes(hashlib.blake2b(task.encode(), digest_size=4).digest(), "little")]


def comparable_queries(groups: dict[str, list[Any]]) -> list[str] | None:
    """The image ids (clusters) of a retrieval task when every entry stores per-query records
    (``extra["test_queries"]``) of the same queries in the same clusters; None otherwise."""
    ref = None
    for results in groups.values():
        for r in results:
            q = (r.extra or {}).get("test_queries")
            if not q:
                return None
            key = (tuple(q["t2i"]["ids"]), tuple(q["t2i"]["cluster"]), tuple(q["i2t"]["ids"]))
            if ref is None:
                ref = key
            elif key != ref:
                return None
    return sorted(set(ref[1]) | set(ref[2])) if ref else None


def retrieval_significance(task: str, ordered_names: list[str], groups: dict[str, list[Any]], metric: str,
                           higher_is_better: bool, n_resamples: int = DEFAULT_RESAMPLES,
                           seed: int = 0) -> TaskSignificance | None:
    """The verdicts for a retrieval task's entries from their per-query records: the same
    two-level paired bootstrap with the gallery's images as the clusters, each image resampled
    with all its captions (its text-to-image queries) and its own image-to-text query
    (:func:`mmbench.evaluation.resampling.retrieval_cluster_arrays`; recall@k is then a ratio of
    weighted sums, linearised like the other metrics); None without comparable records."""
    from mmbench.evaluation.resampling import retrieval_cluster_arrays, two_level

    order = comparable_queries({n: groups[n] for n in ordered_names})
    if order is None:
        return None
    captions, preds = None, []
    for name in ordered_names:
        seeds = []
        for r in sorted(groups[name], key=lambda r: (r.seed is None, r.seed or 0)):
            captions, sums = retrieval_cluster_arrays(r.extra["test_queries"], order)
            seeds.append(sums)
        preds.append(np.stack(seeds))
    rs = task_seed(task, seed)

    def draw(b: int) -> Any:
        return two_level(captions, preds, metric, "retrieval", None, b, rs)

    return verdicts(task, ordered_names, draw, [len(p) for p in preds], int(captions.sum()), metric, higher_is_better,
                    n_resamples, rs, unit="image", clusters=len(order))


def seed_arrays(groups: dict[str, list[Any]], names: list[str], order: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(targets, per name its ``[seeds, n]`` clean predictions) on the test ids in `order`, from
    each result's stored per-item record, seeds in seed order."""
    y, preds = None, []
    for name in names:
        seeds = []
        for r in sorted(groups[name], key=lambda r: (r.seed is None, r.seed or 0)):
            it = r.extra["test_items"]
            pos = {i: k for k, i in enumerate(it["ids"])}
            take = np.array([pos[i] for i in order])
            seeds.append(np.asarray(it["predictions"])[take])
            if y is None:
                y = np.asarray(it["targets"])[take]
        preds.append(np.stack(seeds))
    return y, preds


def task_significance(task: str, ordered_names: list[str], groups: dict[str, list[Any]], metric: str,
                      higher_is_better: bool, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> TaskSignificance | None:
    """The verdicts for a task's entries (``groups``: name -> its results, one per seed;
    ``ordered_names`` best first) from their stored test items (a retrieval task: its per-query
    records, :func:`retrieval_significance`); None when the entries do not all store test
    items on the same ids and targets."""
    if (groups[ordered_names[0]][0].extra or {}).get("test_queries"):
        return retrieval_significance(task, ordered_names, groups, metric, higher_is_better, n_resamples, seed)
    order = comparable_items(task, {n: groups[n] for n in ordered_names})
    if order is None:
        return None
    first = groups[ordered_names[0]][0].extra["test_items"]
    y, preds = seed_arrays(groups, ordered_names, order)
    clusters, unit = task_clusters(task, order, {n: groups[n] for n in ordered_names})
    return significance_from_arrays(task, ordered_names, y, preds, metric, first["target_type"], first["num_classes"],
                                    higher_is_better, n_resamples, task_seed(task, seed), scores=bool(first.get("scores")),
                                    clusters=clusters, unit=unit)


def annotate_ranking(rows: list[dict[str, Any]], entries: list[Any], n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0) -> dict[str, TaskSignificance | None]:
    """Add the verdicts to the ranked rows of :func:`mmbench.board.entries.rank` (in place):
    per row ``letters``, ``rank_interval`` ([best, worst]), ``seed_variance_known``,
    ``pairwise`` ({other entry: diff, ci_low, ci_high, p, p_holm, significant, p_display,
    p_holm_display, test}, diff = this row - other in the direction of better) and
    ``significance`` (:meth:`TaskSignificance.summary`: test, items, unit, clusters, B, pairs,
    correction, Monte-Carlo error, caption); all None for a task whose entries do not all store test items on the same
    ids. Returns {task: TaskSignificance or None}."""
    by_task: dict[str, dict[str, list[Any]]] = {}
    for e in entries:
        by_task.setdefault(e.task, {}).setdefault(e.name, []).append(e)
    out: dict[str, TaskSignificance | None] = {}
    for task, groups in by_task.items():
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        sig = task_significance(task, [r["name"] for r in task_rows], groups, task_rows[0]["primary_metric"],
                                task_rows[0]["higher_is_better"], n_resamples, seed)
        out[task] = sig
        matrix = sig.matrix() if sig else {}
        for r in task_rows:
            if sig is None:
                r.update(letters=None, rank_interval=None, seed_variance_known=None, pairwise=None, significance=None)
                continue
            row = sig.row(r["name"])
            r.update(letters=row.letters, rank_interval=list(row.rank_interval),
                     seed_variance_known=row.seed_variance_known, pairwise=matrix[r["name"]], significance=sig.summary())
    return out
