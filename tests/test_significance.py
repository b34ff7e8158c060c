"""The board's verdicts (issue 24): exact McNemar and Holm against scipy and hand-worked cases,
the vectorised resampled metrics against compute_metrics, the two-level bootstrap (reduces to
the item bootstrap, ties a pair whose seed spread exceeds its item-level difference, holds its
level over 200 null replicates), compact letters against the adjusted matrix, rank intervals,
the minimum detectable difference, and what the board shows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats")

from mmbench.board.entries import rank, render
from mmbench.evaluation.metrics import compute_metrics
from mmbench.evaluation.resampling import item_weights, resampled_metric, two_level_values
from mmbench.evaluation.results import make_result
from mmbench.evaluation.significance import (
    compact_letters,
    exact_binomial_two_sided,
    format_p,
    holm,
    item_record,
    item_record_differences,
    mcnemar_exact,
    rank_intervals,
    significance_from_arrays,
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


def test_holm_hand_worked():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.02, 0.9]) == pytest.approx([0.04, 0.9]) and holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped
    assert holm([]).size == 0 and holm([0.2]) == pytest.approx([0.2])


# ------------------------------------------------------------------------------------------
# the resampled metrics equal compute_metrics on the resampled arrays
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target_type,metrics", [
    ("multiclass", ["accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted", "precision_weighted",
                    "recall_weighted"]),
    ("binary", ["accuracy", "f1", "precision", "recall", "f1_macro"]),
    ("regression", ["acc2_non0", "f1_non0", "acc2_has0", "f1_has0", "acc7", "acc5", "mae", "corr"]),
])
def test_resampled_metrics_equal_compute_metrics(target_type, metrics):
    rng = np.random.default_rng(0)
    n, c = 150, (4 if target_type == "multiclass" else 2)
    if target_type == "regression":
        y = np.round(rng.normal(0, 1.5, n) * 5) / 5  # some exact zeros, as MOSI's labels
        preds = np.stack([y + rng.normal(0, 1.0, n) for _ in range(3)])
    else:
        y = rng.integers(0, c, n)
        preds = np.stack([np.where(rng.random(n) < 0.6, y, rng.integers(0, c, n)) for _ in range(3)])
    idx = rng.integers(0, n, size=(6, n))
    w = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float32)
    for metric in metrics:
        got = resampled_metric(metric, target_type, c if target_type != "regression" else None, y, preds, w)
        for s in range(3):
            for b in range(6):
                ref = compute_metrics(target_type, y[idx[b]], preds[s][idx[b]], c if target_type != "regression" else None)
                assert got[s, b] == pytest.approx(ref[metric], abs=1e-9), (metric, s, b)


def test_resampled_auroc_and_score_labels_equal_compute_metrics():
    rng = np.random.default_rng(8)
    n = 200
    y = rng.integers(0, 2, n)
    scores = np.stack([np.clip(0.5 * y + rng.normal(0.25, 0.3, n), 0, 1) for _ in range(2)])
    scores[0, :40] = np.round(scores[0, :40], 1)  # ties between positives and negatives
    idx = rng.integers(0, n, size=(5, n))
    w = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float32)
    auc = resampled_metric("auroc", "binary", 2, y, scores, w, scores=True)
    acc = resampled_metric("accuracy", "binary", 2, y, scores, w, scores=True)
    for s in range(2):
        for b in range(5):
            t, p = y[idx[b]], scores[s][idx[b]]
            ref = compute_metrics("binary", t, (p > 0.5).astype(int), 2, scores=p)
            assert auc[s, b] == pytest.approx(ref["auroc"], abs=1e-12) and acc[s, b] == pytest.approx(ref["accuracy"])
    # a score task keeps the scores in its per-item record, and the board's test reads them
    rec = item_record(["a", "b"], [0, 1], [0.25, 0.75], "binary", 2, scores=True)
    assert rec["predictions"] == [0.25, 0.75] and rec["scores"] is True
    sig = significance_from_arrays("memes", ["x", "y"], y, [scores[:1], scores[1:]], "auroc", "binary", 2, True, 300,
                                   seed=0, scores=True)
    full = np.ones((1, n), np.float32)
    assert sig.rows[0].value == pytest.approx(float(resampled_metric("auroc", "binary", 2, y, scores[:1], full, True)[0, 0]))
    # one class only: AUROC is undefined, and so is the test (never a verdict)
    none = significance_from_arrays("memes", ["x", "y"], np.zeros(n, int), [scores[:1], scores[1:]], "auroc", "binary", 2,
                                    True, 100, seed=0, scores=True).pairs[0]
    assert none.test == "undefined" and none.p == 1.0 and not none.significant and math.isnan(none.ci_low)


def test_resampled_multilabel_metrics_equal_compute_metrics():
    rng = np.random.default_rng(9)
    n, c = 120, 5
    y = (rng.random((n, c)) < 0.3).astype(int)
    probs = np.clip(0.6 * y[None] + rng.random((2, n, c)) * 0.6, 0, 1)
    idx = rng.integers(0, n, size=(4, n))
    w = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float32)
    for metric in ("accuracy", "hamming_loss", "f1_micro", "f1_macro", "f1_weighted", "f1_samples", "precision_macro",
                   "recall_macro"):
        got = resampled_metric(metric, "multilabel", c, y, probs, w)
        for s in range(2):
            for b in range(4):
                ref = compute_metrics("multilabel", y[idx[b]], probs[s][idx[b]], c)[metric]
                assert got[s, b] == pytest.approx(ref, abs=1e-12), (metric, s, b)
    rec = item_record(["a"], [[1, 0]], [[0.7, 0.2]], "multilabel", 2)
    assert rec["predictions"] == [[1, 0]]  # the label set, not truncated probabilities


def test_item_record_differences_name_the_first_differing_item():
    a = item_record(["x", "y", "z"], [0, 1, 2], [0, 1, 1], "multiclass", 3)
    same_other_order = item_record(["z", "x", "y"], [2, 0, 1], [1, 0, 1], "multiclass", 3)
    assert item_record_differences(a, same_other_order) is None and item_record_differences(None, a) is None
    edited = {**a, "predictions": [0, 2, 1]}
    assert item_record_differences(edited, a) == "predictions differ on 1 of 3 items (first: id 'y', stored 2.0, recomputed 1.0)"
    assert "other ids" in item_record_differences(a, item_record(["x", "y", "w"], [0, 1, 2], [0, 1, 1], "multiclass", 3))
    ml = item_record(["x", "y"], [[1, 0], [0, 1]], [[0.9, 0.1], [0.2, 0.8]], "multilabel", 2)
    ml_edit = {**ml, "predictions": [[1, 0], [1, 1]]}
    assert item_record_differences(ml_edit, ml) == "predictions differ on 1 of 2 items (first: id 'y', stored [1.0, 1.0], recomputed [0.0, 1.0])"


def test_item_weights_are_seeded_counts():
    a = np.concatenate(list(item_weights(50, 30, np.random.default_rng(3))))
    b = np.concatenate(list(item_weights(50, 30, np.random.default_rng(3))))
    assert a.shape == (30, 50) and np.array_equal(a, b) and (a.sum(axis=1) == 50).all()


# ------------------------------------------------------------------------------------------
# the two-level test
# ------------------------------------------------------------------------------------------


def _seeds(y, rng, accs, n_classes=3):
    """One row of predictions per seed, right on about `acc` of the items."""
    return np.stack([np.where(rng.random(len(y)) < a, y, (y + 1) % n_classes) for a in accs])


def test_two_level_reduces_to_the_item_bootstrap_when_seeds_are_identical():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    a, b = _seeds(y, rng, [0.8]), _seeds(y, rng, [0.7])
    five = [np.repeat(a, 5, axis=0), np.repeat(b, 5, axis=0)]
    two_level = two_level_values(y, five, "accuracy", "multiclass", 3, 400, seed=9)
    items_only = two_level_values(y, five, "accuracy", "multiclass", 3, 400, seed=9, seed_level=False)
    single = two_level_values(y, [a, b], "accuracy", "multiclass", 3, 400, seed=9)
    assert np.allclose(two_level, items_only, atol=1e-12) and np.allclose(two_level, single, atol=1e-12)
    # the item bootstrap of the paired difference has the textbook standard error
    d = (a[0] == y).astype(float) - (b[0] == y)
    assert np.std(two_level[0] - two_level[1], ddof=1) == pytest.approx(d.std() / math.sqrt(len(y)), rel=0.1)


def _pair(y, accs_a, accs_b, rng, n_resamples=1000):
    return significance_from_arrays("toy", ["a", "b"], y, [_seeds(y, rng, accs_a), _seeds(y, rng, accs_b)], "accuracy",
                                    "multiclass", 3, True, n_resamples, seed=5).pair("a", "b")


def test_seed_spread_larger_than_the_difference_ties_a_pair_a_small_one_does_not():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 4000)
    # a 7-point mean difference: on 4,000 items alone that is seven standard errors
    wide = _pair(y, [0.74, 0.99, 0.76, 0.97, 0.74], [0.77, 0.78, 0.76, 0.79, 0.75], rng)
    narrow = _pair(y, [0.81, 0.82, 0.80, 0.83, 0.79], [0.77, 0.78, 0.76, 0.79, 0.75], rng)
    assert wide.diff > 0.06 and narrow.diff > 0.03
    assert not wide.significant and wide.ci_low < 0 < wide.ci_high and wide.p > 0.05
    assert narrow.significant and narrow.ci_low > 0 and narrow.p_display == "p < 0.0001"
    # the item bootstrap alone (seeds treated as known) would have separated the wide pair
    rng2 = np.random.default_rng(3)
    pa, pb = _seeds(y, rng2, [0.74, 0.99, 0.76, 0.97, 0.74]), _seeds(y, rng2, [0.77, 0.78, 0.76, 0.79, 0.75])
    items_only = two_level_values(y, [pa, pb], "accuracy", "multiclass", 3, 1000, seed=5, seed_level=False)
    d = (pa == y).mean() - (pb == y).mean()
    assert np.mean(items_only[0] - items_only[1] <= 0) < 0.001 and d > 0.06


def test_two_entries_from_one_distribution_are_rarely_declared_different():
    """200 seeded null replicates: item difficulty shared, seeds of both entries from the same
    distribution (a random shift of each seed's accuracy plus item-level noise)."""
    rng = np.random.default_rng(4)
    n, reps = 300, 200
    declared = 0
    for _ in range(reps):
        easy = rng.random(n)  # per-item difficulty, shared by both entries
        y = rng.integers(0, 3, n)
        entries = []
        for _e in range(2):
            shift = rng.normal(0.0, 0.03, size=5)  # seed-to-seed spread of accuracy
            p_right = np.clip(0.45 + 0.5 * easy[None, :] + shift[:, None], 0, 1)
            entries.append(np.where(rng.random((5, n)) < p_right, y, (y + 1) % 3))
        sig = significance_from_arrays("null", ["a", "b"], y, entries, "accuracy", "multiclass", 3, True, 300,
                                       seed=int(rng.integers(1 << 30)))
        declared += sig.pairs[0].significant
    slack = 3 * math.sqrt(0.05 * 0.95 / reps)  # three Monte-Carlo standard errors
    assert declared / reps <= 0.05 + slack, declared


def test_regression_metric_pairs_and_lower_is_better():
    rng = np.random.default_rng(6)
    y = np.round(rng.normal(0, 1.5, 500) * 5) / 5
    good = np.stack([y + rng.normal(0, 0.6, 500) for _ in range(3)])
    bad = np.stack([y + rng.normal(0, 1.4, 500) for _ in range(3)])
    acc = significance_from_arrays("mosi-like", ["good", "bad"], y, [good, bad], "acc2_non0", "regression", None, True,
                                   500, seed=1)
    mae = significance_from_arrays("mosi-like", ["good", "bad"], y, [good, bad], "mae", "regression", None, False,
                                   500, seed=1)
    assert acc.pairs[0].diff > 0 and acc.pairs[0].significant
    # lower is better: diff is in the direction of better, so positive for the better entry
    assert mae.pairs[0].diff == pytest.approx(np.abs(bad - y).mean() - np.abs(good - y).mean())
    assert mae.pairs[0].diff > 0 and mae.pair("bad", "good").diff == pytest.approx(-mae.pairs[0].diff)
    assert mae.rows[0].rank_interval == (1, 1) and mae.rows[1].rank_interval == (2, 2)


# ------------------------------------------------------------------------------------------
# letters, rank intervals, the minimum detectable difference, p display
# ------------------------------------------------------------------------------------------


def test_compact_letters_match_the_adjusted_matrix_on_random_matrices():
    """Random p-value matrices, Holm-adjusted: every pair that differs shares no letter, every
    other pair shares one (8 entries at most: at most 18 letter groups, Moon-Moser)."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        k = int(rng.integers(1, 9))
        names = [f"e{i}" for i in range(k)]
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        raw = rng.random(len(pairs)) ** rng.uniform(1, 8)  # from none to most pairs significant
        adjusted = holm(raw)
        differ = {frozenset(p) for p, ph in zip(pairs, adjusted) if ph < 0.05}
        letters = compact_letters(names, differ)
        assert letters[names[0]].startswith("a") and all(letters[n] for n in names)
        for (a, b), ph in zip(pairs, adjusted):
            assert bool(set(letters[a]) & set(letters[b])) == (ph >= 0.05), (trial, letters, a, b)


def test_compact_letters_hand_worked():
    # a > c, a > d, b > d: {a, b}, {b, c}, {c, d} -> a: a, b: ab, c: bc, d: c
    names = list("abcd")
    got = compact_letters(names, {frozenset("ac"), frozenset("ad"), frozenset("bd")})
    assert got == {"a": "a", "b": "ab", "c": "bc", "d": "c"}
    assert compact_letters(names, set()) == dict.fromkeys(names, "a")


def test_rank_intervals_hand_worked():
    # a above b and c (significantly), b vs c undecided; d below everyone but a (not significant)
    names = list("abcd")
    differ = {frozenset("ab"), frozenset("ac"), frozenset("bd"), frozenset("cd")}
    better = {n: set(names[k + 1:]) for k, n in enumerate(names)}
    assert rank_intervals(names, differ, better) == {"a": (1, 2), "b": (2, 3), "c": (2, 3), "d": (3, 4)}
    assert rank_intervals(names, set(), better) == dict.fromkeys(names, (1, 4))


def test_p_display():
    assert format_p(0.0312) == "p = 0.031" and format_p(1.0) == "p = 1" and format_p(3e-7) == "p < 0.0001"
    assert format_p(0.00042) == "p = 0.00042"


# ------------------------------------------------------------------------------------------
# on the board
# ------------------------------------------------------------------------------------------


def _items(y, pred, target_type="multiclass", num_classes=3):
    return item_record([f"i{k:03d}" for k in range(len(y))], y, pred, target_type, num_classes)


def _entry(name, y, pred, seed=None, task="toy"):
    acc = float(np.mean(pred == y))
    return make_result(task=task, name=name, kind="predictions", seed=seed, primary_metric="accuracy",
                       higher_is_better=True, metrics={"clean": {"accuracy": acc}}, dataset_fingerprint="f",
                       extra={"test_items": _items(y, pred)})


def _flip(y, rng, p_wrong):
    wrong = rng.random(len(y)) < p_wrong
    return np.where(wrong, (y + 1) % 3, y)


def test_board_rows_carry_letters_rank_intervals_and_the_matrix():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    entries = []
    for seed in range(3):
        entries += [_entry("alpha", y, _flip(y, rng, 0.10), seed), _entry("beta", y, _flip(y, rng, 0.11), seed),
                    _entry("gamma", y, _flip(y, rng, 0.40), seed)]
    rows = rank(entries, n_resamples=500)
    by = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows][2] == "gamma"
    assert by["alpha"]["letters"] == by["beta"]["letters"] == "a" and by["gamma"]["letters"] == "b"
    assert by["gamma"]["rank_interval"] == [3, 3] and by["alpha"]["rank_interval"] == [1, 2]
    assert all(r["seed_variance_known"] for r in rows)
    top = rows[0]["name"]
    for r in rows:  # the matrix: every other entry, one rule for the marker
        assert set(r["pairwise"]) == set(by) - {r["name"]}
        for other, t in r["pairwise"].items():
            assert t["significant"] == (t["p_holm"] < 0.05) and t["diff"] == pytest.approx(-by[other]["pairwise"][r["name"]]["diff"])
    assert not by[top]["pairwise"]["beta" if top == "alpha" else "alpha"]["significant"]
    assert by["alpha"]["pairwise"]["gamma"]["significant"] and by["alpha"]["pairwise"]["gamma"]["p_display"] == "p < 0.0001"
    sig = rows[0]["significance"]
    assert sig["pairs"] == 3 and sig["correction"] == "holm" and sig["n_resamples"] == 500 and sig["unit"] == "item"
    assert sig["mc_error"] < 1e-6  # accuracy over items: the control variate leaves no Monte-Carlo error
    assert "all 3 pairs tested" in sig["caption"] and "Holm" in sig["caption"] and "3 seeds per entry" in sig["caption"]
    json.loads(render(rows, "json"))
    md = render(rows, "md")
    assert "| rank | letters | rank_interval |" in md and "| 3 | b | 3 |" in md and sig["caption"] in md
    csv_head = render(rows, "csv").splitlines()[0]
    assert csv_head.startswith("rank,letters,rank_interval")
    again = rank(entries, n_resamples=500)  # deterministic
    assert [r["pairwise"] for r in again] == [r["pairwise"] for r in rows]


def test_board_single_runs_use_exact_mcnemar_and_say_seed_variance_is_unknown():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    pa, pb = _flip(y, rng, 0.1), _flip(y, rng, 0.3)
    rows = rank([_entry("a", y, pa), _entry("b", y, pb)], n_resamples=200)
    t = rows[0]["pairwise"]["b"]
    m = mcnemar_exact(pa == y, pb == y)
    assert t["test"] == "mcnemar-exact" and t["p"] == pytest.approx(scipy_stats.binomtest(m["b"], m["b"] + m["c"]).pvalue)
    assert t["p_holm"] == t["p"] and t["significant"] and rows[0]["letters"] == "a" and rows[1]["letters"] == "b"
    assert rows[0]["seed_variance_known"] is False and "seed variance unknown" in rows[0]["significance"]["caption"]
    assert "| 1† |" in render(rows, "md")


def test_board_without_comparable_items_has_no_significance():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 50)
    a = _entry("a", y, y)
    b = _entry("b", y[:40], y[:40])  # scored on other ids
    rows = rank([a, b])
    assert all(r["letters"] is None and r["rank_interval"] is None and r["pairwise"] is None for r in rows)
    old = make_result(task="toy", name="c", kind="predictions", primary_metric="accuracy", higher_is_better=True,
                      metrics={"clean": {"accuracy": 0.5}}, dataset_fingerprint="f")  # an entry from before test items
    assert rank([a, old])[0]["letters"] is None
    assert "letters" not in render(rank([a, old]), "csv").splitlines()[0]


def test_report_shows_the_pairwise_matrix_with_one_rule_for_the_marker():
    from mmbench.board.report import render_report_markdown

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 150)
    entries = [_entry(n, y, _flip(y, rng, p)) for n, p in (("a", 0.1), ("b", 0.12), ("c", 0.5))]
    text, _ = render_report_markdown(entries)
    assert "### Significance" in text and "| entry (letters) | vs a | vs b | vs c |" in text
    row_c = next(line for line in text.splitlines() if line.startswith("| c (b)"))
    assert row_c.count("*") == 2 and "| - |" in row_c  # c differs from a and b; no test against itself
    assert math.isfinite(float(row_c.split("|")[2].split()[0]))
