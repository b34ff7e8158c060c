"""The decision matrix of a task: which entries lead under each scenario, by the tests.

A scenario is the clean test set or one of the task's conditions (each modality removed, each
missing rate, each protocol pattern), read from the entries' stored predictions of that
condition (:mod:`mmbench.board.stored`, any submission format; `leaderboard verify` rescores the
same file). Every scenario gets the clean condition's test
(:func:`mmbench.evaluation.significance.verdicts_from_values` on
:func:`mmbench.evaluation.resampling.two_level_values`): the two-level paired bootstrap over the
test items and each entry's seeds, every pair of the scenario tested, Holm within the scenario,
compact letters and rank intervals.

- **top group**: the entries whose pair with the scenario's top-ranked entry has Holm-adjusted
  p >= 0.05 (the top-ranked entry included);
- **margin over the best single modality**: the scenario's best fusion minus its best
  single-modality entry, with that pair's Holm-adjusted p (None where the task has no fusion or
  no single-modality entry);
- **condition vs clean** (:class:`Change`): each entry's metric under a condition minus its clean
  value, tested on the same resamples (every scenario of a task draws the same test items, and
  an entry's seeds alike where every entry holds every condition, so the difference is paired);
  all of a task's entry-condition tests form one family, Holm-adjusted together. Findings such as
  "removing audio helps k of n fusions" count only the significant ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmbench.board.stored import condition_predictions
from mmbench.board.tables import cond_key, fmt, is_unimodal, mean_std

CLEAN = "clean"
ALPHA = 0.05  # the board's one rule (mmbench.evaluation.significance.ALPHA)


def scenario_label(cond: str) -> str:
    """How a reader names a scenario: clean, without audio, missing rate 0.5, only image."""
    kind, _, arg = cond.partition(":")
    return {"drop": f"without {arg}", "rate": f"missing rate {arg}", "pattern": f"only {arg.replace('+', ' + ')}"}.get(
        kind, cond)


@dataclass(frozen=True)
class Scenario:
    """One row of the decision matrix. ``verdicts``: the scenario's TaskSignificance (entries in
    the scenario's rank order); ``stats``: {name: (mean, std over seeds, seeds)} of the metric."""

    condition: str
    label: str
    verdicts: Any
    stats: dict
    top_group: tuple[str, ...]
    best_single: str | None
    best_fusion: str | None
    margin: float | None
    margin_p_holm: float | None
    margin_significant: bool | None

    @property
    def top(self) -> str:
        return self.verdicts.rows[0].name

    def to_json(self, task: str) -> dict[str, Any]:
        v = self.verdicts
        return {"task": task, "scenario": self.label, "condition": self.condition, "metric": v.metric,
                "higher_is_better": v.higher_is_better, "top_group": list(self.top_group),
                "best_fusion": self.best_fusion, "best_single_modality": self.best_single,
                "margin_over_best_single": self.margin,
                "margin_p_holm": self.margin_p_holm, "margin_significant": self.margin_significant,
                "rows": [{"name": r.name, "letters": r.letters, "mean": self.stats[r.name][0],
                          "std": self.stats[r.name][1], "seeds": r.seeds, "rank_interval": list(r.rank_interval)}
                         for r in v.rows],
                "test": v.summary()["test"], "pairs": len(v.pairs), "n_resamples": v.n_resamples,
                "correction": "holm within the scenario"}


@dataclass(frozen=True)
class Change:
    """An entry's metric under ``condition`` minus its clean value (``diff``, in the direction
    of better: negative = worse without it), raw and family-wise (Holm over the task) p."""

    name: str
    condition: str
    diff: float
    p: float
    p_holm: float
    significant: bool


@dataclass(frozen=True)
class TaskDecisions:
    task: str
    scenarios: tuple[Scenario, ...]
    changes: tuple[Change, ...]

    def scenario(self, condition: str) -> Scenario | None:
        return next((s for s in self.scenarios if s.condition == condition), None)

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json(self.task) for s in self.scenarios]


def _seed_order(results: list[Any]) -> list[Any]:
    return sorted(results, key=lambda r: (r.seed is None, r.seed or 0))


def task_decisions(task: str, rows: list[dict[str, Any]], results: list[Any], board_dir: Any,
                   n_resamples: int | None = None, seed: int = 0) -> TaskDecisions | None:
    """The decision matrix of one task (``rows``: its ranked rows; ``results``: its entries;
    ``board_dir``: where their predictions are stored); None when the entries do not store
    comparable per-item records (e.g. retrieval) or fewer than two entries do."""
    from mmbench.evaluation.resampling import TwoLevel, cluster_index, resampled_metric, two_level
    from mmbench.evaluation.significance import (DEFAULT_RESAMPLES, comparable_items, holm, task_clusters, task_seed,
                                                 verdicts)

    if len(rows) < 2:
        return None
    groups: dict[str, list[Any]] = {}
    for e in results:
        groups.setdefault(e.name, []).append(e)
    names = [r["name"] for r in rows if r["name"] in groups]
    order = comparable_items(task, {n: groups[n] for n in names})
    if order is None:
        return None
    metric, hib = rows[0]["primary_metric"], bool(rows[0]["higher_is_better"])
    first = groups[names[0]][0].extra["test_items"]
    tt, nc, scores = first["target_type"], first.get("num_classes"), bool(first.get("scores"))
    clusters, unit = task_clusters(task, order, {n: groups[n] for n in names})
    # {name: {condition: [seeds, n]}} from the stored per-item records and predictions files
    preds: dict[str, dict[str, np.ndarray]] = {}
    y = None
    for n in names:
        per_cond: dict[str, list[np.ndarray]] = {}
        runs = _seed_order(groups[n])
        for r in runs:
            it = r.extra["test_items"]
            pos = {i: k for k, i in enumerate(it["ids"])}
            take = np.array([pos[i] for i in order])
            if y is None:
                y = np.asarray(it["targets"])[take]
            stored = condition_predictions(board_dir, r) or {}
            stored[CLEAN] = np.asarray(it["predictions"])
            for c, p in stored.items():
                per_cond.setdefault(c, []).append(p[take])
        preds[n] = {c: np.stack(v) for c, v in per_cond.items() if len(v) == len(runs)}
    conds = sorted({c for n in names for c in preds[n]}, key=lambda c: (c != CLEAN, cond_key(c)))
    # a condition whose predictions equal an earlier scenario's for every entry (e.g. a pattern
    # that keeps every modality is the clean test set) is that scenario again: shown once
    kept: list[str] = []
    for c in conds:
        if not any(all(c in preds[n] and k in preds[n] and np.array_equal(preds[n][c], preds[n][k]) for n in names)
                   for k in kept):
            kept.append(c)
    b0 = int(n_resamples or DEFAULT_RESAMPLES)
    rs = task_seed(task, seed)  # one seed for every scenario: the same cluster draws, so conditions pair
    g = cluster_index(clusters, len(y))[1]
    unit = unit if g < len(y) else "item"
    ones = np.ones((1, len(y)), np.float32)
    cache: dict[tuple[str, int], Any] = {}

    def draw(c: str, b: int) -> Any:  # every entry holding c, in the clean order, on the task's draws
        if (c, b) not in cache:
            cache[(c, b)] = two_level(y, [preds[n][c] for n in names if c in preds[n]], metric, tt, nc, b, rs,
                                      scores=scores, clusters=clusters)
        return cache[(c, b)]

    points: dict[str, dict[str, float]] = {}
    scenarios = []
    uni = {r["name"] for r in rows if is_unimodal(r)}
    for c in kept:
        have = [n for n in names if c in preds[n]]
        if len(have) < 2:
            continue
        point = [float(resampled_metric(metric, tt, nc, y, preds[n][c], ones, scores).mean()) for n in have]
        for n, x in zip(have, point):
            points.setdefault(n, {})[c] = x
        rank = sorted(range(len(have)), key=lambda k: (-point[k] if hib else point[k], k))
        v = verdicts(task, [have[k] for k in rank], lambda b, c=c, rank=rank: draw(c, b).take(rank),
                     [len(preds[have[k]][c]) for k in rank], len(y), metric, hib, b0, rs, unit=unit, clusters=g)
        stats = {}
        for n in have:
            per_seed = [e.metrics[c][metric] for e in groups[n] if metric in e.metrics.get(c, {})]
            stats[n] = (*mean_std(per_seed), len(per_seed)) if per_seed else (points[n][c], None, len(preds[n][c]))
        top = v.rows[0].name
        group = tuple(r.name for r in v.rows if r.name == top or not v.pair(top, r.name).significant)
        single = next((r.name for r in v.rows if r.name in uni), None)
        fusion = next((r.name for r in v.rows if r.name not in uni), None)
        margin = p_m = sig_m = None
        if single is not None and fusion is not None:
            t = v.pair(fusion, single)
            margin, p_m, sig_m = t.diff, t.p_holm, t.significant
        scenarios.append(Scenario(c, scenario_label(c), v, stats, group, single, fusion, margin, p_m, sig_m))
    # condition vs clean, per entry, on the same cluster draws (the entry's seeds drawn as for two
    # entries: conservative); one Holm family per task
    shown = {s.condition for s in scenarios}
    raw = []
    for n in names:
        if CLEAN not in preds[n]:
            continue
        for c in [c for c in kept if c != CLEAN and c in shown and c in preds[n]]:
            def pair(b: int, n: str = n, c: str = c) -> Any:
                parts = []
                for cond in (c, CLEAN):
                    t = draw(cond, b)
                    parts.append(t.take([[m for m in names if cond in preds[m]].index(n)]))
                return TwoLevel(np.concatenate([p.values for p in parts]), *(sum((getattr(p, f) for p in parts), ())
                                for f in ("per_seed", "linear", "seed_points", "influence")), parts[0].seed_level)

            k = len(preds[n][c])
            t = verdicts(task, [f"{n} {c}", f"{n} clean"], pair, [k, k], len(y), metric, hib, b0, rs, unit=unit,
                         clusters=g).pair(f"{n} {c}", f"{n} clean")
            raw.append((n, c, t.diff, t.p))
    adjusted = holm([x[3] for x in raw]) if raw else []
    changes = tuple(Change(n, c, float(d), p, float(ph), bool(ph < ALPHA)) for (n, c, d, p), ph in zip(raw, adjusted))
    return TaskDecisions(task, tuple(scenarios), changes)


# --------------------------------------------------------------------------------------------
# what the page, the report and the summary show
# --------------------------------------------------------------------------------------------


def _names(names: list[str], limit: int = 6) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def matrix_table(dec: TaskDecisions):
    """The decision matrix as a board table: one row per scenario."""
    from mmbench.board.tables import Column, Table, cell, fmt_pm

    metric = dec.scenarios[0].verdicts.metric
    cols = [Column("scenario", "scenario", "asc", numeric=False),
            Column("top", "top group (not separated from the best)", "asc",
                   "entries whose pair with the scenario's best has Holm-adjusted p >= 0.05", numeric=False),
            Column("size", "in top group", "desc"),
            Column("best", f"best {metric} (mean ± std over seeds)", "desc"),
            Column("margin", "best fusion vs best single modality", "desc",
                   "the scenario's best fusion minus its best single-modality entry; * Holm-adjusted p < 0.05")]
    body = []
    for s in dec.scenarios:
        mean, std, _ = s.stats[s.top]
        margin = cell("-") if s.margin is None else cell(
            f"{s.best_fusion} {s.margin:+.4f} vs {s.best_single}{' *' if s.margin_significant else ''}", s.margin)
        body.append([cell(s.label), cell(", ".join(s.top_group)), cell(str(len(s.top_group)), len(s.top_group)),
                     cell(f"{s.top}: {fmt_pm(mean, std)}", mean), margin])
    return Table(cols, body, css="decisions", first_is_best=False)


def scenario_sentence(s: Scenario) -> str:
    """One line: who leads the scenario, by the test."""
    mean, std, _ = s.stats[s.top]
    head = f"{s.label[0].upper()}{s.label[1:]}: "
    if len(s.top_group) == 1:
        text = f"{s.top} ({fmt(mean, 3)}) leads, significantly ahead of every other entry"
    else:
        text = (f"{len(s.top_group)} entries are not separated from the best, {s.top} ({fmt(mean, 3)}): "
                f"{_names([n for n in s.top_group if n != s.top])}")
    if s.margin is not None:
        if s.margin_significant:
            verb = "beats" if s.margin > 0 else "trails"
            text += (f"; the best fusion, {s.best_fusion}, {verb} the best single modality, {s.best_single}, by "
                     f"{abs(s.margin):.3f} (significant)")
        else:
            text += (f"; the best fusion, {s.best_fusion}, and the best single modality, {s.best_single}, are not "
                     f"separated ({s.margin:+.3f})")
    return head + text + "."


def change_sentences(dec: TaskDecisions, rows: list[dict[str, Any]]) -> list[str]:
    """Per removed modality: how many entries it significantly helps or hurts (one Holm family
    over the task's entry-condition tests); nothing claimed from means."""
    fusions = {r["name"] for r in rows if not is_unimodal(r)}
    out = []
    family = len(dec.changes)
    for c in sorted({x.condition for x in dec.changes if x.condition.startswith("drop:")}):
        these = [x for x in dec.changes if x.condition == c and x.name in fusions]
        if not these:
            continue
        up = [x.name for x in these if x.significant and x.diff > 0]
        down = [x.name for x in these if x.significant and x.diff < 0]
        what = c.partition(":")[2]
        parts = []
        if up:
            parts.append(f"helps {len(up)} of {len(these)} fusions ({_names(up)})")
        if down:
            parts.append(f"hurts {len(down)} of {len(these)} fusions ({_names(down)})")
        if not parts:
            out.append(f"Removing {what} changes no fusion significantly (Holm over the task's {family} "
                       "entry-condition tests).")
        else:
            rest = len(these) - len(up) - len(down)
            out.append(f"Removing {what} {' and '.join(parts)}" + (f"; {rest} not significantly changed" if rest else "")
                       + f" (each entry against its own clean result, Holm over the task's {family} entry-condition tests).")
    return out
