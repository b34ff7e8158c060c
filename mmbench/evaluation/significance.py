"""Verdicts a task's entries support: a two-level paired bootstrap over test items and seeds,
every pair tested and Holm-adjusted, compact letters, rank intervals and one minimum
detectable difference.

Every result stores its clean per-item predictions (``extra["test_items"]``: ids, targets,
predictions, target type, class count), so the entries of a task are compared item by item
without the data. :func:`task_significance` (entries) and :func:`significance_from_arrays`
(arrays) return a frozen :class:`TaskSignificance`:

- **the test** (:mod:`mmbench.evaluation.resampling`): B seeded resamples; each draws the
  test items with replacement, the same draw for both entries of a pair (paired), and draws
  each entry's seeds with replacement, independently per entry; an entry's value on a resample
  is the mean over its drawn seeds of the primary metric on the drawn items (any metric). So
  the seed spread of each entry is part of the test, not only the test-set sampling
  (Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks", MLSys;
  Dror et al. 2019, "Deep dominance", ACL). The two-sided p is from the centred bootstrap
  distribution: ``p = (1 + #{|d*_b - d| >= |d|}) / (B + 1)`` with ``d`` the observed difference
  and ``d*_b`` its resampled values, and the 95% interval is the symmetric interval
  ``d +- q`` with ``q`` the 95% quantile of ``|d*_b - d|`` (Hall 1988; Davison & Hinkley 1997,
  sec. 4.4 and 5.2), the interval that inverts the same test. Pairs of single-run entries
  scored by accuracy use the exact McNemar test instead (McNemar 1947; Dietterich 1998), and
  a single-run entry's row says that its seed variance is unknown.
- **all pairs, corrected**: every pair of the task is tested; p-values are adjusted with
  Holm's step-down procedure (Holm 1979, "A simple sequentially rejective multiple test
  procedure", Scand. J. Statist. 6), which controls the family-wise error over the task's
  pairs. One rule gives every verdict and marker: a pair differs iff ``p_holm < 0.05``.
- **compact letters**: Piepho's insert-and-absorb algorithm (Piepho 2004, "An algorithm for a
  letter-based representation of all-pairwise comparisons", J. Comput. Graph. Statist. 13):
  two rows share a letter iff their pair does not differ; letters are given in rank order.
- **rank intervals**: the 2.5% and 97.5% quantiles of each entry's rank over the same
  resamples (rank 1 + number of entries strictly better; Hall & Miller 2009, "Using the
  bootstrap to quantify the authority of an empirical ranking", Ann. Statist. 37).
- **minimum detectable difference** (:func:`minimum_detectable_difference`): the true
  difference a pair of the task's typical entries needs to be found with 80% power at
  family-wise alpha 0.05 over the task's m pairs (the Bonferroni bound, which Holm's first
  step uses): ``(z_{1-alpha/(2m)} + z_{0.8}) * s``, ``s`` the median over pairs of the
  bootstrap standard deviation of the difference (the power analysis of Card et al. 2020,
  "With little power comes great responsibility", EMNLP).

A p-value at the resampling floor ``1/(B+1)`` is shown as ``p < 1/(B+1)`` (:func:`format_p`),
never as an exact value. B is raised where the floor would make every Holm-adjusted p at
least alpha (``m / (B + 1) >= alpha``).
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
POWER = 0.8
DEFAULT_RESAMPLES = 2000


# ------------------------------------------------------------------------------------------
# per-item predictions stored in a result
# ------------------------------------------------------------------------------------------


def item_record(ids: Any, targets: Any, predictions: Any, target_type: str, num_classes: int | None,
                scores: bool = False) -> dict[str, Any]:
    """What a result stores (``extra["test_items"]``) for paired tests: the clean condition's
    prediction for every test id, with its target. With `scores` (a binary task scored from
    label-1 scores, such as AUROC) the predictions are the real-valued scores and the record
    says so (``"scores": true``); labels are then ``score > 0.5``. Multi-label probabilities
    are stored as their 0/1 label sets (``score > 0.5``)."""
    preds = np.asarray(predictions)
    if target_type == "multilabel" and preds.dtype.kind == "f":
        preds = preds > 0.5  # the label sets every multi-label metric reads (metrics.multilabel_metrics)
    real = target_type == "regression" or scores
    as_list = preds.astype(float).tolist() if real else preds.astype(np.int64).tolist()
    targs = np.asarray(targets)
    return {"ids": [str(i) for i in ids], "targets": targs.astype(float).tolist() if target_type == "regression"
            else targs.astype(np.int64).tolist(), "predictions": as_list, "target_type": target_type,
            "num_classes": num_classes} | ({"scores": True} if scores else {})


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


def rank_intervals(values: np.ndarray, higher_is_better: bool, level: float = 0.95) -> list[tuple[int, int]]:
    """Per entry (rows of ``values``, ``[entries, B]``), the central `level` interval of its
    rank over the resamples (rank = 1 + entries strictly better), as (best, worst)."""
    v = values if higher_is_better else -values
    ranks = 1 + (v[None, :, :] > v[:, None, :]).sum(axis=1)  # [entries, B]
    lo = np.quantile(ranks, (1 - level) / 2, axis=1, method="lower")
    hi = np.quantile(ranks, (1 + level) / 2, axis=1, method="higher")
    return [(int(a), int(b)) for a, b in zip(lo, hi)]


def minimum_detectable_difference(diff_sds: Any, n_pairs: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The one minimum detectable difference of a task: ``(z_{1-alpha/(2m)} + z_power) * s``,
    with m = `n_pairs` and s the median of the pairs' bootstrap standard deviations of the
    difference. None without pairs."""
    sds = np.asarray(diff_sds, dtype=float)
    if sds.size == 0 or n_pairs < 1:
        return None
    z = NormalDist().inv_cdf
    return float((z(1 - alpha / (2 * n_pairs)) + z(power)) * np.median(sds))


def p_floor(n_resamples: int) -> float:
    return 1.0 / (n_resamples + 1)


def format_p(p: float, n_resamples: int | None = None) -> str:
    """A p-value for display: ``p < 1/(B+1)`` (B = `n_resamples`, e.g. ``p < 1/2001``) when a
    bootstrap p is at the resampling floor, else 2 significant digits (``p = 0.031``)."""
    if n_resamples is not None and p <= p_floor(n_resamples) * (1 + 1e-9):
        return f"p < 1/{n_resamples + 1}"
    return "p = 1" if p >= 0.995 else f"p = {p:.2g}"


# ------------------------------------------------------------------------------------------
# the result
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairTest:
    """One pair ``a`` vs ``b`` (``a`` ranked above ``b``): ``diff`` is a - b in the direction
    of better (positive: a is better), ``ci_low``/``ci_high`` its 95% interval, ``p`` the raw
    two-sided p, ``p_holm`` Holm-adjusted over the task's pairs, ``significant`` = p_holm <
    alpha (the one rule for verdicts and markers), ``p_display``/``p_holm_display`` as shown
    (:func:`format_p`), ``test`` "two-level-bootstrap", "item-bootstrap" (both single runs),
    "mcnemar-exact" or "undefined" (the metric is undefined on the test set: p 1, interval NaN),
    ``diff_sd`` the bootstrap standard deviation of the difference."""

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

    def oriented(self, first: str) -> PairTest:
        """The same test read from `first`'s side (diff and interval negated when first is b)."""
        if first == self.a:
            return self
        return PairTest(self.b, self.a, -self.diff, -self.ci_high, -self.ci_low, self.p, self.p_holm, self.significant,
                        self.p_display, self.p_holm_display, self.test, self.diff_sd)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("diff", "ci_low", "ci_high", "p", "p_holm", "significant", "p_display",
                                               "p_holm_display", "test")}


@dataclass(frozen=True)
class RowSignificance:
    """One entry: ``value`` (seed mean of the metric on the test items), ``seeds``,
    ``letters`` (compact letter display), ``rank_interval`` (best, worst) and
    ``seed_variance_known`` (False for a single run)."""

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
    (B), ``seed``, ``alpha``, ``rows`` (:class:`RowSignificance`, in the ranked order given),
    ``pairs`` (:class:`PairTest`, every pair, a ranked above b), ``mdd`` (the minimum
    detectable difference, None with one entry) and ``caption`` (one sentence stating the
    test, the seeds, the number of pairs and the correction). :meth:`pair` reads a pair from
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
    mdd: float | None
    caption: str
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
                "n_resamples": self.n_resamples, "seed": self.seed, "alpha": self.alpha, "pairs": len(self.pairs),
                "correction": "holm", "mdd": self.mdd, "caption": self.caption}


# ------------------------------------------------------------------------------------------
# computing it
# ------------------------------------------------------------------------------------------


def _caption(metric: str, items: int, seeds: list[int], single: list[str], n_pairs: int, b: int, mcnemar: bool,
             mdd: float | None, unit: str = "test items") -> str:
    if n_pairs == 0:
        return f"One entry, scored on {items:,} {unit}: no pair to test."
    lo, hi = min(seeds), max(seeds)
    if hi == 1:
        head = f"Paired bootstrap of {metric} over the {items:,} {unit} (single runs: seed variance unknown; B = {b:,} resamples)"
    else:
        unknown = f", seed variance unknown for the single run{'s' if len(single) > 1 else ''} {', '.join(single)}" if single else ""
        head = (f"Two-level paired bootstrap of {metric} over the {items:,} {unit} and each entry's seeds "
                f"({lo if lo == hi else f'{lo}-{hi}'} seeds per entry{unknown}; B = {b:,} resamples)")
    return (f"{head}{', exact McNemar p-values for pairs of single runs' if mcnemar else ''}; "
            f"{'the one pair' if n_pairs == 1 else f'all {n_pairs} pairs'} tested, p-values Holm-adjusted: rows sharing a "
            f"letter are not distinguishable at family-wise alpha {ALPHA:g}, rank intervals are 95% bootstrap intervals"
            + (f", and a difference below {mdd:.4f} is not detected with 80% power." if mdd is not None else "."))


def significance_from_arrays(task: str, names: list[str], y: Any, preds: list[Any], metric: str, target_type: str,
                             num_classes: int | None, higher_is_better: bool, n_resamples: int = DEFAULT_RESAMPLES,
                             seed: Any = 0, alpha: float = ALPHA, scores: bool = False,
                             unit: str = "test items") -> TaskSignificance:
    """The verdicts for entries `names` (best first) with ``preds[e]`` the ``[seeds, n]``
    predictions of entry e on the shared items with targets `y` (label-1 scores with
    `scores`); `seed` seeds the resamples; `unit` names the items in the caption."""
    from mmbench.evaluation.resampling import resampled_metric, two_level_values

    y = np.asarray(y)
    preds = [np.atleast_2d(np.asarray(p)) for p in preds]
    n_pairs = len(names) * (len(names) - 1) // 2
    b = max(int(n_resamples), math.ceil(2 * n_pairs / alpha)) if n_pairs / (n_resamples + 1) >= alpha else int(n_resamples)
    values = two_level_values(y, preds, metric, target_type, num_classes, b, seed, scores=scores)
    ones = np.ones((1, len(y)), np.float32)
    point = [float(resampled_metric(metric, target_type, num_classes, y, p, ones, scores).mean()) for p in preds]
    linear_acc = metric == "accuracy" and target_type in ("multiclass", "binary")

    def exact(i: int, j: int) -> float:
        la, lb = ((run[0] > 0.5).astype(np.int64) if scores else run[0] for run in (preds[i], preds[j]))
        return mcnemar_exact(la == y, lb == y)["p"]

    return verdicts_from_values(task, names, values, point, [len(p) for p in preds], len(y), metric, higher_is_better,
                                b, seed, alpha, exact if linear_acc else None, unit=unit)


def verdicts_from_values(task: str, names: list[str], values: np.ndarray, point: list[float], seeds: list[int],
                         items: int, metric: str, higher_is_better: bool, b: int, seed: Any = 0, alpha: float = ALPHA,
                         exact: Any = None, unit: str = "test items") -> TaskSignificance:
    """The verdicts from each entry's value (``point``) and its ``[entries, b]`` two-level
    resampled values (:func:`mmbench.evaluation.resampling.two_level_values`, or any
    statistic built from them on the same draws, e.g. a robustness score); ``exact(i, j)``,
    when given, is the exact p of a pair of single runs (McNemar)."""
    preds = [range(k) for k in seeds]  # only their lengths are read below
    sign = 1.0 if higher_is_better else -1.0
    raw = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            d = sign * (point[i] - point[j])
            dist = sign * (values[i] - values[j])
            dist = dist[np.isfinite(dist)]  # a resample where the metric is undefined (one class drawn) is left out
            if not math.isfinite(d) or dist.size < 2:
                raw.append((i, j, d, math.nan, math.nan, 1.0, "undefined", math.nan))
                continue
            dev = np.abs(dist - d)
            q = float(np.quantile(dev, 1 - alpha))
            p = (1.0 + np.count_nonzero(dev >= abs(d) - 1e-12)) / (b + 1) if d != 0 else 1.0
            test = "two-level-bootstrap" if len(preds[i]) > 1 or len(preds[j]) > 1 else "item-bootstrap"
            if exact is not None and len(preds[i]) == 1 and len(preds[j]) == 1:
                p, test = exact(i, j), "mcnemar-exact"
            raw.append((i, j, d, d - q, d + q, min(1.0, p), test, float(np.std(dist, ddof=1))))
    adjusted = holm([r[5] for r in raw])
    pairs = []
    for (i, j, d, lo, hi, p, test, sd), ph in zip(raw, adjusted):
        boot = test.endswith("bootstrap")
        # a raw p at the floor is an upper bound, and so is its adjusted value
        ph_text = f"p < {ph:.2g}" if boot and p <= p_floor(b) * (1 + 1e-9) else format_p(ph)
        pairs.append(PairTest(names[i], names[j], float(d), float(lo), float(hi), float(p), float(ph), bool(ph < alpha),
                              format_p(p, b if boot else None), ph_text, test, sd))
    letters = compact_letters(list(names), {frozenset((t.a, t.b)) for t in pairs if t.significant})
    intervals = rank_intervals(values, higher_is_better)
    rows = tuple(RowSignificance(n, point[e], len(preds[e]), letters[n], intervals[e], len(preds[e]) > 1)
                 for e, n in enumerate(names))
    mdd = minimum_detectable_difference([t.diff_sd for t in pairs if math.isfinite(t.diff_sd)], len(pairs), alpha)
    single = [n for n, p in zip(names, preds) if len(p) == 1]
    caption = _caption(metric, items, [len(p) for p in preds], single, len(pairs), b,
                       any(t.test == "mcnemar-exact" for t in pairs), mdd, unit)
    return TaskSignificance(task, metric, bool(higher_is_better), items, b, int(seed if np.isscalar(seed) else seed[0]),
                            alpha, rows, tuple(pairs), mdd, caption)


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
    two-level paired bootstrap, its items the gallery's images, each resampled with all its
    captions (text-to-image queries clustered by image); None without comparable records."""
    from mmbench.evaluation.resampling import retrieval_cluster_arrays

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
    return significance_from_arrays(task, ordered_names, captions, preds, metric, "retrieval", None, higher_is_better,
                                    n_resamples, task_seed(task, seed), unit="images (each with its captions)")


def task_significance(task: str, ordered_names: list[str], groups: dict[str, list[Any]], metric: str,
                      higher_is_better: bool, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> TaskSignificance | None:
    """The verdicts for a task's entries (``groups``: name -> its results, one per seed;
    ``ordered_names`` best first) from their stored test items (a retrieval task: its per-query
    records, :func:`retrieval_significance`); None when the entries do not all store test
    items on the same ids and targets."""
    first = groups[ordered_names[0]][0]
    if (first.extra or {}).get("test_queries"):
        return retrieval_significance(task, ordered_names, groups, metric, higher_is_better, n_resamples, seed)
    order = comparable_items(task, {n: groups[n] for n in ordered_names})
    if order is None:
        return None
    first = groups[ordered_names[0]][0].extra["test_items"]
    y, preds = None, []
    for name in ordered_names:
        seeds = []
        for r in sorted(groups[name], key=lambda r: (r.seed is None, r.seed or 0)):
            it = r.extra["test_items"]
            pos = {i: k for k, i in enumerate(it["ids"])}
            take = np.array([pos[i] for i in order])
            seeds.append(np.asarray(it["predictions"])[take])
            if y is None:
                y = np.asarray(it["targets"])[take]
        preds.append(np.stack(seeds))
    return significance_from_arrays(task, ordered_names, y, preds, metric, first["target_type"], first["num_classes"],
                                    higher_is_better, n_resamples, task_seed(task, seed), scores=bool(first.get("scores")))


def annotate_ranking(rows: list[dict[str, Any]], entries: list[Any], n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0) -> dict[str, TaskSignificance | None]:
    """Add the verdicts to the ranked rows of :func:`mmbench.board.entries.rank` (in place):
    per row ``letters``, ``rank_interval`` ([best, worst]), ``seed_variance_known``,
    ``pairwise`` ({other entry: diff, ci_low, ci_high, p, p_holm, significant, p_display,
    p_holm_display, test}, diff = this row - other in the direction of better) and
    ``significance`` (:meth:`TaskSignificance.summary`: test, items, B, pairs, correction,
    mdd, caption); all None for a task whose entries do not all store test items on the same
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
