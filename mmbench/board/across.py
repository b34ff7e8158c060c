"""Fusion methods ranked across tasks, as MTEB and HELM rank models over many datasets.

Tasks hold 4 to 11 entries, so a raw rank is not comparable across them. Within each task an
entry's rank r on the primary metric (1 = best; tied values share their average rank) becomes
the **normalised rank** ``(r - 1) / (n - 1)`` (0 = best, 1 = last of n); a method's score is
its mean normalised rank over the tasks where it has an entry (lower is better).

- **interval**: a 95% percentile bootstrap interval of the mean normalised rank, resampling at
  both levels: the tasks (drawn with replacement, B times) and, within each drawn task, the
  test items and each entry's seeds (the task's two-level resample of
  :func:`mmbench.evaluation.resampling.two_level_values`, which re-ranks the entries on every
  resample); a task without per-item records (retrieval) keeps its observed ranks.
- **win rate**: over every (task, other method) pair where both have an entry, the share the
  method is better on the primary metric (a tie counts one half) (HELM's head-to-head win rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmbench.board.tables import num

ACROSS_RESAMPLES = 1000


def normalised_ranks(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """``(r - 1) / (n - 1)`` per entry along axis 0 (``values``: ``[n]`` or ``[n, B]``), r the
    average rank of tied values; 0 for a lone entry."""
    v = np.asarray(values, dtype=float)
    v = -v if higher_is_better else v
    n = v.shape[0]
    if n < 2:
        return np.zeros_like(v)
    below = (v[None, ...] < v[:, None, ...]).sum(axis=1)  # entries strictly better
    ties = (v[None, ...] == v[:, None, ...]).sum(axis=1)  # itself included
    rank = below + (ties + 1) / 2.0
    return (rank - 1) / (n - 1)


@dataclass(frozen=True)
class AcrossRow:
    name: str
    tasks: tuple[str, ...]
    mean_rank: float
    mean_rank_interval: tuple[float, float]
    win_rate: float | None
    pairs: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "tasks": list(self.tasks), "n_tasks": len(self.tasks), "mean_rank": self.mean_rank,
                "mean_rank_interval": list(self.mean_rank_interval), "win_rate": self.win_rate,
                "win_rate_pairs": self.pairs}


def _task_resamples(task: str, task_rows: list[dict[str, Any]], results: list[Any], b: int, seed: int) -> np.ndarray | None:
    """``[entries, b]`` two-level resampled primary metric of a task's rows (None without
    comparable per-item records)."""
    from mmbench.evaluation.resampling import two_level_values
    from mmbench.evaluation.significance import comparable_items, seed_arrays, task_clusters, task_seed

    groups: dict[str, list[Any]] = {}
    for e in results:
        groups.setdefault(e.name, []).append(e)
    names = [r["name"] for r in task_rows]
    if any(n not in groups for n in names):
        return None
    order = comparable_items(task, {n: groups[n] for n in names})
    if order is None:
        return None
    y, preds = seed_arrays(groups, names, order)
    clusters, _ = task_clusters(task, order, {n: groups[n] for n in names})  # the task's resampling unit
    it = groups[names[0]][0].extra["test_items"]
    return two_level_values(y, preds, task_rows[0]["primary_metric"], it["target_type"], it.get("num_classes"), b,
                            task_seed(task, seed), scores=bool(it.get("scores")), clusters=clusters)


def across_tasks(rows: list[dict[str, Any]], results: list[Any], n_resamples: int = ACROSS_RESAMPLES,
                 seed: int = 0) -> list[AcrossRow]:
    """Every method (entry name) with entries on at least one task of two or more ranked
    entries, best mean normalised rank first; [] with fewer than two such tasks."""
    from mmbench.board.testsets import partition_by_test_set

    results = partition_by_test_set(list(results))  # labelled as the rows are (<task>@<fingerprint> where split)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if num(r.get(r["primary_metric"])) is not None:
            by_task.setdefault(r["task"], []).append(r)
    tasks = sorted(t for t, rs in by_task.items() if len(rs) >= 2)
    if len(tasks) < 2:
        return []
    b = int(n_resamples)
    point: dict[str, dict[str, float]] = {}  # task -> name -> normalised rank
    boot: dict[str, dict[str, np.ndarray]] = {}  # task -> name -> [b] normalised ranks
    for t in tasks:
        rs = by_task[t]
        hib = bool(rs[0]["higher_is_better"])
        vals = np.array([r[r["primary_metric"]] for r in rs], dtype=float)
        nr = normalised_ranks(vals, hib)
        point[t] = {r["name"]: float(x) for r, x in zip(rs, nr)}
        res = _task_resamples(t, rs, [e for e in results if e.task == t], b, seed)
        if res is None:
            boot[t] = {r["name"]: np.full(b, x) for r, x in zip(rs, nr)}
        else:
            res = np.where(np.isfinite(res), res, -np.inf if hib else np.inf)  # undefined: last
            bn = normalised_ranks(res, hib)
            boot[t] = {r["name"]: bn[k] for k, r in enumerate(rs)}
    names = sorted({n for t in tasks for n in point[t]})
    rng = np.random.default_rng([seed, len(tasks)])
    draws = rng.integers(0, len(tasks), size=(b, len(tasks)))  # tasks drawn with replacement
    out = []
    for n in names:
        mine = [t for t in tasks if n in point[t]]
        mean = float(np.mean([point[t][n] for t in mine]))
        sums, counts = np.zeros(b), np.zeros(b)
        for k, t in enumerate(tasks):
            if n in point[t]:
                times = (draws == k).sum(axis=1)
                sums += times * boot[t][n]
                counts += times
        ok = counts > 0  # a resample without any of the method's tasks says nothing about it
        sample = sums[ok] / counts[ok]
        lo, hi = (float(np.quantile(sample, q)) for q in (0.025, 0.975)) if sample.size else (mean, mean)
        wins, pairs = 0.0, 0
        for t in mine:
            rs = by_task[t]
            hib = bool(rs[0]["higher_is_better"])
            me = next(r for r in rs if r["name"] == n)
            for o in rs:
                if o["name"] == n:
                    continue
                a, c = me[me["primary_metric"]], o[o["primary_metric"]]
                wins += 0.5 if a == c else float((a > c) == hib)
                pairs += 1
        out.append(AcrossRow(n, tuple(mine), mean, (lo, hi), wins / pairs if pairs else None, pairs))
    out.sort(key=lambda r: (r.mean_rank, -len(r.tasks), r.name))
    return out


def across_table(rows: list[AcrossRow]):
    """The index's cross-task table."""
    from mmbench.board.tables import Column, Table, cell, fmt

    cols = [Column("name", "method", "asc", numeric=False),
            Column("mean_rank", "mean normalised rank", "asc",
                   "(r - 1) / (n - 1) within each task (0 = best), averaged over the method's tasks; lower is better"),
            Column("interval", "95% interval", "asc", "bootstrap over tasks and, within each, its resampling units and seeds"),
            Column("win_rate", "win rate", "desc", "share of (task, other method) pairs it beats on the primary metric"),
            Column("tasks", "tasks", "desc", "tasks where the method has an entry"),
            Column("task_names", "on", "asc", numeric=False)]
    body = [[cell(r.name), cell(fmt(r.mean_rank, 3), r.mean_rank),
             cell(f"{fmt(r.mean_rank_interval[0], 2)}-{fmt(r.mean_rank_interval[1], 2)}", r.mean_rank_interval[0]),
             cell("-" if r.win_rate is None else f"{r.win_rate:.0%} of {r.pairs}", r.win_rate),
             cell(str(len(r.tasks)), len(r.tasks)), cell(", ".join(r.tasks))] for r in rows]
    return Table(cols, body, css="across", first_is_best=False)


def tied_leaders(task_rows: list[dict[str, Any]], letters_key: str, value_key: str) -> list[dict[str, Any]]:
    """The rows sharing the first letter of the best row by `value_key` (all tied at the top by
    the task's test); just the best row where the task has no letters."""
    have = [r for r in task_rows if num(r.get(value_key)) is not None]
    if not have:
        return []
    hib = bool(have[0]["higher_is_better"])
    have.sort(key=lambda r: -r[value_key] if hib else r[value_key])
    top = str(have[0].get(letters_key) or "")
    if not top:
        return have[:1]
    return [r for r in have if top[0] in str(r.get(letters_key) or "")]


def leader_text(task_rows: list[dict[str, Any]], letters_key: str, value_key: str, metric: str) -> str:
    """``lowrank (accuracy 0.7506), tied with 6: late, mult, ...`` (tie-aware, for the index)."""
    from mmbench.board.tables import fmt

    lead = tied_leaders(task_rows, letters_key, value_key)
    if not lead:
        return "-"
    head = f"{lead[0]['name']} ({metric} {fmt(lead[0][value_key])})"
    if len(lead) == 1:
        return head + (", ahead of every other entry" if lead[0].get(letters_key) else "")
    others = [r["name"] for r in lead[1:]]
    return f"{head}, tied with {others[0]}" if len(others) == 1 else f"{head} and {len(others)} tied (see the task page)"
