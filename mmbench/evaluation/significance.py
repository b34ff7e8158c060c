"""Paired significance between entries of one task scored on the same test items.

Every result stores its clean per-item predictions (``extra["test_items"]``: ids, targets,
predictions, target type, class count), so two entries of a task can be compared item by
item on the board without the data:

- **paired bootstrap** of the primary metric: the test items are resampled with replacement
  (the same resamples, seeded, for every entry of the task), each entry's metric is computed
  on every resample for each of its seeds and averaged over the seeds; the difference of two
  entries' values over the resamples gives a 95% percentile interval and a two-sided p-value.
- **exact McNemar** for accuracy when both entries are single runs: of the items exactly one
  of the two gets right, how many each gets; two-sided exact binomial test at 1/2 (the same
  p-value as ``scipy.stats.binomtest(b, b + c, 0.5)``).

Two entries are *distinguishable at 95%* when the test's p-value is below 0.05 (for the
bootstrap: when the interval excludes 0). :func:`annotate_ranking` marks, for each rank,
whether it is distinguishable from the next, groups consecutive ranks that are not (a new
group starts after each distinguishable step) and states the smallest difference the task's
test set resolves at the measured seed spread (:func:`resolvable_difference`).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from mmbench.core.errors import DataError

ALPHA = 0.05
Z_975 = 1.959963984540054  # the standard normal's 97.5% quantile


# ------------------------------------------------------------------------------------------
# per-item predictions stored in a result
# ------------------------------------------------------------------------------------------


def item_record(ids: Any, targets: Any, predictions: Any, target_type: str, num_classes: int | None) -> dict[str, Any]:
    """What a result stores (``extra["test_items"]``) for paired tests: the clean condition's
    prediction for every test id, with its target."""
    preds = np.asarray(predictions)
    as_list = preds.astype(float).tolist() if target_type == "regression" else preds.astype(np.int64).tolist()
    targs = np.asarray(targets)
    return {"ids": [str(i) for i in ids], "targets": targs.astype(float).tolist() if target_type == "regression"
            else targs.astype(np.int64).tolist(), "predictions": as_list, "target_type": target_type,
            "num_classes": num_classes}


def metric_value(target_type: str, num_classes: int | None, metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from mmbench.evaluation.metrics import compute_metrics

    return float(compute_metrics(target_type, y_true, y_pred, num_classes)[metric])


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


def bootstrap_resamples(n: int, n_resamples: int, seed: int, chunk: int = 100):
    """Seeded item indices ``[<=chunk, n]`` per block, the same for every entry of a task."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_resamples - start), n))


def bootstrap_values(items: list[dict[str, Any]], metric: str, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """An entry's primary metric on each bootstrap resample of the test items, averaged over its
    seeds (``items``: one aligned test-items record per seed). Accuracy is linear in the items,
    so it is the resampled mean of the per-item correctness averaged over the seeds; any other
    metric is computed per resample and seed."""
    first = items[0]
    y = np.asarray(first["targets"])
    preds = [np.asarray(it["predictions"]) for it in items]
    out = np.empty(n_resamples)
    pos = 0
    linear = metric == "accuracy" and first["target_type"] in ("multiclass", "binary")
    correct = np.mean([p == y for p in preds], axis=0) if linear else None
    for idx in bootstrap_resamples(len(y), n_resamples, seed):
        if linear:
            out[pos : pos + len(idx)] = correct[idx].mean(axis=1)
        else:
            for j, row in enumerate(idx):
                out[pos + j] = np.mean([metric_value(first["target_type"], first["num_classes"], metric, y[row], p[row])
                                        for p in preds])
        pos += len(idx)
    return out


def paired_test(a: dict[str, Any], b: dict[str, Any], higher_is_better: bool = True) -> dict[str, Any]:
    """Compare entries ``a`` and ``b`` (from :func:`entry_samples`): the exact McNemar test when
    both are single runs scored by accuracy, else the paired bootstrap. ``diff`` is a - b in
    the metric's direction of better (positive: a is better)."""
    sign = 1.0 if higher_is_better else -1.0
    diff = sign * (a["value"] - b["value"])
    d = sign * (a["bootstrap"] - b["bootstrap"])
    lo, hi = (float(v) for v in np.percentile(d, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)]))
    n = len(d)
    p_boot = min(1.0, 2.0 * min((np.sum(d <= 0) + 1) / (n + 1), (np.sum(d >= 0) + 1) / (n + 1)))
    out = {"diff": float(diff), "ci_low": lo, "ci_high": hi, "diff_std": float(np.std(d, ddof=1)) if n > 1 else 0.0}
    if a["metric"] == "accuracy" and a["seeds"] == 1 and b["seeds"] == 1 and a.get("correct") is not None:
        m = mcnemar_exact(a["correct"], b["correct"])
        out |= {"test": "mcnemar-exact", "p": m["p"], "only_a": m["b"], "only_b": m["c"],
                "distinguishable": bool(m["p"] < ALPHA)}
    else:
        out |= {"test": "paired-bootstrap", "p": float(p_boot), "distinguishable": bool(lo > 0 or hi < 0)}
    return out


# ------------------------------------------------------------------------------------------
# entries of a task
# ------------------------------------------------------------------------------------------


def entry_samples(name: str, results: list[Any], order: list[str], metric: str, n_resamples: int, seed: int) -> dict[str, Any]:
    """An entry's seeds aligned to the task's test-id ``order``, with its bootstrap values."""
    aligned = []
    for r in results:
        it = r.extra["test_items"]
        pos = {i: k for k, i in enumerate(it["ids"])}
        take = np.array([pos[i] for i in order])
        aligned.append({**it, "ids": order, "targets": np.asarray(it["targets"])[take],
                        "predictions": np.asarray(it["predictions"])[take]})
    y = aligned[0]["targets"]
    tt, nc = aligned[0]["target_type"], aligned[0]["num_classes"]
    values = [metric_value(tt, nc, metric, y, a["predictions"]) for a in aligned]
    single_correct = aligned[0]["predictions"] == y if len(aligned) == 1 and tt in ("multiclass", "binary") else None
    boot = bootstrap_values(aligned, metric, n_resamples, seed)
    return {"name": name, "metric": metric, "seeds": len(aligned), "value": float(np.mean(values)),
            "seed_std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "bootstrap": boot, "test_std": float(np.std(boot, ddof=1)), "correct": single_correct}


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


def _task_seed(task: str, seed: int) -> list[int]:
    return [seed, int.from_bytes(hashlib.blake2b(task.encode(), digest_size=4).digest(), "little")]


def resolvable_difference(samples: list[dict[str, Any]], pair_stds: list[float]) -> float | None:
    """The smallest difference of two entries' means (seeds averaged) that the task's test set
    resolves at 95%: ``1.96 * sqrt(s_pair^2 + 2 s_seed^2 / k)``, with ``s_pair`` the median
    bootstrap standard deviation of a paired difference (test-set sampling; an unpaired
    ``sqrt(2)`` times an entry's own when there is one entry), ``s_seed`` the median seed
    standard deviation of the entries and ``k`` their median number of seeds."""
    if not samples:
        return None
    s_pair = float(np.median(pair_stds)) if pair_stds else math.sqrt(2.0) * float(np.median([s["test_std"] for s in samples]))
    seed_stds = [s["seed_std"] for s in samples if s["seed_std"] is not None]
    k = float(np.median([s["seeds"] for s in samples]))
    s_seed = float(np.median(seed_stds)) if seed_stds else 0.0
    return Z_975 * math.sqrt(s_pair**2 + 2.0 * s_seed**2 / max(k, 1.0))


def task_significance(task: str, ordered_names: list[str], groups: dict[str, list[Any]], metric: str,
                      higher_is_better: bool, n_resamples: int = 1000, seed: int = 0, matrix: bool = False) -> dict[str, Any] | None:
    """Significance of a task's ranking (``ordered_names`` best first): each rank against the
    next, groups, the resolvable difference and, with ``matrix``, every pair."""
    order = comparable_items(task, {n: groups[n] for n in ordered_names})
    if order is None:
        return None
    samples = {n: entry_samples(n, groups[n], order, metric, n_resamples, _task_seed(task, seed)) for n in ordered_names}
    vs_next = {a: paired_test(samples[a], samples[b], higher_is_better) for a, b in zip(ordered_names, ordered_names[1:])}
    pairs: dict[str, dict[str, Any]] = {}
    if matrix:
        for i, a in enumerate(ordered_names):
            for b in ordered_names[i + 1 :]:
                pairs[f"{a}|{b}"] = paired_test(samples[a], samples[b], higher_is_better)
    pair_stds = [t["diff_std"] for t in (pairs or vs_next).values()]
    group, groups_of = 1, {}
    for i, name in enumerate(ordered_names):
        groups_of[name] = group
        if name in vs_next and vs_next[name]["distinguishable"]:
            group += 1
    return {"items": len(order), "n_resamples": n_resamples, "seed": seed, "vs_next": vs_next, "group": groups_of,
            "test_std": {n: s["test_std"] for n, s in samples.items()},
            "resolvable_difference": resolvable_difference(list(samples.values()), pair_stds), "pairs": pairs}


def annotate_ranking(rows: list[dict[str, Any]], entries: list[Any], n_resamples: int = 1000, seed: int = 0,
                     matrix: bool = False) -> list[dict[str, Any]]:
    """Add the significance fields to the ranked rows of :func:`mmbench.board.entries.rank` (in
    place, and returned): per row ``group`` (consecutive ranks not distinguishable share one),
    ``tied`` (its group has other rows), ``distinct_from_next`` (None for the last) and
    ``vs_next`` (the test against the next rank), and ``resolvable_difference`` for its task.
    A task whose entries do not all store test items on the same ids gets None for each."""
    by_task: dict[str, dict[str, list[Any]]] = {}
    for e in entries:
        by_task.setdefault(e.task, {}).setdefault(e.name, []).append(e)
    for task, groups in by_task.items():
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        names = [r["name"] for r in task_rows]
        sig = task_significance(task, names, groups, task_rows[0]["primary_metric"], task_rows[0]["higher_is_better"],
                                n_resamples, seed, matrix)
        sizes: dict[int, int] = {}
        if sig:
            for g in sig["group"].values():
                sizes[g] = sizes.get(g, 0) + 1
        for r in task_rows:
            if sig is None:
                r.update(group=None, tied=None, distinct_from_next=None, vs_next=None, resolvable_difference=None)
                continue
            nxt = sig["vs_next"].get(r["name"])
            r.update(group=sig["group"][r["name"]], tied=sizes[sig["group"][r["name"]]] > 1,
                     distinct_from_next=None if nxt is None else nxt["distinguishable"],
                     vs_next=None if nxt is None else {"name": names[names.index(r["name"]) + 1], **nxt},
                     resolvable_difference=sig["resolvable_difference"], test_std=sig["test_std"][r["name"]],
                     significance_items=sig["items"])
            if matrix:
                r["pairwise"] = {k: v for k, v in sig["pairs"].items() if k.split("|")[0] == r["name"]}
    return rows
