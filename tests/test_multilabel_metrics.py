"""Multi-label metrics and AUROC against scikit-learn; their table entries and bootstrap CIs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from mmbench.core.errors import DataError
from mmbench.evaluation.metrics import METRICS, binary_score_metrics, bootstrap_ci, compute_metrics, metric_names, multilabel_metrics

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def indicator_pairs(draw):
    n, c = draw(st.integers(1, 25)), draw(st.integers(2, 7))  # sklearn reads one column as binary
    cells = st.lists(st.lists(st.integers(0, 1), min_size=c, max_size=c), min_size=n, max_size=n)
    return np.array(draw(cells), dtype=np.int64), np.array(draw(cells), dtype=np.int64)


def _sk(t, p):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {f"f1_{a}": skm.f1_score(t, p, average=a, zero_division=0) for a in ("micro", "macro", "weighted", "samples")}
        out["precision_macro"] = skm.precision_score(t, p, average="macro", zero_division=0)
        out["recall_macro"] = skm.recall_score(t, p, average="macro", zero_division=0)
    return out | {"accuracy": skm.accuracy_score(t, p), "hamming_loss": skm.hamming_loss(t, p)}


@SETTINGS
@given(indicator_pairs())
def test_multilabel_metrics_equal_sklearn(pair):
    t, p = pair
    ours = multilabel_metrics(t, p)
    for key, value in _sk(t, p).items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


def test_multilabel_scores_threshold_at_one_half_and_hand_worked_example():
    t = np.array([[0, 0, 1], [0, 0, 0], [1, 1, 0]])
    scores = np.array([[0.1, 0.2, 0.9], [0.4, 0.5, 0.0], [0.3, 0.51, 0.7]])  # 0.5 is not above 0.5
    ours = compute_metrics("multilabel", t, scores, 3)
    # label 0: tp 0 fn 1 -> F1 0; label 1: tp 1 -> 1; label 2: tp 1 fp 1 -> 2/3
    assert ours["f1_macro"] == pytest.approx((0 + 1 + 2 / 3) / 3)
    assert ours["f1_micro"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert ours["f1_samples"] == pytest.approx((1 + 0 + 2 * 1 / 4) / 3)  # empty vs empty counts 0, as sklearn
    assert ours["accuracy"] == pytest.approx(2 / 3) and ours["hamming_loss"] == pytest.approx(2 / 9)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=40))
def test_auroc_equals_sklearn_with_ties(rows):
    y = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows], dtype=np.float64) / 3  # few distinct values: many ties
    got = binary_score_metrics(y, s)["auroc"]
    if len(set(y)) < 2:
        assert np.isnan(got)
    else:
        assert got == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_bad_multilabel_inputs_are_refused():
    t = np.array([[0, 1], [1, 0]])
    with pytest.raises(DataError, match="0 or 1"):
        multilabel_metrics(t, np.array([[0, 2], [1, 0]]))
    with pytest.raises(DataError, match="label columns"):
        multilabel_metrics(t, np.array([[0, 1], [1, 0]]), num_classes=3)
    with pytest.raises(DataError, match="non-finite"):
        multilabel_metrics(t, np.array([[0.2, np.nan], [1.0, 0.0]]))
    with pytest.raises(DataError, match=r"\[N, C\]"):
        multilabel_metrics(np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(DataError, match="non-finite"):
        binary_score_metrics([0, 1], [0.3, np.inf])


def test_directions_and_target_types():
    assert METRICS["hamming_loss"].higher_is_better is False
    assert METRICS["auroc"].higher_is_better and METRICS["auroc"].needs_scores
    assert METRICS["f1_samples"].higher_is_better and METRICS["f1_micro"].higher_is_better
    ml = metric_names("multilabel")
    assert {"accuracy", "f1_macro", "f1_weighted", "f1_micro", "f1_samples", "hamming_loss"} <= set(ml)
    assert "auroc" in metric_names("binary") and "auroc" not in metric_names("multiclass")
    assert "f1_samples" not in metric_names("multiclass")


def test_bootstrap_ci_of_multilabel_f1_and_auroc_is_seeded():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, size=(60, 4))
    p = np.where(rng.random((60, 4)) < 0.8, t, 1 - t)
    f1 = lambda a, b: multilabel_metrics(a, b)["f1_macro"]  # noqa: E731
    one, two = bootstrap_ci(f1, (t, p), n_resamples=200, seed=3), bootstrap_ci(f1, (t, p), n_resamples=200, seed=3)
    assert one == two and one["low"] <= f1(t, p) <= one["high"]
    y, s = t[:, 0], p[:, 0] * 0.6 + rng.random(60) * 0.4
    ci = bootstrap_ci(lambda a, b: binary_score_metrics(a, b)["auroc"], (y, s), n_resamples=200, seed=1)
    assert ci["low"] <= skm.roc_auc_score(y, s) <= ci["high"]
