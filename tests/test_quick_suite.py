"""The main job end to end on a tiny setting: reproduce -> result JSONs -> leaderboard entries -> table."""

import json

import pytest
import torch

from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.leaderboard import load_entries


@pytest.fixture
def one_thread():
    """Tiny models: thread start-up costs more than it saves on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_reproduce_quick_suite_end_to_end(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    args = ["reproduce", "--suite", "quick", "--seeds", "0", "--seeds", "1", "--no-progress",
            "--set", "epochs=2", "--set", "dataset_options.n_samples=300", "--set", "embed_dim=8", "--set", "hidden_dim=16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    entries = load_entries(tmp_path / "leaderboard")
    tasks = {"synthetic-redundant", "synthetic-unique", "synthetic-synergy"}
    fusions = {"concat", "add", "attention", "gnn"}
    assert {(e.task, e.name, e.seed) for e in entries} == {(t, f, s) for t in tasks for f in fusions for s in (0, 1)}
    for e in entries:
        assert set(e.metrics) >= {"clean", "drop:m0", "drop:m1", "rate:0.5", "pattern:m0"}
        assert 0.0 <= e.metrics["clean"]["accuracy"] <= 1.0
        assert e.efficiency["params"] > 0 and "auc_rate" in e.robustness
        run = tmp_path / "runs" / e.task / e.name / f"seed{e.seed}"
        assert json.loads((run / "result.json").read_text())["metrics"] == e.metrics
    out = result.output
    assert "synthetic-synergy: accuracy" in out and "± " in out  # mean ± std over the two seeds
    for f in fusions:
        assert f in out
    assert "drop:m0" in out and "rate:0.9" in out
    assert "reference check" in out


def test_reference_check_finds_unimodal_rows_by_result_name():
    from mmbench.reproduce import check_against_reference, load_reference

    reference = load_reference()
    ref = reference["results"]["avmnist"]["unimodal-audio"]["accuracy"]
    check = check_against_reference("avmnist", "unimodal:audio", "accuracy", [ref["mean"]] * 5, reference)
    assert check.reference == ref["mean"] and check.ok
    far = check_against_reference("mosi", "unimodal:text", "acc2_non0", [0.0] * 5, reference)
    assert far.reference is not None and not far.ok
    assert check_against_reference("mosi", "unimodal:vision", "acc2_non0", [0.5], reference).reference is None
