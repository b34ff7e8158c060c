"""Tests for mmbench.evaluation.metrics: scikit-learn / scipy agreement, hand-worked examples, ties, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn import metrics as skm

from mmbench.core.errors import DataError
from mmbench.evaluation.metrics import (
    METRICS,
    bootstrap_ci,
    classification_metrics,
    compute_metrics,
    confusion_matrix,
    metric_names,
    mosi_metrics,
    per_class_metrics,
    retrieval_metrics,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The inputs here are tiny: thread start-up and sync would dominate on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- classification


@st.composite
def label_pairs(draw, binary: bool = False):
    """(y_true, y_pred, num_classes), often with classes missing from one or both sides."""
    c = 2 if binary else draw(st.integers(1, 8))
    n = draw(st.integers(1, 60))
    # restrict each side to a random subset of the classes, so absent classes are common
    true_classes = draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=c, unique=True))
    pred_classes = draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=c, unique=True))
    y_true = draw(st.lists(st.sampled_from(true_classes), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.sampled_from(pred_classes), min_size=n, max_size=n))
    return np.array(y_true, dtype=np.int64), np.array(y_pred, dtype=np.int64), c


def _sk_prf(y_true, y_pred, c, average):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skm.precision_recall_fscore_support(
            y_true, y_pred, labels=list(range(c)), average=average, zero_division=0)


@SETTINGS
@given(label_pairs())
def test_confusion_matrix_matches_sklearn(case):
    y_true, y_pred, c = case
    cm = confusion_matrix(y_true, y_pred, c)
    assert cm.dtype == np.int64 and cm.shape == (c, c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when only one label occurs
        expected = skm.confusion_matrix(y_true, y_pred, labels=list(range(c)))
    np.testing.assert_array_equal(cm, expected)


@SETTINGS
@given(label_pairs())
def test_classification_metrics_match_sklearn(case):
    y_true, y_pred, c = case
    m = classification_metrics(y_true, y_pred, c)
    assert set(m) == {"accuracy", "precision_macro", "recall_macro", "f1_macro",
                      "precision_weighted", "recall_weighted", "f1_weighted"}
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
    for average in ("macro", "weighted"):
        p, r, f, _ = _sk_prf(y_true, y_pred, c, average)
        assert m[f"precision_{average}"] == pytest.approx(p, abs=1e-12)
        assert m[f"recall_{average}"] == pytest.approx(r, abs=1e-12)
        assert m[f"f1_{average}"] == pytest.approx(f, abs=1e-12)
    assert all(type(v) is float for v in m.values())


@SETTINGS
@given(label_pairs(binary=True))
def test_binary_metrics_match_sklearn(case):
    y_true, y_pred, c = case
    m = classification_metrics(y_true, y_pred, c, binary=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="binary", pos_label=1,
                                                         zero_division=0)
    assert m["precision"] == pytest.approx(p, abs=1e-12)
    assert m["recall"] == pytest.approx(r, abs=1e-12)
    assert m["f1"] == pytest.approx(f, abs=1e-12)
    p, r, f, _ = _sk_prf(y_true, y_pred, 2, "macro")
    assert m["f1_macro"] == pytest.approx(f, abs=1e-12)


@SETTINGS
@given(label_pairs())
def test_per_class_metrics_match_sklearn(case):
    y_true, y_pred, c = case
    pc = per_class_metrics(y_true, y_pred, c)
    p, r, f, s = _sk_prf(y_true, y_pred, c, None)
    np.testing.assert_allclose(pc["precision"], p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pc["recall"], r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pc["f1"], f, rtol=0, atol=1e-12)
    assert pc["support"] == [int(v) for v in s]


def test_classification_hand_worked_with_absent_classes():
    # 4 declared classes; class 3 never occurs, class 2 is never predicted.
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0]
    # confusion (rows true, cols pred): [[1,1,0,0],[0,2,0,0],[1,0,0,0],[0,0,0,0]]
    cm = confusion_matrix(y_true, y_pred, 4)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    m = classification_metrics(y_true, y_pred, 4)
    # precision per class: 1/2, 2/3, 0 (never predicted), 0 (0/0) -> macro (1/2 + 2/3) / 4
    # recall per class:    1/2, 1,   0,                  0 (0/0) -> macro 1.5 / 4
    # f1 per class: 2*1/(2+2)=1/2, 2*2/(2+3)=4/5, 0, 0        -> macro 1.3 / 4
    # weighted with supports 2, 2, 1, 0 (total 5)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision_macro"] == pytest.approx((1 / 2 + 2 / 3) / 4)
    assert m["recall_macro"] == pytest.approx(1.5 / 4)
    assert m["f1_macro"] == pytest.approx(1.3 / 4)
    assert m["precision_weighted"] == pytest.approx((2 * 1 / 2 + 2 * 2 / 3) / 5)
    assert m["recall_weighted"] == pytest.approx((2 * 1 / 2 + 2 * 1) / 5)
    assert m["f1_weighted"] == pytest.approx((2 * 1 / 2 + 2 * 4 / 5) / 5)


def test_classification_accepts_integral_floats_bools_and_tensors():
    a = classification_metrics(np.array([0.0, 1.0, 1.0]), torch.tensor([0, 1, 0]), 2, binary=True)
    b = classification_metrics([False, True, True], np.array([0, 1, 0], dtype=np.uint8), 2, binary=True)
    assert a == b
    assert a["recall"] == pytest.approx(0.5) and a["precision"] == pytest.approx(1.0)


def test_classification_large_input_matches_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 10, 200_000)
    y_pred = np.where(rng.random(200_000) < 0.6, y_true, rng.integers(0, 9, 200_000))  # class 9 rarely predicted
    m = classification_metrics(y_true, y_pred, 12)  # classes 10, 11 absent everywhere
    p, r, f, _ = _sk_prf(y_true, y_pred, 12, "macro")
    assert (m["precision_macro"], m["recall_macro"], m["f1_macro"]) == pytest.approx((p, r, f), abs=1e-12)


# --------------------------------------------------------------------------- MOSI


def _mmsa_reference(t, p):
    """MMSA's metricsTop definitions written with scikit-learn / scipy."""
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    nz = t != 0
    out = {
        "acc2_has0": skm.accuracy_score(t >= 0, p >= 0),
        "f1_has0": skm.f1_score(t >= 0, p >= 0, average="weighted"),
        "acc7": np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(t, -3, 3))),
        "acc5": np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(t, -2, 2))),
        "mae": skm.mean_absolute_error(t, p),
    }
    if nz.any():
        out["acc2_non0"] = skm.accuracy_score(t[nz] > 0, p[nz] > 0)
        out["f1_non0"] = skm.f1_score(t[nz] > 0, p[nz] > 0, average="weighted")
    if np.ptp(t) > 0 and np.ptp(p) > 0:
        out["corr"] = stats.pearsonr(p, t)[0]
    return out


def test_mosi_hand_worked():
    t = np.array([-1.2, 0.0, 0.4, 2.6, -0.5, 1.5])
    p = np.array([-0.3, 0.2, -0.1, 3.4, 0.0, 2.5])
    m = mosi_metrics(t, p)
    # Has0: truth>=0 = [F,T,T,T,F,T], pred>=0 = [F,T,F,T,T,T] -> agree on 4 of 6.
    #   label True: tp=3 (idx 1,3,5), support 4, predicted 4 -> F1 = 2*3/(4+4) = 0.75
    #   label False: tp=1 (idx 0), support 2, predicted 2   -> F1 = 2*1/(2+2) = 0.5
    #   weighted F1 = (4*0.75 + 2*0.5)/6 = 4/6
    assert m["acc2_has0"] == pytest.approx(4 / 6)
    assert m["f1_has0"] == pytest.approx(4 / 6)
    # Non0: drop idx 1 (truth 0). truth>0 = [F,T,T,F,T], pred>0 = [F,F,T,F,T] -> agree 4 of 5.
    #   True: tp=2, support 3, predicted 2 -> F1 = 4/5;  False: tp=2, support 2, predicted 3 -> F1 = 4/5
    #   weighted F1 = (3*0.8 + 2*0.8)/5 = 0.8
    assert m["acc2_non0"] == pytest.approx(4 / 5)
    assert m["f1_non0"] == pytest.approx(0.8)
    # Acc-7: round(clip(t,-3,3)) = [-1, 0, 0, 3, -0(-0.5 -> -0 half-even), 2]
    #        round(clip(p,-3,3)) = [-0, 0, -0, 3 (3.4 clipped to 3), 0, 2 (2.5 -> 2 half-even)]
    #   matches at idx 1,2,3,4,5 -> 5/6
    assert m["acc7"] == pytest.approx(5 / 6)
    # Acc-5: clip to [-2,2]: t -> [-1,0,0,2,-0,2], p -> [-0,0,-0,2,0,2] -> 5/6
    assert m["acc5"] == pytest.approx(5 / 6)
    # MAE: |0.9|+|0.2|+|0.5|+|0.8|+|0.5|+|1.0| = 3.9 -> 0.65
    assert m["mae"] == pytest.approx(0.65)
    assert m["corr"] == pytest.approx(stats.pearsonr(p, t)[0], abs=1e-12)
    ref = _mmsa_reference(t, p)
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, abs=1e-12), k


@SETTINGS
@given(st.integers(1, 40), st.integers(0, 2**32 - 1), st.booleans())
def test_mosi_matches_sklearn_scipy(n, seed, grid):
    rng = np.random.default_rng(seed)
    if grid:  # multiples of 0.5 in [-3.5, 3.5]: exact zeros, halves (rounding), clipping
        t = rng.integers(-7, 8, n) / 2.0
        p = rng.integers(-7, 8, n) / 2.0
    else:
        t = rng.uniform(-3.5, 3.5, n)
        p = t + rng.normal(0, 1.5, n)
    m = mosi_metrics(t, p)
    ref = _mmsa_reference(t, p)
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, abs=1e-12), k
    if "acc2_non0" not in ref:
        assert math.isnan(m["acc2_non0"]) and math.isnan(m["f1_non0"])
    if "corr" not in ref:
        assert m["corr"] == 0.0


def test_mosi_degenerate_cases():
    m = mosi_metrics([0.0, 0.0, 0.0], [1.0, -1.0, 0.5])
    assert math.isnan(m["acc2_non0"]) and math.isnan(m["f1_non0"])  # every truth is 0
    assert m["corr"] == 0.0  # constant truth: r undefined -> 0.0
    assert m["acc2_has0"] == pytest.approx(2 / 3)
    assert mosi_metrics([1.0, 2.0], [0.7, 0.7])["corr"] == 0.0
    assert mosi_metrics([0.1, 0.1, 0.1], [0.1, 0.1, 0.1])["corr"] == 0.0  # mean not exactly 0.1
    # a column vector (MMSA's model output shape) is accepted
    assert mosi_metrics(np.array([[1.0], [-1.0]]), torch.tensor([[0.5], [-2.0]]))["acc2_has0"] == 1.0


# --------------------------------------------------------------------------- retrieval


def _reference_retrieval(img, cap, idx, ks):
    """Naive full-matrix reference of the tie rule: every score in float64, per query the
    candidates above / tied with the best relevant one counted over the whole row, and the
    expected hit under a random order of the tied block as a ratio of binomials (math.comb)."""
    img = np.asarray(img, dtype=np.float64)
    cap = np.asarray(cap, dtype=np.float64)
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    cap = cap / np.linalg.norm(cap, axis=1, keepdims=True)
    idx = np.asarray(idx)
    s = cap @ img.T

    def hit(row, relevant, k):
        best = row[relevant].max()
        g, t = int((row > best).sum()), int((row == best).sum())
        r = int((row[relevant] == best).sum())
        m = min(max(k - g, 0), t)
        return 1.0 - math.comb(t - r, m) / math.comb(t, m)

    out = {}
    for k in ks:
        out[f"t2i_recall@{k}"] = float(np.mean([hit(s[j], np.arange(len(img)) == idx[j], k) for j in range(len(cap))]))
    for k in ks:
        out[f"i2t_recall@{k}"] = float(np.mean([hit(s[:, i], idx == i, k) for i in range(len(img))]))
    return out


def _topk_membership_reference(img, cap, idx, ks):
    """CLIP_benchmark's literal definition (top-k index sets); equal to ours without ties."""
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    cap = cap / np.linalg.norm(cap, axis=1, keepdims=True)
    s = cap @ img.T
    out = {}
    for k in ks:
        top_img = np.argsort(-s, axis=1)[:, :k]
        out[f"t2i_recall@{k}"] = float(np.mean([idx[j] in top_img[j] for j in range(len(cap))]))
        top_cap = np.argsort(-s, axis=0)[:k, :]
        out[f"i2t_recall@{k}"] = float(np.mean([np.any(idx[top_cap[:, i]] == i) for i in range(len(img))]))
    return out


def test_retrieval_hand_worked():
    img = np.array([[2.0, 0.0], [0.0, 1.0]])           # normalised: (1,0), (0,1)
    cap = np.array([[3.0, 4.0], [1.0, 0.0], [4.0, 3.0]])  # normalised: (.6,.8), (1,0), (.8,.6)
    idx = np.array([0, 0, 1])
    # scores s[caption, image]: c0 -> (.6, .8), c1 -> (1, 0), c2 -> (.8, .6)
    # t2i ranks: c0 own img0 .6 < .8 -> 1; c1 -> 0; c2 own img1 .6 < .8 -> 1  => R@1 1/3, R@2 1
    # i2t: img0 column (.6, 1, .8), best own (c0, c1) = 1 -> rank 0
    #      img1 column (.8, 0, .6), own c2 = .6, c0 scores higher -> rank 1  => R@1 1/2, R@2 1
    m = retrieval_metrics(img, cap, idx, ks=(1, 2))
    assert m == pytest.approx({"t2i_recall@1": 1 / 3, "t2i_recall@2": 1.0,
                               "i2t_recall@1": 0.5, "i2t_recall@2": 1.0})
    assert "mean_recall" not in m
    m = retrieval_metrics(torch.tensor(img), torch.tensor(cap), torch.tensor(idx))
    assert m["mean_recall"] == pytest.approx((1 / 3 + 1 + 1 + 0.5 + 1 + 1) / 6)
    assert set(m) == {n for n in METRICS if METRICS[n].target_type == "retrieval"}


def test_retrieval_ties_are_broken_at_random():
    # Two identical images, one caption each, both captions identical: every score ties, so
    # each query's relevant candidate is first with probability 1/2.
    img = np.array([[1.0, 1.0], [1.0, 1.0]])
    cap = np.array([[1.0, 0.0], [1.0, 0.0]])
    m = retrieval_metrics(img, cap, [0, 1], ks=(1, 2))
    assert m == {"t2i_recall@1": 0.5, "t2i_recall@2": 1.0, "i2t_recall@1": 0.5, "i2t_recall@2": 1.0}
    # A distractor caption identical to image 1's own caption ties with it; one scoring higher beats it.
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    cap = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8], [0.0, 1.0]])
    m = retrieval_metrics(img, cap, [0, 1, 0, 1], ks=(1, 2))
    assert m["i2t_recall@1"] == 1.0  # image 1's own caption 3 scores 1.0, highest
    m = retrieval_metrics(img, cap[:3], [0, 1, 0], ks=(1, 2))
    # image 1: own caption 1 (.8) ties with caption 2 (.8) -> 1/2 at k = 1; image 0: caption 0 best
    assert m["i2t_recall@1"] == 0.75 and m["i2t_recall@2"] == 1.0
    assert m["t2i_recall@1"] == pytest.approx(2 / 3)  # caption 2 prefers image 1 (.8 > .6)


@st.composite
def retrieval_cases(draw):
    n_img = draw(st.integers(1, 12))
    per_image = draw(st.lists(st.integers(1, 4), min_size=n_img, max_size=n_img))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["continuous", "signs", "duplicates"]))
    chunk = draw(st.integers(1, 12))
    ks = tuple(draw(st.lists(st.integers(1, 15), min_size=1, max_size=4, unique=True)))
    return n_img, per_image, seed, kind, chunk, ks


def _make_retrieval_data(n_img, per_image, seed, kind):
    rng = np.random.default_rng(seed)
    idx = np.repeat(np.arange(n_img), per_image)
    rng.shuffle(idx)
    if kind == "continuous":
        d = 6
        img = rng.standard_normal((n_img, d))
        cap = 0.7 * img[idx] + rng.standard_normal((len(idx), d))
    else:
        # +-1 entries with d = 4: normalised entries are +-0.5 and every score is a multiple of
        # 1/4, exact in float32 and float64 -> lots of exact ties, same in both computations.
        d = 4
        img = rng.choice([-1.0, 1.0], size=(n_img, d))
        cap = rng.choice([-1.0, 1.0], size=(len(idx), d))
        if kind == "duplicates":  # duplicated images and captions on top
            if n_img > 1:
                img[rng.integers(0, n_img, n_img // 2)] = img[0]
            cap[rng.integers(0, len(idx), len(idx) // 2)] = cap[0]
            cap[rng.integers(0, len(idx), len(idx) // 3)] = img[idx[0]]
        img = img * rng.choice([0.5, 1.0, 3.0], size=(n_img, 1))  # scale must not matter
    return img, cap, idx


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(retrieval_cases())
def test_retrieval_matches_naive_reference(case):
    n_img, per_image, seed, kind, chunk, ks = case
    img, cap, idx = _make_retrieval_data(n_img, per_image, seed, kind)
    ref = _reference_retrieval(img, cap, idx, ks)
    for dtype in (torch.float32, torch.float64):
        got = retrieval_metrics(img, cap, idx, ks=ks, chunk_size=chunk, dtype=dtype)
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (key, dtype)
    if kind == "continuous":  # no ties: also CLIP_benchmark's literal top-k membership
        lit = _topk_membership_reference(img, cap, idx, ks)
        assert lit == pytest.approx(ref, abs=1e-12)


def test_retrieval_medium_random_against_reference():
    rng = np.random.default_rng(1)
    n_img, d = 300, 32
    idx = np.concatenate([np.repeat(np.arange(n_img), 5), rng.integers(0, n_img, 40)])
    img = rng.standard_normal((n_img, d)).astype(np.float32)
    cap = (0.08 * img[idx] + rng.standard_normal((len(idx), d)) / np.sqrt(d)).astype(np.float32)
    ref = _reference_retrieval(img, cap, idx, (1, 5, 10))
    for chunk in (61, 256, 4096):
        got = retrieval_metrics(img, cap, idx, chunk_size=chunk)
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (key, chunk)
    assert 0.0 < ref["t2i_recall@1"] < ref["t2i_recall@10"] < 1.0  # a non-trivial case


def test_retrieval_k_larger_than_gallery_and_half_precision():
    img = np.eye(3)
    cap = np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.2]])
    m = retrieval_metrics(img, cap, [0, 1, 2], ks=(1, 50))
    assert m["t2i_recall@50"] == 1.0 and m["i2t_recall@50"] == 1.0
    # caption 1 (own image 1) and caption 2 (own image 2) each prefer the other's image
    assert m["t2i_recall@1"] == pytest.approx(1 / 3) and m["i2t_recall@1"] == pytest.approx(1 / 3)
    h = retrieval_metrics(torch.tensor(img, dtype=torch.float16), torch.tensor(cap, dtype=torch.float16),
                          [0, 1, 2], ks=(1, 50))
    assert h == m
    big = retrieval_metrics(img * 1e30, cap * 1e30, [0, 1, 2], ks=(1, 50))  # squares overflow float32
    assert big == m


def test_retrieval_restores_torch_threads():
    img, cap, idx = _make_retrieval_data(20, [2] * 20, 0, "continuous")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ref = retrieval_metrics(img, cap, idx, chunk_size=7)
        assert torch.get_num_threads() == 2
        with pytest.raises(DataError):
            retrieval_metrics(img, cap, idx[:-1])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert retrieval_metrics(img, cap, idx, chunk_size=7) == ref


def _near_tie_data(seed=3, n_img=240, d=8):
    """Unit rows with entries k/16 (integer vectors of norm 16), so that every score is a
    multiple of 1/256 computed exactly in any order (duplicated rows then tie whatever the
    matrix product's blocking); captions are rows near their image's, plus copies of some
    captions given to other images. Per chunk only some images have other captions at or
    above their best own score, which exercises the sparse path with exact ties in it."""
    rng = np.random.default_rng(seed)
    cand = rng.integers(-8, 9, size=(400_000, d))
    pool = cand[(cand**2).sum(1) == 256] / 16.0
    img = pool[rng.choice(len(pool), n_img, replace=False)]
    idx = np.repeat(np.arange(n_img), 2)
    cap = np.stack([pool[rng.choice(np.flatnonzero(pool @ img[i] >= 0.55))] for i in idx])
    src = rng.choice(len(idx), 30, replace=False)
    cap = np.concatenate([cap, cap[src]])
    idx = np.concatenate([idx, (idx[src] + rng.integers(1, n_img, len(src))) % n_img])
    perm = rng.permutation(len(idx))
    return img, cap[perm], idx[perm]


def test_retrieval_exact_ties_inside_the_interval():
    img, cap, idx = _near_tie_data()
    ref = _reference_retrieval(img, cap, idx, (1, 2, 5, 10))
    for chunk in (7, 40, 4096):
        for dtype in (torch.float32, torch.float64):
            got = retrieval_metrics(img, cap, idx, ks=(1, 2, 5, 10), chunk_size=chunk, dtype=dtype)
            for key, value in ref.items():
                assert got[key] == pytest.approx(value, abs=1e-12), (key, chunk, dtype)
    assert 0.0 < ref["i2t_recall@1"] < ref["i2t_recall@10"] < 1.0  # a non-trivial case


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_retrieval_on_cuda_matches_cpu():
    img, cap, idx = _make_retrieval_data(50, [3] * 50, 0, "continuous")
    assert retrieval_metrics(img, cap, idx, device="cuda") == retrieval_metrics(img, cap, idx)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_and_sane():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 3, 200))

    def acc(t, p):
        return classification_metrics(t, p, 3)["accuracy"]

    a = bootstrap_ci(acc, (y_true, y_pred), n_resamples=300, seed=5)
    b = bootstrap_ci(acc, (y_true, y_pred), n_resamples=300, seed=5)
    c = bootstrap_ci(acc, (y_true, y_pred), n_resamples=300, seed=6)
    assert a == b
    assert a != c
    assert set(a) == {"low", "high", "mean", "std"}
    point = acc(y_true, y_pred)
    assert a["low"] < point < a["high"]
    assert a["low"] < a["mean"] < a["high"] and a["std"] > 0
    # roughly the binomial standard error sqrt(p(1-p)/n)
    assert a["std"] == pytest.approx(math.sqrt(point * (1 - point) / 200), rel=0.25)
    narrow = bootstrap_ci(acc, (y_true, y_pred), n_resamples=300, confidence=0.5, seed=5)
    assert a["low"] <= narrow["low"] <= narrow["high"] <= a["high"]


def test_bootstrap_resamples_rows_jointly_and_matches_manual_loop():
    x = np.arange(50.0)
    y = 2 * x
    # the same rows are drawn for every array: y == 2x holds in every resample
    r = bootstrap_ci(lambda a, b: float(np.max(np.abs(b - 2 * a))), (x, y), n_resamples=50)
    assert r == {"low": 0.0, "high": 0.0, "mean": 0.0, "std": 0.0}
    rng = np.random.default_rng(3)
    manual = [float(np.mean(x[rng.integers(0, 50, size=50)])) for _ in range(100)]
    got = bootstrap_ci(np.mean, (x,), n_resamples=100, confidence=0.9, seed=3)
    assert got["mean"] == pytest.approx(np.mean(manual))
    assert got["std"] == pytest.approx(np.std(manual, ddof=1))
    assert got["low"] == pytest.approx(np.quantile(manual, 0.05))
    assert got["high"] == pytest.approx(np.quantile(manual, 0.95))


def test_bootstrap_drops_undefined_resamples():
    t = np.array([0.0, 0.0, 0.0, 1.0])
    p = np.array([1.0, -1.0, 1.0, 1.0])
    r = bootstrap_ci(lambda a, b: mosi_metrics(a, b)["acc2_non0"], (t, p), n_resamples=200)
    assert r["low"] == r["high"] == 1.0  # resamples without the nonzero truth give NaN, dropped
    nan = bootstrap_ci(lambda a: float("nan"), (t,), n_resamples=5)
    assert all(math.isnan(v) for v in nan.values())


# --------------------------------------------------------------------------- table / dispatch


def test_metric_table_covers_every_key():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 30)
    p = rng.integers(0, 2, 30)
    produced = set(compute_metrics("binary", t, p, 2, scores=p * 0.5)) | set(compute_metrics("regression", t * 1.0, p * 1.0))
    produced |= set(compute_metrics("multilabel", np.stack([t, p], 1), np.stack([p, t], 1), 2))
    img, cap, idx = _make_retrieval_data(5, [2] * 5, 0, "continuous")
    produced |= set(retrieval_metrics(img, cap, idx))
    assert produced == set(METRICS)
    for name, info in METRICS.items():
        assert info.name == name
        assert info.target_type in {"multiclass", "binary", "regression", "retrieval", "multilabel"}
        assert isinstance(info.higher_is_better, bool) and info.description and "\n" not in info.description
        assert info.higher_is_better == (name not in ("mae", "hamming_loss"))
    assert {n for n, i in METRICS.items() if i.target_type == "binary"} == {"precision", "recall", "f1", "auroc"}
    assert set(metric_names("binary")) == set(compute_metrics("binary", t, p, scores=p * 0.5))
    assert set(metric_names("multiclass")) == set(compute_metrics("multiclass", t, p, 3))
    assert set(metric_names("regression")) == set(mosi_metrics([1.0, -1.0], [0.5, 0.5]))


def test_compute_metrics_dispatch():
    t, p = [0, 1, 2, 2], [0, 2, 2, 1]
    assert compute_metrics("multiclass", t, p, 3) == classification_metrics(t, p, 3)
    assert compute_metrics("binary", [0, 1, 1], [1, 1, 0]) == classification_metrics([0, 1, 1], [1, 1, 0], 2, binary=True)
    assert compute_metrics("regression", [0.5, -1.0], [1.0, 1.0]) == mosi_metrics([0.5, -1.0], [1.0, 1.0])
    with pytest.raises(DataError, match="num_classes"):
        compute_metrics("multiclass", t, p)
    with pytest.raises(DataError, match="retrieval_metrics"):
        compute_metrics("retrieval", t, p)
    with pytest.raises(DataError, match="unknown target type"):
        compute_metrics("ranking", t, p, 3)
    with pytest.raises(DataError, match="num_classes == 2"):
        compute_metrics("binary", t, p, 3)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("y_true, y_pred, c, match", [
    ([0, 1, 1], [0, 1], 2, "different lengths"),
    ([], [], 2, "empty"),
    ([0, 1], [0.0, float("nan")], 2, "non-finite"),
    ([0, 1], [0.0, float("inf")], 2, "non-finite"),
    ([0, 2], [0, 1], 2, r"label 2 at index 1 is out of range \[0, 2\)"),
    ([0, 1], [-1, 1], 2, "label -1"),
    ([0, 1], [0.5, 1.0], 2, "must be integers"),
    (["a", "b"], [0, 1], 2, "must be integers"),
    ([[0, 1], [1, 0]], [0, 1], 2, "1-D"),
    ([0, 1], [0, 1], 0, "num_classes"),
    ([0, 1], [0, 1], 2.0, "num_classes"),
])
def test_classification_errors(y_true, y_pred, c, match):
    with pytest.raises(DataError, match=match):
        classification_metrics(y_true, y_pred, c)


@pytest.mark.parametrize("y_true, y_pred, match", [
    ([0.1, 0.2], [0.3], "different lengths"),
    ([], [], "empty"),
    ([0.1, 0.2], [float("nan"), 0.0], "y_pred: non-finite value nan at index 0"),
    ([0.1, float("-inf")], [0.0, 0.0], "y_true: non-finite"),
    (["x", "y"], [0.0, 0.0], "real numbers"),
])
def test_mosi_errors(y_true, y_pred, match):
    with pytest.raises(DataError, match=match):
        mosi_metrics(y_true, y_pred)


def test_retrieval_errors():
    img = np.eye(3)
    cap = np.eye(3)
    idx = [0, 1, 2]
    with pytest.raises(DataError, match="row 1 is a zero vector"):
        retrieval_metrics(img, np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 1.0]]), idx)
    with pytest.raises(DataError, match="image_embeddings: row 0 is a zero vector"):
        retrieval_metrics(np.zeros((3, 3)), cap, idx)
    with pytest.raises(DataError, match="non-finite"):
        retrieval_metrics(img, np.array([[np.nan, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]), idx)
    with pytest.raises(DataError, match="different dimensions"):
        retrieval_metrics(img, np.eye(3, 4), idx)
    with pytest.raises(DataError, match="2 entries but there are 3 captions"):
        retrieval_metrics(img, cap, [0, 1])
    with pytest.raises(DataError, match="image row 3 is out of range"):
        retrieval_metrics(img, cap, [0, 1, 3])
    with pytest.raises(DataError, match=r"1 image\(s\) have no caption \(rows 2\)"):
        retrieval_metrics(img, cap, [0, 1, 1])
    with pytest.raises(DataError, match="2-D"):
        retrieval_metrics(np.ones(3), cap, idx)
    with pytest.raises(DataError, match="empty"):
        retrieval_metrics(np.ones((0, 3)), cap, idx)
    with pytest.raises(DataError, match="ks"):
        retrieval_metrics(img, cap, idx, ks=(0, 1))
    with pytest.raises(DataError, match="ks"):
        retrieval_metrics(img, cap, idx, ks=())
    with pytest.raises(DataError, match="chunk_size"):
        retrieval_metrics(img, cap, idx, chunk_size=0)
    with pytest.raises(DataError, match="integer image rows"):
        retrieval_metrics(img, cap, [0.5, 1, 2])
    with pytest.raises(DataError, match="dtype"):
        retrieval_metrics(img, cap, idx, dtype="int32")
    assert retrieval_metrics(img, cap, [0.0, 1.0, 2.0], dtype="float64")["t2i_recall@1"] == 1.0


def test_bootstrap_accepts_a_single_array():
    x = np.arange(10.0)
    assert bootstrap_ci(np.mean, x, n_resamples=20) == bootstrap_ci(np.mean, (x,), n_resamples=20)


def test_bootstrap_errors():
    with pytest.raises(DataError, match="different lengths"):
        bootstrap_ci(lambda a, b: 0.0, (np.zeros(3), np.zeros(4)))
    with pytest.raises(DataError, match="empty"):
        bootstrap_ci(lambda a: 0.0, (np.zeros(0),))
    with pytest.raises(DataError, match="confidence"):
        bootstrap_ci(lambda a: 0.0, (np.zeros(3),), confidence=1.0)
    with pytest.raises(DataError, match="n_resamples"):
        bootstrap_ci(lambda a: 0.0, (np.zeros(3),), n_resamples=0)
    with pytest.raises(DataError, match="real number"):
        bootstrap_ci(lambda a: {"x": 1.0}, (np.zeros(3),), n_resamples=2)
    with pytest.raises(DataError, match="at least one array"):
        bootstrap_ci(lambda: 0.0, ())


def test_unreadable_inputs_and_unknown_target_type():
    with pytest.raises(DataError, match="cannot be read"):
        mosi_metrics([[1.0, 2.0], [1.0]], [0.0, 0.0])
    with pytest.raises(DataError, match="unknown target type"):
        metric_names("ranking")


def test_single_metric_equals_the_full_set_and_the_ci_is_unchanged():
    """The bootstrap computes the primary metric alone: the same value as compute_metrics gives
    (every MOSI metric, a classification one through the fallback), and so the same CI."""
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.metrics import bootstrap_ci, compute_metrics, single_metric
    from mmbench.evaluation.scoring import primary_ci, score

    rng = np.random.default_rng(3)
    t = np.round(rng.uniform(-3, 3, 300) * 3) / 3  # MOSI-like, with exact zeros
    t[:20] = 0.0
    p = t + rng.normal(0, 1.2, 300)
    full = compute_metrics("regression", t, p)
    for name, value in full.items():
        assert single_metric("regression", name, t, p) == value, name
    assert np.isnan(single_metric("regression", "acc2_non0", np.zeros(5), np.ones(5)))
    y, yp = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    assert single_metric("multiclass", "f1_macro", y, yp, 4) == compute_metrics("multiclass", y, yp, 4)["f1_macro"]
    spec = get_task("mosi")
    before = bootstrap_ci(lambda a, b: score(spec, a, b)[spec.primary_metric], (t, p), n_resamples=200, seed=7)
    assert primary_ci(spec, t, p, seed=7, n_resamples=200) == before
