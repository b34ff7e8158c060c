"""Paired significance between entries: exact McNemar and the paired bootstrap against scipy and
hand-worked cases, and the board's groups of ranks that are not distinguishable."""

from __future__ import annotations

import math

import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats")

from mmbench.board.entries import rank, render
from mmbench.evaluation.metrics import compute_metrics
from mmbench.evaluation.results import make_result
from mmbench.evaluation.significance import (
    bootstrap_values,
    exact_binomial_two_sided,
    item_record,
    mcnemar_exact,
    paired_test,
)


def test_exact_binomial_matches_scipy_binomtest():
    for n in (0, 1, 2, 5, 6, 17, 40, 101):
        for k in range(n + 1):
            expect = scipy_stats.binomtest(k, n, 0.5).pvalue if n else 1.0
            assert exact_binomial_two_sided(k, n) == pytest.approx(expect, rel=1e-9, abs=1e-15), (k, n)


def test_mcnemar_hand_worked():
    # 10 items: both right on 3, both wrong on 1, only A right on 1, only B right on 5
    a = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)
    b = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1, 1], bool)
    m = mcnemar_exact(a, b)
    assert (m["b"], m["c"]) == (1, 5)
    # P(X <= 1) for X ~ Bin(6, 1/2) = (1 + 6) / 64; two-sided: twice that
    assert m["p"] == pytest.approx(2 * 7 / 64)
    assert mcnemar_exact(a, a)["p"] == 1.0  # no discordant item
    assert mcnemar_exact(np.ones(30, bool), np.zeros(30, bool))["p"] == pytest.approx(2 / 2**30)


def _items(y, pred, target_type="multiclass", num_classes=3):
    return item_record([f"i{k:03d}" for k in range(len(y))], y, pred, target_type, num_classes)


def test_bootstrap_accuracy_averages_seeds_like_the_generic_path():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    seeds = [np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200)) for _ in range(3)]
    items = [{**_items(y, p), "targets": y, "predictions": p} for p in seeds]
    fast = bootstrap_values(items, "accuracy", n_resamples=50, seed=4)
    from mmbench.evaluation.significance import bootstrap_resamples

    slow = np.concatenate([[np.mean([np.mean(p[row] == y[row]) for p in seeds]) for row in idx]
                           for idx in bootstrap_resamples(200, 50, 4)])
    assert np.allclose(fast, slow)
    # another metric goes through compute_metrics per resample and seed
    f1 = bootstrap_values(items, "f1_macro", n_resamples=5, seed=4)
    idx = next(bootstrap_resamples(200, 5, 4))
    expect = [np.mean([compute_metrics("multiclass", y[r], p[r], 3)["f1_macro"] for p in seeds]) for r in idx]
    assert np.allclose(f1, expect)


def test_paired_bootstrap_interval_agrees_with_scipy():
    rng = np.random.default_rng(1)
    n = 400
    ca = rng.random(n) < 0.80
    cb = np.where(rng.random(n) < 0.85, ca, ~ca)  # B agrees with A on most items
    y = np.zeros(n, int)
    a = {"metric": "accuracy", "seeds": 2, "value": ca.mean(), "correct": None,
         "bootstrap": bootstrap_values([{**_items(y, (~ca).astype(int)), "targets": y, "predictions": (~ca).astype(int)}] * 2,
                                       "accuracy", 4000, seed=7)}
    b = {"metric": "accuracy", "seeds": 2, "value": cb.mean(), "correct": None,
         "bootstrap": bootstrap_values([{**_items(y, (~cb).astype(int)), "targets": y, "predictions": (~cb).astype(int)}] * 2,
                                       "accuracy", 4000, seed=7)}
    t = paired_test(a, b)
    assert t["test"] == "paired-bootstrap" and t["diff"] == pytest.approx(ca.mean() - cb.mean())
    ref = scipy_stats.bootstrap((ca.astype(float), cb.astype(float)), lambda u, v, axis=-1: u.mean(axis) - v.mean(axis),
                                paired=True, method="percentile", n_resamples=4000, random_state=3).confidence_interval
    assert t["ci_low"] == pytest.approx(ref.low, abs=0.006) and t["ci_high"] == pytest.approx(ref.high, abs=0.006)
    assert t["distinguishable"] == (t["ci_low"] > 0 or t["ci_high"] < 0)
    # lower is better: the difference and interval flip sign
    flipped = paired_test(a, b, higher_is_better=False)
    assert flipped["diff"] == pytest.approx(-t["diff"]) and flipped["ci_low"] == pytest.approx(-t["ci_high"])


def _entry(name, y, pred, seed=None, task="toy"):
    acc = float(np.mean(pred == y))
    return make_result(task=task, name=name, kind="predictions", seed=seed, primary_metric="accuracy",
                       higher_is_better=True, metrics={"clean": {"accuracy": acc}}, dataset_fingerprint="f",
                       extra={"test_items": _items(y, pred)})


def _flip(y, rng, p_wrong):
    wrong = rng.random(len(y)) < p_wrong
    return np.where(wrong, (y + 1) % 3, y)


def test_board_ties_entries_within_noise_and_separates_a_real_gap():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    entries = []
    for seed in range(3):
        entries += [_entry("alpha", y, _flip(y, rng, 0.10), seed), _entry("beta", y, _flip(y, rng, 0.11), seed),
                    _entry("gamma", y, _flip(y, rng, 0.40), seed)]
    rows = rank(entries, n_resamples=500)
    by = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows][2] == "gamma"
    top, second = rows[0]["name"], rows[1]["name"]
    assert abs(by["alpha"]["accuracy"] - by["beta"]["accuracy"]) < 0.03  # less than the noise of 300 items
    assert by[top]["distinct_from_next"] is False and by[top]["group"] == by[second]["group"] == 1
    assert by[top]["tied"] and by[second]["tied"]
    assert by[second]["distinct_from_next"] is True and by["gamma"]["group"] == 2 and not by["gamma"]["tied"]
    assert by["gamma"]["distinct_from_next"] is None and by[second]["vs_next"]["name"] == "gamma"
    assert by[top]["vs_next"]["test"] == "paired-bootstrap"
    res = by["alpha"]["resolvable_difference"]
    assert 0.01 < res < 0.2 and all(r["resolvable_difference"] == res for r in rows)
    md = render(rows, "md")
    assert "| 1 | 1= |" in md and "| 3 | 2 |" in md and "Smallest resolvable difference" in md
    # deterministic: the same board twice
    again = rank(entries, n_resamples=500)
    assert [r["vs_next"] for r in again] == [r["vs_next"] for r in rows]


def test_board_single_runs_use_exact_mcnemar():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    pa, pb = _flip(y, rng, 0.1), _flip(y, rng, 0.3)
    rows = rank([_entry("a", y, pa), _entry("b", y, pb)], n_resamples=200)
    t = rows[0]["vs_next"]
    m = mcnemar_exact(pa == y, pb == y)
    assert t["test"] == "mcnemar-exact" and t["p"] == pytest.approx(scipy_stats.binomtest(m["b"], m["b"] + m["c"]).pvalue)
    assert rows[0]["distinct_from_next"] is True and rows[0]["group"] == 1 and rows[1]["group"] == 2


def test_board_without_comparable_items_has_no_significance():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 50)
    a = _entry("a", y, y)
    b = _entry("b", y[:40], y[:40])  # scored on other ids
    rows = rank([a, b])
    assert all(r["group"] is None and r["distinct_from_next"] is None for r in rows)
    old = make_result(task="toy", name="c", kind="predictions", primary_metric="accuracy", higher_is_better=True,
                      metrics={"clean": {"accuracy": 0.5}}, dataset_fingerprint="f")  # an entry from before test items
    assert rank([a, old])[0]["group"] is None
    assert "group" not in render(rank([a, old]), "csv").splitlines()[0]


def test_report_shows_the_pairwise_matrix(tmp_path):
    from mmbench.board.report import render_report_markdown

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 150)
    entries = [_entry(n, y, _flip(y, rng, p)) for n, p in (("a", 0.1), ("b", 0.12), ("c", 0.5))]
    text, _ = render_report_markdown(entries)
    assert "### Significance" in text and "| entry (group) | vs a | vs b | vs c |" in text
    row_c = next(line for line in text.splitlines() if line.startswith("| c (2)"))
    assert row_c.count("*") == 2 and "| - |" in row_c  # c differs from a and b; no test against itself
    assert math.isfinite(float(row_c.split("|")[2].split()[0]))
