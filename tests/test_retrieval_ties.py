"""recall@k under uniformly random tie-breaking (issue 32, item 1): the expected hit of a query
against an enumeration of every order of its tied candidates, hand-worked cases with many
ties, copies that tie at every chunk size and vectors one ulp apart that do not."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from mmbench.evaluation.retrieval import expected_hits, recalls_from_counts, retrieval_counts, retrieval_metrics


def _enumerated_hit(scores, relevant, k) -> Fraction:
    """The hit at k averaged over every order of the candidates that is consistent with the
    scores (all permutations, then a stable sort by score: each order of every tied group
    equally often)."""
    n = len(scores)
    hits = total = 0
    for perm in itertools.permutations(range(n)):
        ranked = sorted(perm, key=lambda c: -scores[c])  # stable: ties keep the permutation's order
        hits += any(relevant[c] for c in ranked[:k])
        total += 1
    return Fraction(hits, total)


@pytest.mark.parametrize("t,r", [(1, 1), (2, 1), (3, 1), (3, 2), (4, 2), (5, 2), (5, 3), (6, 5), (7, 1), (7, 4)])
def test_expected_hit_equals_the_enumeration_of_every_order_of_the_tied_block(t, r):
    for g in range(4):
        # g candidates above, a tied block of t with r relevant, two below (one of them relevant)
        scores = [3.0] * g + [2.0] * t + [1.0, 1.0]
        relevant = [False] * g + [True] * r + [False] * (t - r) + [True, False]
        for k in range(1, g + t + 4):
            want = _enumerated_hit(scores, relevant, k) if g + t + 2 <= 8 else None
            got = float(expected_hits([g], [t], [r], k)[0])
            m = min(max(k - g, 0), t)
            assert got == pytest.approx(1 - math.comb(t - r, m) / math.comb(t, m), abs=1e-15)
            if want is not None:
                assert got == pytest.approx(float(want), abs=1e-15), (g, t, r, k)
            if r == 1:  # the formula: e = t - 1 others tied
                assert got == pytest.approx(min(max(k - g, 0), t) / t, abs=1e-15)


def test_expected_hits_refuses_impossible_counts():
    from mmbench.core.errors import DataError

    for above, tied, rel in (([-1], [1], [1]), ([0], [0], [1]), ([0], [2], [3]), ([0], [2], [0])):
        with pytest.raises(DataError, match="retrieval counts"):
            expected_hits(above, tied, rel, 1)


def _sign_data(seed: int, n_img: int, per_image: list[int], copies: bool):
    """+-1 entries in 4 dimensions: every score is a multiple of 1/4, exact in any order."""
    rng = np.random.default_rng(seed)
    idx = np.repeat(np.arange(n_img), per_image)
    img = rng.choice([-1.0, 1.0], size=(n_img, 4))
    cap = rng.choice([-1.0, 1.0], size=(len(idx), 4))
    if copies:
        img[rng.integers(0, n_img, 2)] = img[0]
        cap[rng.integers(0, len(idx), 2)] = cap[0]
    return img, cap, idx


@pytest.fixture(params=["one product", "chunked products"])
def product(request, monkeypatch):
    """Both CPU paths: one product read by both directions, and chunks of two products."""
    import mmbench.evaluation.retrieval as retrieval

    if request.param == "chunked products":
        monkeypatch.setattr(retrieval, "_FULL_PRODUCT_BYTES", 0)
    return request.param


@pytest.mark.parametrize("seed", range(6))
def test_recalls_equal_the_enumeration_over_every_tie_breaking(seed, product):
    rng = np.random.default_rng(100 + seed)
    n_img = int(rng.integers(2, 6))
    per_image = rng.integers(1, 3, n_img).tolist()
    while sum(per_image) > 7:
        per_image[int(np.argmax(per_image))] -= 1
    img, cap, idx = _sign_data(seed, n_img, per_image, copies=seed % 2 == 0)
    s = (cap / 2.0) @ (img / 2.0).T  # exact: the normalised rows are +-1/2
    ks = (1, 2, 3, 5)
    want = {}
    for k in ks:
        want[f"t2i_recall@{k}"] = float(np.mean([float(_enumerated_hit(s[j], np.arange(n_img) == idx[j], k))
                                                 for j in range(len(cap))]))
        want[f"i2t_recall@{k}"] = float(np.mean([float(_enumerated_hit(s[:, i], idx == i, k)) for i in range(n_img)]))
    for chunk in (1, 2, 4096):
        for dtype in (torch.float32, torch.float64):
            got = retrieval_metrics(img, cap, idx, ks=ks, chunk_size=chunk, dtype=dtype)
            assert got == pytest.approx(want, abs=1e-12), (chunk, dtype)


def test_hand_worked_many_ties():
    # four identical images with one identical caption each: every score ties
    img = np.ones((4, 3))
    cap = np.tile([[1.0, 0.0, 0.0]], (4, 1))
    t2i, i2t = retrieval_counts(img, cap, [0, 1, 2, 3])
    for counts in (t2i, i2t):
        assert counts["above"].tolist() == [0] * 4 and counts["tied"].tolist() == [4] * 4
        assert counts["relevant"].tolist() == [1] * 4
    m = retrieval_metrics(img, cap, [0, 1, 2, 3], ks=(1, 2, 3, 4))
    assert m == {f"{d}_recall@{k}": k / 4 for d in ("t2i", "i2t") for k in (1, 2, 3, 4)}

    # image 0 with 5 captions: 2 of them tie at the top with 3 captions of image 1; image 1's
    # other caption (e1) is alone above them for image 1's query
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    img = np.array([e1, [1.0, 1.0]])
    cap = np.array([e1, e1, e1, e1, e1, e2, [0.0, 1.0], [0.0, 1.0]])
    idx = np.array([0, 0, 1, 1, 1, 0, 0, 0])  # image 0: captions 0, 1 (e1), 5, 6, 7 (e2)
    t2i, i2t = retrieval_counts(img, cap, idx)
    # image 0 (e1): captions 0-4 score 1, 5-7 score 0; best own 1, tied 5, relevant 2
    # image 1 (e1+e2)/sqrt2: every caption scores 1/sqrt2: tied 8, relevant its 3 captions
    assert i2t["above"].tolist() == [0, 0] and i2t["tied"].tolist() == [5, 8] and i2t["relevant"].tolist() == [2, 3]
    m = recalls_from_counts(t2i, i2t, ks=(1, 2, 3, 4))
    # image 0: 1 - C(3, k)/C(5, k): k=1 2/5, k=2 7/10, k=3 9/10, k=4 1
    # image 1: 1 - C(5, k)/C(8, k): k=1 3/8, k=2 1 - 10/28, k=3 1 - 10/56, k=4 1 - 5/70
    want_i2t = {1: (2 / 5 + 3 / 8) / 2, 2: (7 / 10 + 18 / 28) / 2, 3: (9 / 10 + 46 / 56) / 2, 4: (1 + 65 / 70) / 2}
    for k, v in want_i2t.items():
        assert m[f"i2t_recall@{k}"] == pytest.approx(v, abs=1e-15)
    # t2i: captions 0, 1 (e1, own image 0): image 0 scores 1 > image 1's 1/sqrt2 -> hit at 1;
    # captions 2-4 (e1, own image 1): image 0 above -> miss at 1, hit at 2; captions 5-7
    # (e2, own image 0): image 1 above -> miss at 1, hit at 2
    assert t2i["above"].tolist() == [0, 0, 1, 1, 1, 1, 1, 1] and t2i["tied"].tolist() == [1] * 8
    assert m["t2i_recall@1"] == pytest.approx(2 / 8) and m["t2i_recall@2"] == 1.0


def test_a_shared_missing_image_vector_earns_what_chance_gives():
    """968 of 1,000 images sharing one vector (COCO's absent images): a caption of one of them
    that prefers the shared vector to every present image is a hit at k with probability
    k / 968, not 1."""
    rng = np.random.default_rng(0)
    n_img, shared = 1000, 968
    img = rng.standard_normal((n_img, 16)).astype(np.float32)
    img[32:] = img[32]
    idx = np.arange(n_img)
    cap = img[idx] + 0.01 * rng.standard_normal((n_img, 16)).astype(np.float32)
    t2i, _ = retrieval_counts(img, cap, idx)
    missing = np.arange(32, n_img)
    assert (t2i["tied"][missing] == shared).all()
    m = retrieval_metrics(img, cap, idx, ks=(1, 5, 10))
    top = (t2i["above"][missing] == 0).mean()  # those that prefer the shared vector
    assert top > 0.9
    assert m["t2i_recall@10"] == pytest.approx((32 * 1.0 + expected_hits(t2i["above"][missing], t2i["tied"][missing],
                                                                          t2i["relevant"][missing], 10).sum()) / n_img)
    assert m["t2i_recall@10"] < 32 / n_img + 10 / shared + 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_copies_tie_at_every_chunk_size(dtype, product):
    """Random (inexact) vectors in 37 dimensions with several copies of some images and
    captions: every chunk size gives the same counts, and a caption's own image ties with
    each of its copies (they count in `tied`), whatever the product's blocking."""
    rng = np.random.default_rng(1)
    n_img, d = 23, 37
    img = rng.standard_normal((n_img, d))
    img[[5, 9, 17]] = img[3]
    img[[20, 21]] = img[1]
    idx = np.repeat(np.arange(n_img), 2)
    cap = img[idx] + rng.standard_normal((len(idx), d))
    cap[[7, 11, 30]] = cap[0]
    copies = {3: 4, 5: 4, 9: 4, 17: 4, 1: 3, 20: 3, 21: 3}
    ref = None
    for chunk in range(1, len(idx) + 2):
        t2i, i2t = retrieval_counts(img, cap, idx, chunk_size=chunk, dtype=dtype)
        for j, i in enumerate(idx):
            assert t2i["tied"][j] >= copies.get(int(i), 1), (chunk, j)
        assert i2t["tied"][0] >= 1 and i2t["tied"][int(idx[7])] >= 1
        got = (t2i, i2t)
        if ref is None:
            ref = got
        for a, b in zip(ref, got):
            for key in a:
                assert np.array_equal(a[key], b[key]), (chunk, key)
    # captions 7, 11 and 30 are copies of caption 0 (of other images): for every image query,
    # the four score alike, so a query whose best own caption is caption 0 ties with all four
    t2i, i2t = ref
    s = retrieval_counts(img, cap, idx, dtype=dtype)[1]
    own0 = int(idx[0])
    c = cap / np.linalg.norm(cap, axis=1, keepdims=True)
    i = img / np.linalg.norm(img, axis=1, keepdims=True)
    if np.argmax(c[idx == own0] @ i[own0]) == 0:  # caption 0 is image 0's best own caption
        assert s["tied"][own0] >= 4


def test_vectors_one_ulp_apart_do_not_tie(product):
    """Image B is image A with one coordinate one ulp larger; the scores differ in the last
    place and are exact (the normalised rows are the inputs themselves, norms 1 in float32),
    so the caption ranks A and B apart at every chunk size and in both precisions."""
    x = np.float32(2.0**-14)
    a = np.array([x, 1.0], dtype=np.float32)
    b = np.array([np.nextafter(x, np.float32(1.0)), 1.0], dtype=np.float32)
    img = np.stack([b, a, a])  # image 0 = B, images 1 and 2 = A (copies: they tie)
    cap = np.array([[1.0, 0.0]] * 3, dtype=np.float32)  # scores: exactly the first coordinate
    for chunk in (1, 2, 3):
        for dtype in (torch.float32, torch.float64):
            t2i, _ = retrieval_counts(img, cap, [0, 1, 2], chunk_size=chunk, dtype=dtype)
            # caption 0 (own image B, scoring one ulp above A): alone at the top
            # captions 1, 2 (own image A): B above, A's copy tied
            assert t2i["above"].tolist() == [0, 1, 1] and t2i["tied"].tolist() == [1, 2, 2], (chunk, dtype)


def test_counts_are_the_same_on_every_path_of_the_chunking(product):
    """Duplicated query rows (several captions with one vector, of different images) take the
    grouped path; a chunk smaller than a group splits the comparisons, never the product."""
    rng = np.random.default_rng(5)
    img = rng.choice([-1.0, 1.0], size=(12, 4))
    idx = np.repeat(np.arange(12), 3)
    cap = rng.choice([-1.0, 1.0], size=(36, 4))
    cap[::4] = cap[0]  # nine captions of different images share a vector
    ref = retrieval_counts(img, cap, idx, chunk_size=4096)
    for chunk in (1, 2, 3, 5, 8):
        got = retrieval_counts(img, cap, idx, chunk_size=chunk)
        for a, b in zip(ref, got):
            assert all(np.array_equal(a[k], b[k]) for k in a), chunk
