"""Per-query records of retrieval entries (issue 32, item 2): the image-cluster resampling of
recall@k equals recomputing it on the resampled queries, the board's two-level test reads the
records, and `mmbench leaderboard rescore` brings stored entries up to the tie rule."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mmbench.evaluation.retrieval import COUNT_KEYS, recalls_from_counts, retrieval_counts
from mmbench.evaluation.retrieval_scoring import query_records
from tests._cli import run_main
from tests._datapaths import REPO, real_data_root


def _records(seed: int, n_img: int = 30, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    idx = np.repeat(np.arange(n_img), rng.integers(1, 4, n_img))
    img = rng.choice([-1.0, 1.0], size=(n_img, 6))
    img[n_img - 8:] = img[n_img - 8]  # copies: many ties
    cap = img[idx] + noise * rng.choice([-1.0, 0.0, 1.0], size=(len(idx), 6))
    cap[(cap == 0).all(axis=1)] = 1.0
    t2i, i2t = retrieval_counts(img, cap, idx)
    image_ids = [f"img{i}" for i in range(n_img)]
    return query_records(t2i, i2t, image_ids, [f"cap{j}" for j in range(len(idx))], idx), t2i, i2t, idx


def test_image_cluster_resampling_equals_recomputing_on_the_resampled_queries():
    from mmbench.evaluation.resampling import item_weights, resampled_metric, retrieval_cluster_arrays

    records, t2i, i2t, idx = _records(0)
    order = sorted(records["i2t"]["ids"])
    captions, sums = retrieval_cluster_arrays(records, order)
    pos = [order.index(c) for c in records["i2t"]["ids"]]  # gallery row -> position in `order`
    w = next(item_weights(len(order), 7, np.random.default_rng(3)))
    names = ["t2i_recall@1", "t2i_recall@5", "i2t_recall@10", "mean_recall"]
    for name in names:
        got = resampled_metric(name, "retrieval", None, captions, sums[None], w)[0]
        for b, row in enumerate(w):
            # the resample written out: image i drawn row[i] times, with its captions each time
            img_rep = np.repeat(np.arange(len(order)), row.astype(int))
            gallery_rows = [pos.index(i) for i in img_rep]
            cap_rows = np.concatenate([np.flatnonzero(idx == g) for g in gallery_rows])
            want = recalls_from_counts({k: t2i[k][cap_rows] for k in COUNT_KEYS},
                                       {k: i2t[k][gallery_rows] for k in COUNT_KEYS})[name]
            assert got[b] == pytest.approx(want, abs=1e-12), (name, b)
    ones = np.ones((1, len(order)), np.float32)
    full = recalls_from_counts(t2i, i2t)
    for name in names:
        assert resampled_metric(name, "retrieval", None, captions, sums[None], ones)[0, 0] == pytest.approx(full[name])


def test_retrieval_influence_values_are_the_ratio_derivatives_and_the_variance_matches_the_draws():
    """recall@k over images is a ratio of weighted sums: its influence values are the analytic
    derivatives (s_g - R c_g) / C (text-to-image) and (h_g - R) / n (image-to-text), and the
    control-variate variance of a pair agrees with the plain variance of the resampled differences."""
    from mmbench.evaluation.resampling import RETRIEVAL_KS, retrieval_cluster_arrays, two_level

    recs = [_records(0, noise=nz)[0] for nz in (0.3, 0.4, 2.0, 2.2)]
    order = sorted(recs[0]["i2t"]["ids"])
    arrays = [retrieval_cluster_arrays(r, order) for r in recs]
    captions = arrays[0][0]
    preds = [np.stack([arrays[0][1], arrays[1][1]]), np.stack([arrays[2][1], arrays[3][1]])]
    res = two_level(captions, preds, "t2i_recall@5", "retrieval", None, 6000, 11)
    c = RETRIEVAL_KS.index(5)
    for e, p in enumerate(preds):
        for k, sums in enumerate(p):
            r = sums[:, c].sum() / captions.sum()
            assert res.seed_points[e][k] == pytest.approx(r, abs=1e-12)
            assert res.influence[e][k] == pytest.approx((sums[:, c] - r * captions) / captions.sum(), abs=1e-6)
    res_i = two_level(captions, preds, "i2t_recall@1", "retrieval", None, 10, 11)
    hits = preds[0][0][:, len(RETRIEVAL_KS)]
    assert res_i.influence[0][0] == pytest.approx((hits - hits.mean()) / len(hits), abs=1e-6)
    v, err, used = res.pair_variance(0, 1)
    plain = np.var(res.values[0] - res.values[1])
    assert used == 6000 and err < 0.05 * v
    assert v == pytest.approx(plain, rel=0.1)


class _Entry:
    def __init__(self, name, seed, records):
        self.name, self.seed, self.extra, self.task = name, seed, {"test_queries": records}, "t"


def test_the_two_level_test_reads_the_records_clustered_by_image():
    from mmbench.evaluation.significance import task_significance

    good = [_Entry("good", s, _records(0, noise=0.3)[0]) for s in range(3)]
    bad = [_Entry("bad", s, _records(0, noise=2.0)[0]) for s in range(3)]
    sig = task_significance("t", ["good", "bad"], {"good": good, "bad": bad}, "mean_recall", True, n_resamples=400)
    captions = len(good[0].extra["test_queries"]["t2i"]["ids"])
    assert (sig.items, sig.unit, sig.clusters) == (captions, "image", 30)
    assert f"over the {captions:,} test items resampled by image (30 images)" in sig.caption
    pair = sig.pair("good", "bad")
    want = recalls_from_counts(*({k: np.array(good[0].extra["test_queries"][d][k]) for k in COUNT_KEYS}
                                 for d in ("t2i", "i2t")))["mean_recall"]
    assert sig.row("good").value == pytest.approx(want)
    assert pair.diff > 0 and pair.test == "two-level-bootstrap"
    # records of other queries: not comparable, no verdicts
    other = [_Entry("bad", s, _records(1, noise=2.0)[0]) for s in range(2)]
    assert task_significance("t", ["good", "bad"], {"good": good, "bad": other}, "mean_recall", True) is None


@pytest.fixture
def coco_board(tmp_path, monkeypatch):
    root = real_data_root()
    if not (root / "coco" / "annotations" / "captions_val2017.json").is_file():
        pytest.skip(f"COCO captions_val2017.json not under {root}")
    monkeypatch.setenv("MMBENCH_DATA", str(root))
    board = tmp_path / "board"
    shutil.copytree(REPO / "leaderboard" / "coco-retrieval-val2017-carve", board / "coco-retrieval-val2017-carve")
    return board


def test_rescore_brings_an_entry_of_the_old_rule_up_to_the_tie_rule(coco_board, monkeypatch, capsys):
    path = coco_board / "coco-retrieval-val2017-carve" / "dual-encoder__seed0.json"
    current = json.loads(path.read_text())
    old = json.loads(path.read_text())
    old["metrics"]["clean"]["t2i_recall@10"] = 0.21311475409836064  # as the optimistic rule scored it
    for key in ("test_queries", "missing", "present_only"):
        old["extra"].pop(key)
    path.write_text(json.dumps(old, indent=2))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", coco_board], monkeypatch, capsys)
    assert rc == 1 and "t2i_recall@10: entry 0.213" in out
    rc, out, err = run_main(["leaderboard", "rescore", "--dir", coco_board], monkeypatch, capsys)
    assert rc == 0 and "dual-encoder__seed0.json: t2i_recall@10 0.2131 -> 0.0273" in out, out + err
    assert "dual-encoder__seed1.json: unchanged" in out and "re-scored 5 retrieval entries" in out
    assert json.loads(path.read_text()) == current  # everything else kept
    rc, out, err = run_main(["leaderboard", "verify", "--dir", coco_board], monkeypatch, capsys)
    assert rc == 0 and "5 ok" in out


def test_rescore_refuses_changed_embeddings_and_writes_nothing(coco_board, monkeypatch, capsys):
    task = coco_board / "coco-retrieval-val2017-carve"
    before = {p.name: p.read_bytes() for p in task.glob("*.json")}
    npz = task / "predictions" / "dual-encoder__seed3.npz"
    npz.write_bytes(npz.read_bytes() + b"\0")
    rc, out, err = run_main(["leaderboard", "rescore", "--dir", coco_board], monkeypatch, capsys)
    assert rc == 1 and "dual-encoder__seed3.npz" in err and "sha256" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in task.glob("*.json")} == before


def test_rescore_needs_a_board_folder(tmp_path, monkeypatch, capsys):
    rc, out, err = run_main(["leaderboard", "rescore", "--dir", tmp_path / "nope"], monkeypatch, capsys)
    assert rc == 1 and "leaderboard folder not found" in err and len(err.strip().splitlines()) == 1
