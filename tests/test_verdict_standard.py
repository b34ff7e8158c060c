"""One standard for the board's verdicts (issue 32, items 3-5): on the shipped AV-MNIST and MOSI
boards the tests resample recordings and videos, the letters do not move with the bootstrap seed
(every Holm p within 0.005 over seeds 0-4), and the rank ranges come from the same decisions as
the letters: no range excludes a rank that some order agreeing with the decisions gives the
entry, on the shipped boards and on random ones."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from mmbench.board.entries import load_entries, rank
from mmbench.evaluation.significance import compact_letters, holm, rank_intervals, significance_from_arrays, task_significance
from tests._cli import run_main
from tests._datapaths import REPO

BOARD = REPO / "leaderboard"


def _task(task):
    entries = load_entries(BOARD, task)
    rows = rank(entries, significance=False)
    groups = {}
    for e in entries:
        groups.setdefault(e.name, []).append(e)
    return [r["name"] for r in rows], groups, rows[0]["primary_metric"], rows[0]["higher_is_better"]


@pytest.mark.parametrize("task,unit,clusters", [("avmnist", "recording", 250), ("mosi", "video", 31)])
def test_shipped_letters_do_not_depend_on_the_bootstrap_seed(task, unit, clusters):
    names, groups, metric, hib = _task(task)
    runs = [task_significance(task, names, groups, metric, hib, seed=s) for s in range(5)]
    assert all(s.unit == unit and s.clusters == clusters and f"resampled by {unit}" in s.caption for s in runs)
    assert len({tuple(r.letters for r in s.rows) for s in runs}) == 1
    assert len({tuple(r.rank_interval for r in s.rows) for s in runs}) == 1
    p_holm = np.array([[t.p_holm for t in s.pairs] for s in runs])
    assert float((p_holm.max(axis=0) - p_holm.min(axis=0)).max()) <= 0.005
    assert all(t.mc_error <= 0.001 and not t.undecided for s in runs for t in s.pairs)
    for s in runs:  # each pair's interval excludes 0 exactly when the pair differs
        for t in s.pairs:
            assert (t.ci_low > 0 or t.ci_high < 0) == t.significant, t


def test_cluster_resampling_finds_fewer_avmnist_pairs_than_item_resampling():
    """The issue's high-precision check: 18 pairs apart with items resampled, 14 with recordings."""
    names, groups, metric, hib = _task("avmnist")
    plain = {n: [e.model_copy(update={"extra": e.extra | {"test_items": {k: v for k, v in e.extra["test_items"].items()
                                                                          if k not in ("clusters", "unit")}}})
                 for e in g] for n, g in groups.items()}
    by_item = task_significance("avmnist", names, plain, metric, hib)
    by_rec = task_significance("avmnist", names, groups, metric, hib)
    assert by_item.unit == "item" and sum(t.significant for t in by_item.pairs) == 18
    assert sum(t.significant for t in by_rec.pairs) == 14
    assert {(t.a, t.b) for t in by_rec.pairs if t.significant} <= {(t.a, t.b) for t in by_item.pairs if t.significant}


def test_the_command_takes_a_bootstrap_seed(monkeypatch, capsys):
    outs = []
    for seed in ("0", "3"):
        rc, out, err = run_main(["leaderboard", "mosi", "--dir", BOARD, "--format", "json", "--bootstrap-seed", seed],
                                monkeypatch, capsys)
        assert rc == 0, err
        outs.append(json.loads(out))
    assert [r["letters"] for r in outs[0]["entries"]] == [r["letters"] for r in outs[1]["entries"]]
    assert outs[1]["entries"][0]["significance"]["seed"] == 3 and outs[0]["entries"][0]["significance"]["unit"] == "video"


def _feasible_ranks(names, differ, better):
    """Every rank each name takes in some order agreeing with the significant pairs (brute force)."""
    out = {n: set() for n in names}
    for perm in itertools.permutations(names):
        pos = {n: i for i, n in enumerate(perm)}
        if all(pos[a] < pos[b] for a in names for b in better[a] if frozenset((a, b)) in differ):
            for n in names:
                out[n].add(pos[n] + 1)
    return out


def _check_consistent(names, differ, better, intervals):
    letters = compact_letters(list(names), differ)
    feasible = _feasible_ranks(names, differ, better)
    for n in names:
        lo, hi = intervals[n]
        assert feasible[n] and min(feasible[n]) >= lo and max(feasible[n]) <= hi, (n, feasible[n], intervals[n])
    for a, b in itertools.combinations(names, 2):  # a pair the letters leave open: neither range rules out a swap
        if set(letters[a]) & set(letters[b]):
            assert intervals[a][0] <= intervals[b][1] and intervals[b][0] <= intervals[a][1] or \
                min(feasible[a]) > max(feasible[b]) or min(feasible[b]) > max(feasible[a])  # forced by a chain a > c > b


@pytest.mark.parametrize("task", ["avmnist", "mosi"])
def test_shipped_rank_ranges_never_exclude_a_rank_the_letters_leave_open(task):
    names, groups, metric, hib = _task(task)
    sig = task_significance(task, names, groups, metric, hib)
    differ = {frozenset((t.a, t.b)) for t in sig.pairs if t.significant}
    better = {n: set() for n in names}
    for t in sig.pairs:
        (better[t.a].add(t.b) if t.diff > 0 else better[t.b].add(t.a))
    # permutations of 11 entries are too many: check the formula, then the property on the decisions' closure
    intervals = {r.name: r.rank_interval for r in sig.rows}
    assert intervals == rank_intervals(names, differ, better)
    for n in names:
        assert intervals[n][0] == 1 + sum(1 for m in names if frozenset((m, n)) in differ and n in better[m])
        assert intervals[n][1] == len(names) - sum(1 for m in names if frozenset((m, n)) in differ and m in better[n])
    assert "minimum detectable" not in sig.caption and "95% bootstrap interval" not in sig.caption


def test_random_boards_rank_ranges_agree_with_the_letters():
    rng = np.random.default_rng(12)
    for trial in range(150):
        k = int(rng.integers(2, 7))
        names = [f"e{i}" for i in range(k)]
        pairs = list(itertools.combinations(names, 2))
        adjusted = holm(rng.random(len(pairs)) ** rng.uniform(1, 8))
        differ = {frozenset(p) for p, ph in zip(pairs, adjusted) if ph < 0.05}
        better = {n: set(names[i + 1:]) for i, n in enumerate(names)}
        _check_consistent(names, differ, better, rank_intervals(names, differ, better))
    # and end to end, from predictions: the ranges the verdicts report
    for trial in range(20):
        y = rng.integers(0, 3, 200)
        accs = np.sort(rng.uniform(0.5, 0.9, int(rng.integers(2, 6))))[::-1]
        preds = [np.stack([np.where(rng.random(200) < a + rng.normal(0, 0.02), y, (y + 1) % 3) for _ in range(3)])
                 for a in accs]
        names = [f"m{i}" for i in range(len(accs))]
        sig = significance_from_arrays("r", names, y, preds, "accuracy", "multiclass", 3, True, 300, seed=trial,
                                       clusters=(np.arange(200) // 4).astype(str))
        differ = {frozenset((t.a, t.b)) for t in sig.pairs if t.significant}
        better = {n: set() for n in names}
        for t in sig.pairs:
            (better[t.a].add(t.b) if t.diff > 0 else better[t.b].add(t.a))
        _check_consistent(names, differ, better, {r.name: r.rank_interval for r in sig.rows})
