"""The train/test mismatch suite (`reproduce --suite mismatch`): the p_train x p_test matrix and
its tests on constructed entries, and the whole suite end to end at tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmbench.board.entries import load_entries, write_entry
from mmbench.board.mismatch import mismatch_matrices, mismatch_name, parse_name
from mmbench.board.publish import predictions_parquet
from mmbench.evaluation.results import make_result
from mmbench.evaluation.significance import item_record

N = 300
RATES = (0.0, 0.3, 0.6, 0.9)
Y = np.random.default_rng(0).integers(0, 2, N)
IDS = [f"i{i:03d}" for i in range(N)]


def _preds(acc: float, rng) -> np.ndarray:
    return np.where(rng.random(N) < acc, Y, 1 - Y)


def _entries(board: Path, curves: dict[float, dict[float, float]], seeds=(0, 1, 2)) -> None:
    """One entry per (p_train, seed): accuracy curve[p_test] at each test rate."""
    for p, curve in curves.items():
        for seed in seeds:
            rng = np.random.default_rng([seed, int(p * 10)])
            preds = {("clean" if x == 0 else f"rate:{x:g}"): _preds(a, rng) for x, a in curve.items()}
            name = mismatch_name("concat", p)
            rel = f"toy/predictions/{name}__seed{seed}.parquet"
            (board / rel).parent.mkdir(parents=True, exist_ok=True)
            (board / rel).write_bytes(predictions_parquet(IDS, preds))
            write_entry(board, make_result(
                task="toy", name=name, kind="baseline", fusion="concat", seed=seed, primary_metric="accuracy",
                higher_is_better=True, metrics={c: {"accuracy": float(np.mean(v == Y))} for c, v in preds.items()},
                dataset_fingerprint="ab", hardware={}, created="2025-01-01T00:00:00+00:00", predictions_file=rel,
                extra={"test_items": item_record(IDS, Y, preds["clean"], "multiclass", 2)}))


def test_names_round_trip():
    assert parse_name(mismatch_name("unimodal:text", 0.3)) == ("unimodal-text", 0.3)
    assert parse_name("concat") is None


def test_a_model_beyond_its_training_dropout_falls_below_and_an_equal_one_does_not(tmp_path):
    # trained without dropout: collapses as inputs go missing; trained at 0.5: holds up to 0.6
    _entries(tmp_path, {0.0: {0.0: 0.9, 0.3: 0.7, 0.6: 0.55, 0.9: 0.5},
                        0.5: {0.0: 0.9, 0.3: 0.85, 0.6: 0.8, 0.9: 0.6}})
    (fm,) = mismatch_matrices(load_entries(tmp_path), tmp_path, n_resamples=500)
    assert fm.p_trains == [0.0, 0.5] and fm.p_tests == list(RATES)
    # the cells tested: p_train 0 at every test rate above 0
    assert sorted(t.p_test for t in fm.tests) == [0.3, 0.6, 0.9]
    by = {t.p_test: t for t in fm.tests}
    assert by[0.6].below and by[0.9].below and by[0.3].below
    entries = [e for e in load_entries(tmp_path) if e.name == "concat-pdrop0"]
    assert fm.mean[(0.0, 0.6)] == pytest.approx(np.mean([e.metrics["rate:0.6"]["accuracy"] for e in entries]))
    assert by[0.6].diff == pytest.approx(fm.mean[(0.5, 0.6)] - fm.mean[(0.0, 0.6)])
    assert all(t.p_holm >= t.p for t in fm.tests) and "3 of 3 cells" in fm.finding()
    # the verdicts do not hang on the resampling seed (normal-theory p from the bootstrap variance)
    for seed in (1, 2):
        (again,) = mismatch_matrices(load_entries(tmp_path), tmp_path, n_resamples=500, seed=seed)
        assert [t.below for t in again.tests] == [t.below for t in fm.tests]
        assert [t.p for t in again.tests] == pytest.approx([t.p for t in fm.tests], abs=1e-6)


def test_no_difference_gives_no_verdict(tmp_path):
    same = {0.0: 0.8, 0.3: 0.75, 0.6: 0.7, 0.9: 0.6}
    _entries(tmp_path, {0.0: same, 0.3: same, 0.7: same})
    (fm,) = mismatch_matrices(load_entries(tmp_path), tmp_path, n_resamples=500)
    # pairs (0, 0.3) and (0, 0.7) at 0.3, 0.6, 0.9; (0.3, 0.7) at 0.6, 0.9
    assert len(fm.tests) == 8 and not any(t.below for t in fm.tests)
    report = json.loads(json.dumps(fm.to_json()))
    assert len(report["mean"]) == 3 and len(report["mean"][0]) == 4



def test_the_mismatch_suite_at_tiny_size(tmp_path, monkeypatch, one_thread):
    from mmbench.cli import app
    from mmbench.reproduce import load_suite

    suite = load_suite("mismatch")
    assert suite["modality_dropout"] == [0.0, 0.3, 0.5, 0.7] and len(suite["test_rates"]) == 10
    assert {"mosi", "synthetic-redundant", "synthetic-unique", "synthetic-synergy"} <= set(suite["tasks"])
    assert len(suite["seeds"]) == 3
    monkeypatch.chdir(tmp_path)
    args = ["reproduce", "--suite", "mismatch", "--tasks", "synthetic-synergy", "--fusions", "concat", "--seeds", "0",
            "--seeds", "1", "--no-progress", "--set", "epochs=1", "--set", "dataset_options.n_samples=200",
            "--set", "embed_dim=8", "--set", "hidden_dim=16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    entries = load_entries(tmp_path / "runs" / "leaderboard")
    assert {(e.name, e.seed) for e in entries} == {(f"concat-pdrop{p:g}", s) for p in (0, 0.3, 0.5, 0.7) for s in (0, 1)}
    for e in entries:
        assert set(e.metrics) == {"clean"} | {f"rate:{r / 10:g}" for r in range(1, 10)}
        assert "training_majority" in e.extra
    configs = {json.loads((tmp_path / "runs" / "synthetic-synergy" / e.name / f"seed{e.seed}" / "config.json").read_text())
               ["train"]["modality_dropout"] for e in entries}
    assert configs == {0.0, 0.3, 0.5, 0.7}  # each row trained with its own dropout
    matrix = json.loads((tmp_path / "runs" / "mismatch.json").read_text())[0]
    assert matrix["p_train"] == [0.0, 0.3, 0.5, 0.7] and len(matrix["p_test"]) == 10
    assert len(matrix["tests"]) == 9 * 3 + 6 * 2 + 4  # every higher p_train, at every test rate above p_train
    report = (tmp_path / "runs" / "mismatch.md").read_text()
    assert "| p_train \\ p_test |" in report and "Holm" in report
    assert "concat: at test rates above its p_train" in result.output
    assert "concat-pdrop0.3" in result.output and "reference check" in result.output  # one check per (fusion, dropout)
