"""Robustness to missing modalities that does not reward weak models: MultiBench's relative and
effective robustness, per seed, with their spread over seeds.

Definitions (MultiBench, Liang et al. 2021, ``eval_scripts/robustness.py`` of
https://github.com/pliang279/MultiBench):

- **relative robustness** (``relative_robustness_helper``): the area under the curve of the
  metric against the noise level, by the trapezoid rule. MultiBench's levels are 0, 0.1, ..., 1
  (spacing 0.1); mmbench's are the task's missing rates (0 = the clean test set, then every
  ``rate:R`` condition), not evenly spaced, so the trapezoids use the actual spacing and the
  area is divided by the rate range: the value is the mean of the metric over the missing rates,
  in the metric's own units (equal to the evaluation's ``auc_rate``). MultiBench then max-min
  normalises over the methods it lists; mmbench does not, so an entry's value does not change
  when other entries are added.
- **effective robustness** (``effective_robustness_helper``): the metric curve ``f`` minus the
  late-fusion curve ``lf`` shifted to start at ``f``'s clean value,
  ``sum(f - (lf + f[0] - lf[0]))``. The reference is the task's ``late`` entry (its mean curve
  over seeds); mmbench averages the difference over the rate range by the same trapezoid rule
  as relative robustness (MultiBench sums over its evenly spaced levels), so both are in metric
  units. Positive: the entry loses less than late fusion does from the same starting point.
  Without a ``late`` entry on the task the value is not defined (None).

For a lower-is-better metric both are kept in the metric's own direction (a lower relative
robustness is better; effective robustness is then negative where the entry degrades less).
Each is computed per seed from that seed's curve; a row carries the mean over seeds and the
sample standard deviation (``_std``; 0 for a single run).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from mmbench.board.stored import condition_predictions
from mmbench.board.tables import mean_std, rate_of as tables_rate_of

REFERENCE_FUSION = "late"


def rate_of(condition: str) -> float | None:
    """The missing rate of a condition name: 0 for ``clean``, R for ``rate:R``, else None."""
    if condition == "clean":
        return 0.0
    r = tables_rate_of(condition)
    return r if r is not None and math.isfinite(r) else None


def rate_curve(metrics: dict[str, dict[str, float]], metric: str) -> dict[float, float]:
    """{missing rate: metric} of one result's conditions (clean = rate 0)."""
    out = {}
    for cond, vals in metrics.items():
        r = rate_of(cond)
        v = vals.get(metric)
        if r is not None and isinstance(v, (int, float)) and math.isfinite(v):
            out[r] = float(v)
    return out


def _trapezoid_mean(xs: Sequence[float], ys: Sequence[float]) -> float:
    area = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2.0 for i in range(len(xs) - 1))
    return area / (xs[-1] - xs[0])


def relative_robustness(curve: dict[float, float]) -> float | None:
    """Trapezoid area under the metric-vs-missing-rate curve divided by the rate range (None
    without a clean value and at least one other rate)."""
    if 0.0 not in curve or len(curve) < 2:
        return None
    xs = sorted(curve)
    return _trapezoid_mean(xs, [curve[x] for x in xs])


def effective_robustness(curve: dict[float, float], reference: dict[float, float]) -> float | None:
    """Mean over the rate range (trapezoid) of ``f - (lf + f(0) - lf(0))`` on the rates both
    curves have; None without a clean value in both and another common rate."""
    common = sorted(set(curve) & set(reference))
    if 0.0 not in common or len(common) < 2:
        return None
    shift = curve[0.0] - reference[0.0]
    return _trapezoid_mean(common, [curve[x] - (reference[x] + shift) for x in common])


def reference_curve(results: list[Any], metric: str) -> dict[float, float]:
    """The mean curve over seeds of the reference entry's results (rates every seed has)."""
    curves = [rate_curve(r.metrics, metric) for r in results]
    common = set.intersection(*(set(c) for c in curves)) if curves else set()
    return {x: sum(c[x] for c in curves) / len(curves) for x in common}


def robustness_fields(results: list[Any], metric: str, reference: dict[float, float] | None) -> dict[str, float | None]:
    """``relative_robustness``, ``effective_robustness`` and their ``_std`` over one entry's
    seeds (``results``: its seeds' Result records); None where a value is not defined."""
    out: dict[str, float | None] = {}
    curves = [rate_curve(r.metrics, metric) for r in results]
    for key, fn in (("relative_robustness", relative_robustness),
                    ("effective_robustness", (lambda c: effective_robustness(c, reference)) if reference else None)):
        vals = [v for c in curves if fn is not None and (v := fn(c)) is not None]
        if vals and len(vals) == len(curves):
            out[key], out[f"{key}_std"] = mean_std(vals)
        else:
            out[key], out[f"{key}_std"] = None, None
    return out


def annotate_robustness(rows: list[dict[str, Any]], entries: list[Any]) -> list[dict[str, Any]]:
    """Add ``relative_robustness``, ``effective_robustness`` and their ``_std`` to every row of
    :func:`mmbench.board.entries.rank` (in place, and returned), on each task's primary metric."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for e in entries:
        groups.setdefault((e.task, e.name), []).append(e)
    refs: dict[str, dict[float, float] | None] = {}
    for r in rows:
        task, metric = r["task"], r["primary_metric"]
        if task not in refs:
            late = groups.get((task, REFERENCE_FUSION))
            refs[task] = reference_curve(late, metric) if late else None
        r.update(robustness_fields(groups[(task, r["name"])], metric, refs[task]))
    return rows


# --------------------------------------------------------------------------------------------
# verdicts on relative robustness: the primary metric's two-level test, on the same draws
# --------------------------------------------------------------------------------------------


def rate_weights(rates: Sequence[float]) -> dict[float, float]:
    """Trapezoid weights over the rates (0 first) that make ``sum(w_r * f(r))`` the relative
    robustness: each rate gets half of each neighbouring interval, over the range."""
    xs = sorted(rates)
    span = xs[-1] - xs[0]
    w = {x: 0.0 for x in xs}
    for a, b in zip(xs, xs[1:]):
        w[a] += (b - a) / 2 / span
        w[b] += (b - a) / 2 / span
    return w


def seed_condition_arrays(board_dir: str | Path, results: Sequence[Any], conditions: Sequence[str],
                          order: Sequence[str]) -> tuple[Any, dict[str, Any]] | None:
    """(targets, {condition: [seeds, n] predictions}) of one entry's seeds (``results``) on the
    test ids in ``order``: ``clean`` from the stored per-item records, every other condition from
    the stored predictions file under ``board_dir`` (any submission format,
    :func:`mmbench.board.stored.condition_predictions`); None when a seed lacks one of them."""
    import numpy as np

    per: dict[str, list[Any]] = {c: [] for c in ("clean", *conditions)}
    y = None
    for r in sorted(results, key=lambda r: (r.seed is None, r.seed or 0)):
        others = set(conditions) - {"clean"}
        stored = condition_predictions(board_dir, r, others) if others else {}
        if stored is None or any(c not in stored for c in others):
            return None
        it = r.extra["test_items"]
        pos = {i: k for k, i in enumerate(it["ids"])}
        if any(i not in pos for i in order):
            return None
        take = np.array([pos[i] for i in order])
        per["clean"].append(np.asarray(it["predictions"])[take])
        for c in others:
            per[c].append(np.asarray(stored[c])[take])
        if y is None:
            y = np.asarray(it["targets"])[take]
    return y, {c: np.stack(v) for c, v in per.items()}


def robustness_verdicts(task: str, rows: list[dict[str, Any]], results: list[Any], board_dir: str | Path | None,
                        n_resamples: int | None = None, seed: int = 0) -> Any:
    """Letters, rank intervals and the pairwise matrix of a task's entries on relative
    robustness, from the same two-level bootstrap as the primary metric
    (:mod:`mmbench.evaluation.significance`): each resample draws the test items (shared by
    every entry and every missing rate) and each entry's seeds; an entry's value on a resample
    is the trapezoid-weighted sum over the rates of its metric on those items and seeds.
    Returns {"relative": TaskSignificance, "effective": TaskSignificance or None (no late
    entry)}: effective robustness is relative robustness minus the clean value plus a constant
    of the late curve, so it is tested on the same draws.
    ``rows``: the task's rows; ``results``: its entries. None when an entry lacks stored
    per-item predictions (``predictions_file`` under ``board_dir``) for a rate or the clean
    test items."""
    import numpy as np

    from mmbench.evaluation.resampling import TwoLevel, cluster_index, two_level
    from mmbench.evaluation.significance import DEFAULT_RESAMPLES, comparable_items, task_clusters, task_seed, verdicts

    have = [r for r in rows if r.get("relative_robustness") is not None]
    if board_dir is None or len(have) < 2:
        return None
    hib = bool(rows[0]["higher_is_better"])
    metric = rows[0]["primary_metric"]
    names = [r["name"] for r in sorted(have, key=lambda r: -r["relative_robustness"] if hib else r["relative_robustness"])]
    groups: dict[str, list[Any]] = {}
    for e in results:
        groups.setdefault(e.name, []).append(e)
    order = comparable_items(task, {n: groups[n] for n in names})
    if order is None:
        return None
    rate_sets = [set(rate_curve(e.metrics, metric)) for n in names for e in groups[n]]
    rates = sorted(set.intersection(*rate_sets))
    if 0.0 not in rates or len(rates) < 2:
        return None
    conds = {f"rate:{x:g}": x for x in rates if x > 0}
    by_rate: dict[float, list[np.ndarray]] = {x: [] for x in rates}
    first = groups[names[0]][0].extra["test_items"]
    y = None
    for n in names:
        got = seed_condition_arrays(board_dir, groups[n], list(conds), order)
        if got is None:
            return None
        y, per_cond = got
        by_rate[0.0].append(per_cond["clean"])
        for c, x in conds.items():
            by_rate[x].append(per_cond[c])
    w = rate_weights(rates)
    tt, nc = first["target_type"], first["num_classes"]
    rs = task_seed(task, seed)
    clusters, unit = task_clusters(task, order, {n: groups[n] for n in names})
    g = cluster_index(clusters, len(y))[1]
    seeds = [len(groups[n]) for n in names]
    late = groups.get(REFERENCE_FUSION)
    ref = reference_curve(late, metric) if late else {}

    def per_rate(b: int) -> dict[float, TwoLevel]:
        return {x: two_level(y, by_rate[x], metric, tt, nc, b, rs, clusters=clusters) for x in rates}

    def relative(b: int) -> TwoLevel:
        return TwoLevel.combine([(w[x], r) for x, r in per_rate(b).items()])

    b0 = int(n_resamples or DEFAULT_RESAMPLES)
    rel = verdicts(task, names, relative, seeds, len(y), f"relative robustness ({metric} over missing rates 0 to "
                   f"{rates[-1]:g})", hib, b0, rs, unit=unit if g < len(y) else "item", clusters=g)
    out = {"relative": rel, "effective": None}
    if all(x in ref for x in rates):
        # effective robustness = relative robustness - clean value + a constant of the late curve (which no
        # difference sees): tested on the same draws
        def effective(b: int) -> TwoLevel:
            parts = per_rate(b)
            return TwoLevel.combine([(w[x], r) for x, r in parts.items()] + [(-1.0, parts[0.0])])

        eff0 = effective(2)
        order_e = sorted(range(len(names)), key=lambda e: -eff0.point[e] if hib else eff0.point[e])
        eff = verdicts(task, [names[e] for e in order_e], lambda b: effective(b).take(order_e),
                       [seeds[e] for e in order_e], len(y), f"effective robustness ({metric}, against late "
                       "fusion)", hib, b0, rs, unit=unit if g < len(y) else "item", clusters=g)
        # the rows' values are effective robustness itself: the late curve's constant put back
        const = sum(w[x] * ref[x] for x in rates) - ref[0.0]
        out["effective"] = replace(eff, rows=tuple(replace(r, value=r.value - const) for r in eff.rows))
    return out


def annotate_robustness_verdicts(rows: list[dict[str, Any]], sig: dict[str, Any] | None) -> None:
    """``robustness_letters`` (relative robustness) and ``effective_letters`` on each of a
    task's rows (in place; None where the task has no such verdicts)."""
    for key, which in (("robustness_letters", "relative"), ("effective_letters", "effective")):
        verdicts = (sig or {}).get(which)
        for r in rows:
            row = next((x for x in verdicts.rows if x.name == r["name"]), None) if verdicts else None
            r[key] = row.letters if row else None
