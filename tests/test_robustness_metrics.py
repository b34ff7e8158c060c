"""MultiBench's relative and effective robustness (mmbench.board.robustness) on hand-worked
curves, and as `rank` carries them (mean and std over seeds; `leaderboard --format json`)."""

from __future__ import annotations

import json
import math

import pytest

from mmbench.board.entries import rank, render
from mmbench.board.robustness import effective_robustness, relative_robustness
from mmbench.evaluation.results import make_result

HW = {"platform": "Linux", "python": "3.11", "cpu": "x86_64", "cpu_count": 2, "torch": "2", "device": "cpu"}

# an entry's curve and the late-fusion reference, worked by hand below
CURVE = {0.0: 0.8, 0.1: 0.7, 0.3: 0.5, 0.9: 0.2}
LATE = {0.0: 0.9, 0.1: 0.85, 0.3: 0.6, 0.9: 0.3}


def test_relative_robustness_hand_worked():
    # trapezoids: 0.1*(0.8+0.7)/2 = 0.075, 0.2*(0.7+0.5)/2 = 0.12, 0.6*(0.5+0.2)/2 = 0.21;
    # area 0.405 over the rate range 0.9
    assert relative_robustness(CURVE) == pytest.approx(0.405 / 0.9)
    # MultiBench's helper on levels 0, 0.1, 0.2 (sum of (f_i + f_{i+1}) * 0.1 / 2) is our value times the range
    even = {0.0: 0.9, 0.1: 0.6, 0.2: 0.5}
    multibench_area = sum((a + b) * 0.1 / 2 for a, b in zip([0.9, 0.6], [0.6, 0.5]))
    assert relative_robustness(even) * 0.2 == pytest.approx(multibench_area)
    assert relative_robustness({0.0: 0.8}) is None and relative_robustness({0.1: 0.8, 0.3: 0.5}) is None


def test_effective_robustness_hand_worked():
    # shifted reference lf + f(0) - lf(0) = lf - 0.1: 0.8, 0.75, 0.5, 0.2; f minus it: 0, -0.05, 0, 0;
    # trapezoids 0.1*(0-0.05)/2 + 0.2*(-0.05+0)/2 = -0.0075 over the range 0.9
    assert effective_robustness(CURVE, LATE) == pytest.approx(-0.0075 / 0.9)
    assert effective_robustness(LATE, LATE) == pytest.approx(0.0)
    # a flat curve at chance loses nothing: its effective robustness is late fusion's mean loss
    flat = {x: 0.1 for x in LATE}
    assert effective_robustness(flat, LATE) > 0
    assert effective_robustness(CURVE, {0.1: 0.5, 0.3: 0.4}) is None  # no common clean value


def _result(name: str, seed: int, curve: dict[float, float]):
    metrics = {("clean" if x == 0 else f"rate:{x:g}"): {"accuracy": v} for x, v in curve.items()}
    return make_result(task="t", name=name, kind="baseline", fusion=name, seed=seed, primary_metric="accuracy",
                       higher_is_better=True, metrics=metrics, robustness={}, dataset_fingerprint="ab" * 32,
                       hardware=HW, created="2025-01-01T00:00:00+00:00")


def test_rank_rows_and_json_carry_both_with_their_spread():
    shift = {0: 0.0, 1: 0.02}
    entries = [_result("late", s, {x: v + shift[s] for x, v in LATE.items()}) for s in (0, 1)]
    entries += [_result("concat", s, {x: v - shift[s] for x, v in CURVE.items()}) for s in (0, 1)]
    rows = {r["name"]: r for r in rank(entries, significance=False)}
    late_mean = {x: v + 0.01 for x, v in LATE.items()}
    per_seed = [relative_robustness({x: v - shift[s] for x, v in CURVE.items()}) for s in (0, 1)]
    assert rows["concat"]["relative_robustness"] == pytest.approx(sum(per_seed) / 2)
    assert rows["concat"]["relative_robustness_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / math.sqrt(2))
    eff = [effective_robustness({x: v - shift[s] for x, v in CURVE.items()}, late_mean) for s in (0, 1)]
    assert rows["concat"]["effective_robustness"] == pytest.approx(sum(eff) / 2)
    # a constant shift of the whole curve leaves effective robustness unchanged: no spread
    assert rows["concat"]["effective_robustness_std"] == pytest.approx(0.0, abs=1e-12)
    assert rows["late"]["effective_robustness"] == pytest.approx(0.0, abs=1e-12)
    out = {r["name"]: r for r in json.loads(render(list(rows.values()), "json"))}
    for key in ("relative_robustness", "effective_robustness", "relative_robustness_std", "effective_robustness_std"):
        assert out["concat"][key] == pytest.approx(rows["concat"][key])


def test_without_a_late_entry_effective_robustness_is_none():
    rows = rank([_result("concat", 0, CURVE)], significance=False)
    assert rows[0]["effective_robustness"] is None and rows[0]["effective_robustness_std"] is None
    assert rows[0]["relative_robustness"] == pytest.approx(0.45)
