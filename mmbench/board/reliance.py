"""Modality reliance: how much of an entry's score each modality carries, and how evenly.

Per entry and seed, on the task's primary metric, the worth of a set S of present modalities is
``v(S) = s * (metric(S) - chance)``: the metric when only the modalities of S are given to every
test item (``clean`` for all of them, ``drop:<m>`` for all but m, ``pattern:<S>`` otherwise),
minus the task's chance level (a uniform guess, :mod:`mmbench.evaluation.reference_points`),
with ``s = +1`` for a higher-is-better metric and ``-1`` otherwise, so that a positive worth is
better than chance. The empty set is worth 0: no condition leaves an item with nothing, so the
only principled value for "no modality" is the uniform guess, never what a model outputs on an
empty input (issue 32: that output once earned an entry its robustness).

- **contribution** of m: ``v(N) - v(N \\ {m})``, the metric lost when m alone is removed from
  every test item (clean minus ``drop:m``, in the metric's better direction).
- **Shapley value** of m (Shapley 1953, "A value for n-person games"): the mean of m's marginal
  gain ``v(S + m) - v(S)`` over all orders in which the modalities can be added,
  ``phi_m = sum_{S not containing m} |S|! (n - |S| - 1)! / n! * (v(S + m) - v(S))``. It is computed
  exactly from the ``2^n`` pattern conditions (n is 2 or 3 here). Efficiency: the values sum to
  ``v(N) - v(empty) = s * (clean - chance)``; an additive game (``v(S) = sum of parts``) gives
  each modality its part; a modality that changes nothing gets 0 (the tests check all three).
- **equity**: how evenly the Shapley values are spread over the modalities, Pielou's evenness
  ``J = H(p) / ln n`` (Pielou 1966, "The measurement of diversity in different types of
  biological collections", J. Theor. Biol. 13) of the shares ``p_m = max(phi_m, 0) / sum_k
  max(phi_k, 0)``, with ``H`` Shannon's entropy (Shannon 1948): 1 when every modality carries
  the same share, 0 when one carries everything; undefined (None) with fewer than two modalities
  or no positive value. Negative values (a modality that hurts) count as no share. MissBench
  (arXiv 2603.09874) introduces a Modality Equity Index of how fairly modalities contribute
  across missing-modality configurations; the search tool reached its abstract but not its
  formula, so mmbench does not claim to reproduce MEI: this is the named evenness index above.

Modalities that no test item has (MOSI's vision in the offline release) are not players: those
an entry names in ``extra.absent_modalities`` (masks protocol 2, :mod:`mmbench.evaluation.presence`)
and, for entries scored before it, a modality whose removal leaves every metric of every seed of
every entry of the task unchanged (with two or more entries); pattern names are matched with or
without them. A condition evaluated once under another name (``extra.condition_aliases``: equal
masks) is looked up under that name. A row carries the mean over seeds and the sample std
(``std``) of each value.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

from mmbench.board.tables import mean_std


def shapley_values(players: Sequence[str], worth: Callable[[frozenset[str]], float]) -> dict[str, float]:
    """Exact Shapley values of the game ``worth`` (a function of a frozenset of players, the
    empty set included) over ``players``."""
    n = len(players)
    out = {}
    for m in players:
        others = [p for p in players if p != m]
        total = 0.0
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for s in itertools.combinations(others, k):
                s = frozenset(s)
                total += weight * (worth(s | {m}) - worth(s))
        out[m] = total
    return out


def equity(values: dict[str, float] | Sequence[float]) -> float | None:
    """Pielou's evenness of the positive parts of ``values`` (see the module docstring)."""
    vals = list(values.values()) if isinstance(values, dict) else list(values)
    if len(vals) < 2:
        return None
    pos = [max(float(v), 0.0) for v in vals]
    total = sum(pos)
    if total <= 0:
        return None
    h = -sum(p / total * math.log(p / total) for p in pos if p > 0)
    return h / math.log(len(vals))


def absent_modalities(results: Sequence[Any]) -> set[str]:
    """Modalities no test item has: those the entries name (``extra.absent_modalities``), and
    those whose ``drop:`` condition equals ``clean`` on every metric of every entry (entries
    scored before they named them; only with two or more entry names)."""
    named = {m for r in results for m in (r.extra or {}).get("absent_modalities", [])}
    if len({r.name for r in results}) < 2:
        return named
    drops = {c[5:] for r in results for c in r.metrics if c.startswith("drop:")}
    return named | {m for m in drops if all(r.metrics.get(f"drop:{m}") == r.metrics.get("clean") for r in results)}


def with_aliases(result: Any) -> dict[str, dict[str, float]]:
    """A result's metrics per condition, with every condition it evaluated under another name
    (``extra.condition_aliases``: equal masks) given that condition's metrics."""
    metrics = dict(result.metrics)
    for name, same in ((result.extra or {}).get("condition_aliases") or {}).items():
        if name not in metrics and same in result.metrics:
            metrics[name] = result.metrics[same]
    return metrics


def condition_of(coalition: frozenset[str], players: Sequence[str], absent: set[str],
                 metrics: dict[str, dict[str, float]]) -> str | None:
    """The condition name under which exactly ``coalition`` of ``players`` is present (None when
    the entry has none)."""
    names = []
    if set(coalition) == set(players):
        names.append("clean")
    missing = set(players) - set(coalition)
    if len(missing) == 1:
        names.append(f"drop:{next(iter(missing))}")
    for extra in ((), tuple(sorted(absent))):
        if coalition:
            names.append("pattern:" + "+".join(sorted(set(coalition) | set(extra))))
    return next((n for n in names if n in metrics), None)


def entry_reliance(metrics: dict[str, dict[str, float]], metric: str, players: Sequence[str], absent: set[str],
                   chance: float | None, higher_is_better: bool) -> dict[str, Any]:
    """One result's ``contribution`` and (where every coalition was evaluated and chance is
    known) ``shapley`` per modality and ``equity``; missing values are None."""
    sign = 1.0 if higher_is_better else -1.0
    clean = metrics.get("clean", {}).get(metric)
    contribution = {}
    for m in players:
        under = metrics.get(f"drop:{m}", {}).get(metric)
        contribution[m] = sign * (clean - under) if clean is not None and under is not None else None
    out: dict[str, Any] = {"contribution": contribution, "shapley": None, "equity": None}
    if chance is None or len(players) < 2:
        return out
    worth: dict[frozenset[str], float] = {frozenset(): 0.0}
    for k in range(1, len(players) + 1):
        for s in itertools.combinations(players, k):
            cond = condition_of(frozenset(s), players, absent, metrics)
            value = metrics.get(cond, {}).get(metric) if cond else None
            if value is None:
                return out
            worth[frozenset(s)] = sign * (value - chance)
    out["shapley"] = shapley_values(players, worth.__getitem__)
    out["equity"] = equity(out["shapley"])
    return out


def _summarise(per_seed: list[dict[str, Any]], players: Sequence[str]) -> dict[str, Any]:
    """Mean and sample std over seeds of each value (None unless every seed has it)."""
    out: dict[str, Any] = {"contribution": {}, "shapley": {}, "equity": None,
                           "std": {"contribution": {}, "shapley": {}, "equity": None}}
    for key in ("contribution", "shapley"):
        for m in players:
            vals = [s[key][m] for s in per_seed if s.get(key) and s[key].get(m) is not None]
            if vals and len(vals) == len(per_seed):
                out[key][m], out["std"][key][m] = mean_std(vals)
        if not out[key]:
            out[key] = None
            out["std"][key] = None
    vals = [s["equity"] for s in per_seed if s.get("equity") is not None]
    if vals and len(vals) == len(per_seed):
        out["equity"], out["std"]["equity"] = mean_std(vals)
    return out


def task_reliance(results: Sequence[Any], metric: str, higher_is_better: bool, chance: float | None) -> dict[str, dict[str, Any]]:
    """{entry name: reliance} for one task's results (see the module docstring): each value's
    mean over seeds with its ``std``, plus ``metric``, ``chance``, ``modalities`` (the
    players), ``absent`` and ``seeds``."""
    absent = absent_modalities(results)
    metrics = {id(r): with_aliases(r) for r in results}
    players = sorted({c[5:] for m in metrics.values() for c in m if c.startswith("drop:")} - absent)
    groups: dict[str, list[Any]] = {}
    for r in results:
        groups.setdefault(r.name, []).append(r)
    out = {}
    for name, group in groups.items():
        if not players:
            continue
        per_seed = [entry_reliance(metrics[id(r)], metric, players, absent, chance, higher_is_better) for r in group]
        out[name] = _summarise(per_seed, players) | {
            "metric": metric, "chance": chance, "modalities": players, "absent": sorted(absent), "seeds": len(group)}
    return out


def annotate_reliance(rows: list[dict[str, Any]], entries: Sequence[Any]) -> list[dict[str, Any]]:
    """Add ``reliance`` (see :func:`task_reliance`; None for a task without drop conditions) to
    every row of :func:`mmbench.board.entries.rank`, on each task's primary metric with the
    uniform guess as chance. In place, and returned."""
    from mmbench.board.summary import chance_level

    by_task: dict[str, list[Any]] = {}
    for e in entries:
        by_task.setdefault(e.task, []).append(e)
    cache: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        task = r["task"]
        if task not in cache:
            results = by_task.get(task, [])
            hib = bool(r["higher_is_better"])
            cache[task] = task_reliance(results, r["primary_metric"], hib, chance_level(results, r["primary_metric"]))
        r["reliance"] = cache[task].get(r["name"])
    return rows
