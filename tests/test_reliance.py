"""Modality reliance (mmbench.board.reliance) and the chance / majority reference points
(mmbench.evaluation.reference_points), against hand-worked games and independent computations."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import entropy
from sklearn.metrics import f1_score

from mmbench.board.reliance import absent_modalities, entry_reliance, equity, shapley_values, task_reliance
from mmbench.evaluation.reference_points import (chance_value, majority_value, reference_points, split_balance,
                                                 training_majority)

MODS = ("audio", "image", "text")


def _pattern_metrics(worth, players=MODS, metric="accuracy", chance=0.25, absent=()):
    """A result's metrics under every condition when v(S) = worth(S) above chance."""
    out = {}
    for k in range(1, len(players) + 1):
        for s in itertools.combinations(players, k):
            value = {metric: chance + worth(frozenset(s))}
            out["pattern:" + "+".join(sorted(set(s) | set(absent)))] = value
            if k == len(players):
                out["clean"] = value
            if k == len(players) - 1:
                out[f"drop:{next(iter(set(players) - set(s)))}"] = value
    return out


def test_shapley_of_an_additive_model_is_its_per_modality_parts():
    parts = {"audio": 0.05, "image": 0.30, "text": 0.12}
    metrics = _pattern_metrics(lambda s: sum(parts[m] for m in s))
    rel = entry_reliance(metrics, "accuracy", MODS, set(), 0.25, True)
    assert rel["shapley"] == pytest.approx(parts, abs=1e-12)
    # additive: removing one modality costs exactly its part, too
    assert rel["contribution"] == pytest.approx(parts, abs=1e-12)
    assert sum(rel["shapley"].values()) == pytest.approx(metrics["clean"]["accuracy"] - 0.25)


def test_efficiency_symmetry_and_null_player_with_interactions():
    # a synergy game: image and text only help together (XOR-like), audio changes nothing
    def worth(s):
        return 0.4 * ({"image", "text"} <= s) + 0.1 * ("image" in s)
    metrics = _pattern_metrics(worth)
    rel = entry_reliance(metrics, "accuracy", MODS, set(), 0.25, True)
    phi = rel["shapley"]
    assert sum(phi.values()) == pytest.approx(worth(frozenset(MODS)))  # efficiency: full - empty
    assert phi["audio"] == pytest.approx(0.0, abs=1e-12)  # null player
    assert phi["image"] == pytest.approx(0.2 + 0.1) and phi["text"] == pytest.approx(0.2)  # synergy split evenly
    # the contribution of text (drop it alone) is the whole synergy, not half of it
    assert rel["contribution"]["text"] == pytest.approx(0.4)


def test_shapley_by_the_permutation_definition():
    rng = np.random.default_rng(3)
    table = {frozenset(s): float(rng.random()) for k in range(1, 4) for s in itertools.combinations(MODS, k)}
    table[frozenset()] = 0.0
    phi = shapley_values(MODS, table.__getitem__)
    for m in MODS:  # mean marginal gain over the 3! orders
        gains = []
        for order in itertools.permutations(MODS):
            before = frozenset(order[: order.index(m)])
            gains.append(table[before | {m}] - table[before])
        assert phi[m] == pytest.approx(np.mean(gains))


def test_lower_is_better_metric_counts_a_smaller_error_as_worth():
    parts = {"audio": 0.2, "text": 0.5}
    chance = 2.0
    metrics = _pattern_metrics(lambda s: -sum(parts[m] for m in s), players=("audio", "text"), metric="mae", chance=chance)
    rel = entry_reliance(metrics, "mae", ("audio", "text"), set(), chance, False)
    assert rel["shapley"] == pytest.approx(parts) and rel["contribution"] == pytest.approx(parts)


def test_equity_is_pielou_evenness():
    assert equity({"a": 0.2, "b": 0.2, "c": 0.2}) == pytest.approx(1.0)
    assert equity({"a": 0.3, "b": 0.0}) == pytest.approx(0.0)
    assert equity({"a": 0.3, "b": -0.1}) == pytest.approx(0.0)  # a harmful modality carries no share
    p = np.array([0.1, 0.3, 0.05])
    assert equity(list(p)) == pytest.approx(entropy(p / p.sum()) / math.log(3))
    assert equity([0.4]) is None and equity([0.0, -0.1]) is None


def test_a_modality_no_item_has_is_not_a_player():
    """MOSI's vision: removing it changes nothing for any entry; its patterns are matched without it."""
    from mmbench.evaluation.results import make_result

    parts = {"audio": 0.02, "text": 0.3}
    players = ("audio", "text")
    results = []
    for name, scale in (("a", 1.0), ("b", 0.5)):
        metrics = _pattern_metrics(lambda s: scale * sum(parts[m] for m in s), players=players, metric="acc2_non0",
                                   chance=0.5, absent=("vision",))
        metrics["drop:vision"] = dict(metrics["clean"])
        results.append(make_result(task="t", name=name, kind="baseline", seed=0, primary_metric="acc2_non0",
                                   higher_is_better=True, metrics=metrics, dataset_fingerprint="x",
                                   hardware={}, created="2025-01-01T00:00:00+00:00"))
    assert absent_modalities(results) == {"vision"}
    rel = task_reliance(results, "acc2_non0", True, 0.5)
    assert rel["a"]["modalities"] == ["audio", "text"] and rel["a"]["absent"] == ["vision"]
    assert rel["a"]["shapley"] == pytest.approx(parts) and rel["b"]["shapley"] == pytest.approx({"audio": 0.01, "text": 0.15})
    assert rel["a"]["seeds"] == 1 and rel["a"]["std"]["equity"] == 0.0


# ------------------------------------------------------------------- chance and majority


def test_chance_of_a_uniform_guess():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    assert chance_value("multiclass", "accuracy", y, 5) == pytest.approx(0.2)
    # macro F1 of the expected confusion matrix: each true class spread evenly over the 5 guesses
    cm_f1 = f1_score(np.repeat(y, 5), np.tile(np.arange(5), len(y)), average="macro")
    assert chance_value("multiclass", "f1_macro", y, 5) == pytest.approx(cm_f1)
    # and close to the mean F1 of many random guesses (the difference is O(1/n))
    draws = [f1_score(y, rng.integers(0, 5, len(y)), average="macro") for _ in range(400)]
    assert chance_value("multiclass", "f1_macro", y, 5) == pytest.approx(np.mean(draws), abs=0.01)
    t = rng.uniform(-3, 3, 500)
    assert chance_value("regression", "acc2_non0", t) == pytest.approx(0.5)
    assert chance_value("regression", "acc7", t) == pytest.approx(1 / 7)
    assert chance_value("regression", "corr", t) == 0.0
    # E|y - U|, U uniform on [-3, 3], by numerical integration
    u = np.linspace(-3, 3, 200_001)
    expected = np.mean([np.trapezoid(np.abs(v - u), u) / 6 for v in t[:50]])
    assert chance_value("regression", "mae", t[:50], value_range=(-3, 3)) == pytest.approx(expected, rel=1e-6)
    assert chance_value("regression", "mae", t) is None  # no range: no uniform guess


def test_majority_is_the_training_majority_scored_on_test_mosi_like():
    """Training mostly positive, test 57.8% negative: the majority baseline scores 0.422 on Acc-2."""
    train = np.r_[np.full(708, 1.4), np.full(576, -1.2)]
    test = np.r_[np.full(396, -0.8), np.full(289, 2.0), [0.0]]
    maj = training_majority("regression", train, ["acc2_non0", "acc2_has0", "mae"])
    assert maj["constant"]["acc2_non0"] == 1.0 and maj["share"]["acc2_non0"] == pytest.approx(708 / 1284)
    assert majority_value("regression", "acc2_non0", test, maj) == pytest.approx(289 / 685)
    assert majority_value("regression", "mae", test, maj) == pytest.approx(np.mean(np.abs(test - 1.4)))
    assert split_balance("regression", "acc2_non0", test) == ("negative", pytest.approx(396 / 685))
    y = np.array([0, 0, 1, 2, 2, 2])
    maj = training_majority("multiclass", y, ["accuracy"])
    assert maj["constant"]["accuracy"] == 2.0
    assert majority_value("multiclass", "accuracy", np.array([0, 2, 1, 1]), maj, 3) == pytest.approx(0.25)


def test_reference_points_are_read_from_the_entries_alone():
    from mmbench.evaluation.results import make_result
    from mmbench.evaluation.significance import item_record

    y = np.array([0, 1, 1, 1, 2, 0, 1, 2])
    r = make_result(task="t", name="a", kind="baseline", seed=0, primary_metric="accuracy", higher_is_better=True,
                    metrics={"clean": {"accuracy": 0.5}}, dataset_fingerprint="x", hardware={},
                    created="2025-01-01T00:00:00+00:00",
                    extra={"test_items": item_record([str(i) for i in range(8)], y, y, "multiclass", 3),
                           "training_majority": training_majority("multiclass", [2, 2, 1], ["accuracy"])})
    points = reference_points([r], "accuracy")
    assert points.chance == pytest.approx(1 / 3) and points.majority == pytest.approx(2 / 8)
    assert points.test_class == "class 1" and points.test_share == pytest.approx(0.5)
    note = points.note()
    assert "chance (a uniform guess): accuracy 0.333" in note and "accuracy 0.250" in note and "50.0% class 1" in note
    json.dumps(points.to_json())


def test_leaderboard_majority_stores_the_training_majority(tmp_path):
    """`leaderboard majority` reads each task's training labels and stores the majority in its
    entries, leaving entries of other data alone; a missing folder is one clear error."""
    import shutil

    from typer.testing import CliRunner

    from mmbench.board.entries import read_entry
    from mmbench.cli import app
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.submissions.tables import load_test_labels

    src = sorted((Path(__file__).parents[1] / "leaderboard" / "synthetic-synergy").glob("add__seed*.json"))
    (tmp_path / "synthetic-synergy").mkdir()
    for i, f in enumerate(src[:2]):
        data = json.loads(f.read_text())
        data["extra"].pop("training_majority", None)
        if i == 1:
            data["dataset_fingerprint"] = "other"
        (tmp_path / "synthetic-synergy" / f.name).write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["leaderboard", "majority", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "synthetic-synergy: training majority stored in 1 of 2 entries (1 scored on other data: unchanged)" in result.output
    spec = get_task("synthetic-synergy")
    labels = load_test_labels(spec, role="train")
    first, second = (read_entry(tmp_path / "synthetic-synergy" / f.name) for f in src[:2])
    expected = training_majority("multiclass", labels.targets, [m.name for m in spec.metrics])
    assert first.extra["training_majority"] == json.loads(json.dumps(expected)) and first.version == 1
    assert "training_majority" not in second.extra
    # the value the board shows: the training majority class scored on the stored test targets
    y = np.asarray(first.extra["test_items"]["targets"])
    assert reference_points([first], "accuracy").majority == pytest.approx(np.mean(y == expected["constant"]["accuracy"]))
    bad = CliRunner().invoke(app, ["leaderboard", "majority", "--dir", str(tmp_path / "nope")])
    assert bad.exit_code == 1 and "leaderboard folder not found" in str(bad.exception)


def test_conditions_evaluated_once_under_another_name_and_named_absent_modalities():
    """Masks protocol 2: AV-MNIST's pattern:audio is evaluated once, as drop:image
    (extra.condition_aliases); MOSI's vision is named absent (extra.absent_modalities)."""
    from mmbench.evaluation.results import make_result

    parts = {"audio": 0.1, "image": 0.4}
    metrics = _pattern_metrics(lambda s: sum(parts[m] for m in s), players=("audio", "image"), chance=0.1)
    kept = {c: v for c, v in metrics.items() if not c.startswith("pattern:")}
    aliases = {"pattern:audio": "drop:image", "pattern:image": "drop:audio", "pattern:audio+image": "clean"}
    r = make_result(task="t", name="a", kind="baseline", seed=0, primary_metric="accuracy", higher_is_better=True,
                    metrics=kept, dataset_fingerprint="x", hardware={}, created="2025-01-01T00:00:00+00:00",
                    extra={"condition_aliases": aliases, "absent_modalities": ["vision"]})
    rel = task_reliance([r], "accuracy", True, 0.1)["a"]
    assert rel["shapley"] == pytest.approx(parts) and rel["absent"] == ["vision"]
    assert rel["modalities"] == ["audio", "image"]
