"""The resampling unit (issue 32, item 3): the two-level bootstrap draws clusters of test items
(a recording, a video, a dialogue) with replacement, the same clusters for every entry; every
cluster a single item is the item bootstrap draw for draw; items that are copies within their
cluster make the item bootstrap overconfident and the cluster bootstrap not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmbench.core.errors import DataError
from mmbench.evaluation.metrics import compute_metrics
from mmbench.evaluation.resampling import (cluster_index, item_weights, resampled_metric, two_level, two_level_values,
                                          unit_weights)
from mmbench.evaluation.results import make_result
from mmbench.evaluation.significance import item_record, significance_from_arrays, task_clusters


def test_cluster_index_numbers_clusters_in_order_of_first_appearance():
    index, g = cluster_index(["v2", "v1", "v2", "v3", "v1"], 5)
    assert g == 3 and index.tolist() == [0, 1, 0, 2, 1]
    assert cluster_index(None, 4)[0].tolist() == [0, 1, 2, 3]
    assert cluster_index(["z", "y", "x"], 3)[0].tolist() == [0, 1, 2]  # distinct keys: the items' own order
    with pytest.raises(ValueError, match="2 cluster keys for 3 items"):
        cluster_index(["a", "b"], 3)


def test_unit_weights_give_each_item_its_clusters_count():
    keys = np.array(["a", "a", "b", "c", "c", "c"])
    rows = np.concatenate(list(unit_weights(keys, 6, 50, np.random.default_rng(0))))
    clusters = np.concatenate(list(item_weights(3, 50, np.random.default_rng(0))))  # the same draws of 3 clusters
    assert np.array_equal(rows, clusters[:, [0, 0, 1, 2, 2, 2]])
    assert (clusters.sum(axis=1) == 3).all() and len(set(rows.sum(axis=1).tolist())) > 1  # a varying number of items


def test_all_distinct_clusters_are_the_item_bootstrap_draw_for_draw():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    preds = [np.stack([np.where(rng.random(200) < a, y, (y + 1) % 3) for a in (0.7, 0.72, 0.69)]) for _ in range(3)]
    plain = two_level_values(y, preds, "accuracy", "multiclass", 3, 300, seed=[4, 2])
    distinct = two_level_values(y, preds, "accuracy", "multiclass", 3, 300, seed=[4, 2],
                                clusters=[f"rec{k}" for k in range(200)])
    assert np.array_equal(plain, distinct)
    sig_a = significance_from_arrays("t", ["a", "b", "c"], y, preds, "accuracy", "multiclass", 3, True, 300, seed=3)
    sig_b = significance_from_arrays("t", ["a", "b", "c"], y, preds, "accuracy", "multiclass", 3, True, 300, seed=3,
                                     clusters=np.arange(200)[::-1].astype(str))
    assert sig_a.pairs == sig_b.pairs and sig_a.rows == sig_b.rows


@pytest.mark.parametrize("target_type,metrics", [
    ("multiclass", ["accuracy", "f1_macro", "recall_weighted"]),
    ("regression", ["acc2_non0", "f1_has0", "acc7", "mae", "corr"]),
])
def test_resampled_metrics_on_cluster_draws_equal_compute_metrics(target_type, metrics):
    """A cluster resample holds a varying number of items: every metric is normalised by the row's
    own total, checked against compute_metrics on the repeated arrays."""
    rng = np.random.default_rng(5)
    n = 120
    keys = rng.integers(0, 25, n).astype(str)
    if target_type == "regression":
        y = np.round(rng.normal(0, 1.5, n) * 5) / 5
        preds = np.stack([y + rng.normal(0, 1.0, n) for _ in range(2)])
        nc = None
    else:
        y = rng.integers(0, 4, n)
        preds = np.stack([np.where(rng.random(n) < 0.6, y, rng.integers(0, 4, n)) for _ in range(2)])
        nc = 4
    w = np.concatenate(list(unit_weights(keys, n, 6, np.random.default_rng(2))))
    for metric in metrics:
        got = resampled_metric(metric, target_type, nc, y, preds, w)
        for b in range(6):
            idx = np.repeat(np.arange(n), w[b].astype(int))
            for s in range(2):
                ref = compute_metrics(target_type, y[idx], preds[s][idx], nc)[metric]
                assert got[s, b] == pytest.approx(ref, abs=1e-9), (metric, s, b)


def test_copies_within_a_cluster_make_the_item_bootstrap_overconfident():
    """100 recordings, each scored 4 times with the same outcome: there are 100 independent units,
    not 400. The item bootstrap's standard error of the paired difference is half the textbook one
    (sd over recordings / sqrt(100)); the recording bootstrap's matches it."""
    rng = np.random.default_rng(7)
    g, copies = 100, 4
    base_y = rng.integers(0, 2, g)
    right_a, right_b = rng.random(g) < 0.74, rng.random(g) < 0.64
    y = np.repeat(base_y, copies)
    pa = np.repeat(np.where(right_a, base_y, 1 - base_y), copies)[None]
    pb = np.repeat(np.where(right_b, base_y, 1 - base_y), copies)[None]
    keys = np.repeat([f"rec{k}" for k in range(g)], copies)
    d = right_a.astype(float) - right_b
    textbook = d.std() / math.sqrt(g)
    items = two_level_values(y, [pa, pb], "accuracy", "binary", 2, 4000, seed=1)
    recs = two_level_values(y, [pa, pb], "accuracy", "binary", 2, 4000, seed=1, clusters=keys)
    assert np.std(recs[0] - recs[1]) == pytest.approx(textbook, rel=0.1)
    assert np.std(items[0] - items[1]) == pytest.approx(textbook / 2, rel=0.1)
    # so a difference of about 1.5 recording-level standard errors (3 item-level ones): apart by items only
    shift = 1.5 * textbook - d.mean()
    flip = rng.permutation(np.flatnonzero(~right_a))[: int(round(shift * g))]
    right_a[flip] = True
    pa = np.repeat(np.where(right_a, base_y, 1 - base_y), copies)[None]
    kw = dict(metric="accuracy", target_type="binary", num_classes=2, higher_is_better=True, n_resamples=2000)
    by_item = significance_from_arrays("copies", ["a", "b"], y, [pa, pb], seed=0, **kw).pairs[0]
    by_rec = significance_from_arrays("copies", ["a", "b"], y, [pa, pb], seed=0, clusters=keys, **kw).pairs[0]
    assert by_item.diff == by_rec.diff > 0
    assert by_item.significant and not by_rec.significant
    assert by_rec.ci_high - by_rec.ci_low > 1.6 * (by_item.ci_high - by_item.ci_low)


def _entry(name, ids, y, pred, clusters=None):
    rec = item_record(ids, y, pred, "multiclass", 3) | ({"clusters": clusters} if clusters is not None else {})
    return make_result(task="toy", name=name, kind="predictions", primary_metric="accuracy", higher_is_better=True,
                       metrics={"clean": {"accuracy": 0.5}}, dataset_fingerprint="f", extra={"test_items": rec})


def test_task_clusters_reads_the_records_in_the_tests_order_and_refuses_disagreement():
    ids, y = ["i0", "i1", "i2"], [0, 1, 2]
    a = _entry("a", ids, y, y, ["v0", "v0", "v1"])
    b = _entry("b", ids[::-1], y[::-1], y[::-1], ["v1", "v0", "v0"])  # same clusters, other order
    old = _entry("c", ids, y, y)  # a record without clusters says nothing about them
    assert task_clusters("toy", ["i2", "i0", "i1"], {"a": [a], "b": [b], "c": [old]}) == (["v1", "v0", "v0"], "cluster")
    assert task_clusters("toy", ids, {"c": [old]}) == (None, "item")
    bad = _entry("d", ids, y, y, ["v0", "v1", "v1"])
    with pytest.raises(DataError, match="'a' and 'd' store different clusters for test id 'i1'"):
        task_clusters("toy", ids, {"a": [a], "d": [bad]})


# ------------------------------------------------------------------------------------------
# the variance behind every p: the two-level bootstrap's own, without its Monte-Carlo noise
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric,target_type,clustered", [("accuracy", "multiclass", False), ("accuracy", "multiclass", True),
                                                         ("f1_macro", "multiclass", True), ("acc2_non0", "regression", True)])
def test_pair_variance_equals_the_brute_force_two_level_bootstrap(metric, target_type, clustered):
    """pair_variance (seed level averaged exactly, control variate at the cluster level) against
    the plain mean squared deviation of 40,000 drawn two-level resamples."""
    rng = np.random.default_rng(11)
    n = 240
    keys = rng.integers(0, 40, n).astype(str) if clustered else None
    if target_type == "regression":
        y = np.round(rng.normal(0, 1.5, n) * 5) / 5
        preds = [np.stack([y + rng.normal(0, s, n) for _ in range(4)]) for s in (1.0, 1.3)]
        nc = None
    else:
        y = rng.integers(0, 3, n)
        preds = [np.stack([np.where(rng.random(n) < a, y, (y + 1) % 3) for a in accs])
                 for accs in ((0.7, 0.75, 0.68, 0.8), (0.66, 0.69, 0.7, 0.64))]
        nc = 3
    big = two_level(y, preds, metric, target_type, nc, 40_000, seed=2, clusters=keys)
    d = big.point[0] - big.point[1]
    brute = float(np.mean((big.values[0] - big.values[1] - d) ** 2))
    small = two_level(y, preds, metric, target_type, nc, 2000, seed=3, clusters=keys)
    v, err, used = small.pair_variance(0, 1)
    assert used == 2000 and v == pytest.approx(brute, rel=0.03)
    if not clustered:
        assert err < 1e-6 * v  # accuracy is linear in the item counts: no Monte-Carlo error
    # and far less noise than the plain estimate from the same 2,000 resamples
    plain_sd = np.std((small.values[0] - small.values[1] - d) ** 2, ddof=1) / math.sqrt(2000)
    assert err < plain_sd / 2


# ------------------------------------------------------------------------------------------
# the task spec's rule, the stored keys, verify and the backfill command
# ------------------------------------------------------------------------------------------


def test_cluster_rule_is_validated_like_the_other_fields():
    from mmbench.core.errors import SpecError
    from mmbench.data.tasks import Cluster, get_task, parse_task_spec

    assert get_task("mosi").cluster.keys(["03bSnISJMiM_1", "03bSnISJMiM_12", "a_b_3"], None) == ["03bSnISJMiM"] * 2 + ["a_b"]
    assert get_task("avmnist").cluster.keys(["mlx-00012-0_nicolas_0"], None) == ["0_nicolas_0"]
    assert get_task("meld-emotion").cluster.keys(["dia12_utt3"], None) == ["dia12"]
    assert get_task("coco-retrieval").cluster.keys(["coco-1", "coco-2"], np.array([7, 7])) == ["7", "7"]
    assert get_task("synthetic-unique").cluster is None
    with pytest.raises(SpecError, match="does not match the test id 'x'"):
        Cluster(unit="video", id_pattern="^(.+)_[0-9]+$").keys(["x"], None)
    base = get_task("mosi").model_dump(mode="json", exclude={"cluster"})
    for bad, msg in (({"unit": "video"}, "exactly one of id_pattern and field"),
                     ({"unit": "video", "id_pattern": "^.+$"}, "needs a group"),
                     ({"unit": "video", "id_pattern": "^(.+$"}, "not a regular expression"),
                     ({"unit": "Video!", "field": "target"}, "cluster.unit"),
                     ({"unit": "video", "field": "speaker"}, "cluster.field")):
        with pytest.raises(SpecError, match=msg):
            parse_task_spec(base | {"cluster": bad})


def test_records_store_clusters_and_a_wrong_key_is_a_difference():
    from mmbench.evaluation.significance import item_record_differences

    right = item_record(["v_1", "v_2", "w_1"], [0, 1, 0], [0, 1, 1], "multiclass", 2, clusters=["v", "v", "w"], unit="video")
    assert right["clusters"] == ["v", "v", "w"] and right["unit"] == "video"
    wrong = right | {"clusters": ["v", "w", "w"]}
    assert item_record_differences(right, right) is None
    assert item_record_differences(wrong, right) == ("clusters differ on 1 of 3 items (first: id 'v_2', stored 'w', the "
                                                     "task's rule gives 'v')")
    plain = {k: v for k, v in right.items() if k not in ("clusters", "unit")}
    assert "resampling unit None stored, the task gives 'video'" in item_record_differences(plain, right)


def test_leaderboard_clusters_writes_the_shipped_keys_from_the_data(tmp_path):
    """The shipped MOSI entries with their keys removed get them back, read from the data."""
    import json
    import shutil

    from mmbench.board.clusters import write_clusters
    from tests._datapaths import REPO, real_data_root

    data = real_data_root()
    if not (data / "sentiment" / "mosi").is_dir():
        pytest.skip(f"MOSI data not found under {data}")
    shipped = REPO / "leaderboard" / "mosi"
    board = tmp_path / "board"
    (board / "mosi").mkdir(parents=True)
    for f in sorted(shipped.glob("*__seed0.json"))[:2]:
        d = json.loads(f.read_text())
        for k in ("clusters", "unit"):
            d["extra"]["test_items"].pop(k, None)
        (board / "mosi" / f.name).write_text(json.dumps(d, indent=2))
    lines = write_clusters(board, data)
    assert lines[0].startswith("mosi: 2 of 2 entries updated; 31 videos (") and "1 of 43 items" in lines[0]
    for f in (board / "mosi").glob("*.json"):
        got, want = (json.loads(p.read_text())["extra"]["test_items"] for p in (f, shipped / f.name))
        assert got["clusters"] == want["clusters"] and got["unit"] == want["unit"] == "video"
    assert write_clusters(board, data)[0].startswith("mosi: 0 of 2 entries updated")
