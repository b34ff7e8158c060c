"""The main job end to end on a tiny setting: reproduce -> result JSONs -> leaderboard entries -> table."""

import json
import os
import re

import pytest

from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.board.entries import load_entries



def test_reproduce_quick_suite_end_to_end(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    args = ["reproduce", "--suite", "quick", "--seeds", "0", "--seeds", "1", "--no-progress",
            "--set", "epochs=2", "--set", "dataset_options.n_samples=300", "--set", "embed_dim=8", "--set", "hidden_dim=16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    entries = load_entries(tmp_path / "runs" / "leaderboard")  # OUT/leaderboard by default
    tasks = {"synthetic-redundant", "synthetic-unique", "synthetic-synergy"}
    fusions = {"concat", "add", "attention", "gnn"}
    assert {(e.task, e.name, e.seed) for e in entries} == {(t, f, s) for t in tasks for f in fusions for s in (0, 1)}
    for e in entries:
        # an imbalanced-rate (IMR) condition is covered; the patterns equal clean and the drops (evaluated once)
        assert set(e.metrics) >= {"clean", "drop:m0", "drop:m1", "rate:0.5", "rate:m0=0.4,m1=0.1", "rate:m0=0.1,m1=0.4"}
        assert e.extra["condition_aliases"]["pattern:m0"] == "drop:m1" and e.extra["masks_protocol"] == 2
        assert 0.0 <= e.metrics["clean"]["accuracy"] <= 1.0
        assert e.efficiency["params"] > 0 and "auc_rate" in e.robustness
        assert e.protocol == "synthetic" and e.test_set_fingerprint.startswith("ts1-")  # which test set it was scored on
        run = tmp_path / "runs" / e.task / e.name / f"seed{e.seed}"
        assert json.loads((run / "result.json").read_text())["metrics"] == e.metrics
        # the test predictions of every condition travel with the entry (leaderboard verify)
        stored = tmp_path / "runs" / "leaderboard" / e.predictions_file
        assert stored.read_bytes() == (run / "predictions.parquet").read_bytes()
    out = result.output
    assert "synthetic-synergy: accuracy" in out and "± " in out  # mean ± std over the two seeds
    for f in fusions:
        assert f in out
    assert "drop:m0" in out and "rate:0.9" in out
    assert "reference check" in out
    # the report of the grid, with the same checks per task
    report = (tmp_path / "runs" / "report.html").read_text()
    assert "Reference check" in report and "wrote runs/report.html" in out
    verdict_cells = re.findall(r">(reproduces|DIFFERS)</td>", report)
    assert sorted(verdict_cells) == sorted(re.findall(r"(reproduces|DIFFERS)$", out, flags=re.M))
    for task in ("synthetic-redundant", "synthetic-unique", "synthetic-synergy"):
        assert f"reference-{task}" in report


def test_reference_check_finds_unimodal_rows_by_result_name():
    from mmbench.reproduce import check_against_reference, load_reference

    reference = load_reference()
    ref = reference["results"]["avmnist"]["unimodal-audio"]["accuracy"]
    check = check_against_reference("avmnist", "unimodal:audio", "accuracy", [ref["mean"]] * 5, reference)
    assert check.reference == ref["mean"] and check.ok
    far = check_against_reference("mosi", "unimodal:text", "acc2_non0", [0.0] * 5, reference)
    assert far.reference is not None and not far.ok
    assert check_against_reference("mosi", "unimodal:vision", "acc2_non0", [0.5], reference).reference is None


def test_reference_of_another_construction_is_not_compared(tmp_path):
    """AV-MNIST's reference was measured on the task's construction (MNIST-scale pairing at
    the calibrated defaults; baselines/reference.json records its dataset fingerprint): a run
    on that data is compared, a run on another construction (one pair per recording) gets
    "no reference for this construction"."""
    from mmbench.data.datasets.avmnist import AVMNISTDataset
    from mmbench.reproduce import check_against_reference, load_reference, merge_reference, reference_from_results
    from mmbench.data.tasks import get_task

    reference = load_reference()
    options = get_task("avmnist").dataset.options
    current = AVMNISTDataset(None, **options).fingerprint()
    other_data = AVMNISTDataset(None, **{**options, "pairing": "recording", "image_pca_remove": 175}).fingerprint()
    assert reference["dataset_fingerprints"]["avmnist"] == current != other_data
    mean = reference["results"]["avmnist"]["add"]["accuracy"]["mean"]
    same = check_against_reference("avmnist", "add", "accuracy", [mean] * 5, reference, current)
    assert same.ok is True and same.verdict == "reproduces"
    other = check_against_reference("avmnist", "add", "accuracy", [mean] * 5, reference, other_data)
    assert other.ok is None and other.reference is None and other.verdict == "no reference for this construction"
    # tasks without a recorded fingerprint are compared as before
    mosi = reference["results"]["mosi"]["add"]["acc2_non0"]["mean"]
    assert check_against_reference("mosi", "add", "acc2_non0", [mosi] * 5, reference, "anything").ok is True
    # re-measuring on other data replaces the task's figures and records the new fingerprint
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(reference))
    new = other_data

    class R:  # the fields reference_from_results reads
        def __init__(self, name, acc):
            self.task, self.name, self.dataset_fingerprint, self.metrics = "avmnist", name, new, {"clean": {"accuracy": acc}}

    merged = merge_reference(path, reference_from_results([R("add", 0.6), R("add", 0.62)], "cpu"))
    assert merged["dataset_fingerprints"]["avmnist"] == new and set(merged["results"]["avmnist"]) == {"add"}
    assert merged["results"]["avmnist"]["add"]["accuracy"]["mean"] == pytest.approx(0.61)
    assert merged["results"]["mosi"] == reference["results"]["mosi"]


def test_reference_band_is_three_standard_errors_of_the_difference():
    from mmbench.reproduce import tolerance

    # hand-worked: pooled sd sqrt((4 * 0.02^2 + 4 * 0.04^2) / 8) = 0.031623; x sqrt(1/5 + 1/5) = 0.02
    assert tolerance(0.02, 5, 0.04, 5) == pytest.approx(0.06)
    # one new seed: the reference's spread, and the reference mean's own uncertainty
    assert tolerance(0.02, 5, None, 1) == pytest.approx(3 * 0.02 * (1 / 5 + 1) ** 0.5)
    assert tolerance(0.0, 5, 0.0, 5) == 0.01  # floor: one point


def test_reference_check_agrees_with_a_two_sample_t_test():
    # the verdict is "reproduces" exactly when Student's two-sample t (scipy, equal variances)
    # is at most 3 in absolute value
    import numpy as np
    from scipy.stats import ttest_ind

    from mmbench.reproduce import check_against_reference

    rng = np.random.default_rng(0)
    verdicts = set()
    for trial in range(200):
        ref_seeds = rng.normal(0.8, 0.03, 5)
        new_seeds = rng.normal(0.8 + rng.uniform(-0.08, 0.08), rng.uniform(0.01, 0.06), int(rng.integers(2, 8)))
        reference = {"results": {"t": {"f": {"acc": {"mean": float(ref_seeds.mean()), "std": float(ref_seeds.std(ddof=1)),
                                                     "n": 5}}}}}
        check = check_against_reference("t", "f", "acc", list(new_seeds), reference)
        t = ttest_ind(new_seeds, ref_seeds, equal_var=True).statistic
        assert check.ok == (abs(t) <= 3 + 1e-9), trial
        verdicts.add(check.ok)
    assert verdicts == {True, False}


def test_reproduce_vectorised_writes_the_same_runs(tmp_path, monkeypatch, one_thread):
    # the GPU default (seeds vmapped together), forced on the CPU: same files, entries and
    # checks as one by one; with every dropout at 0 the same metrics up to float rounding
    monkeypatch.chdir(tmp_path)
    base = ["reproduce", "--suite", "quick", "--tasks", "synthetic-unique", "--fusions", "concat", "--fusions", "gnn",
            "--seeds", "0", "--seeds", "3", "--no-progress", "--set", "epochs=2", "--set", "dataset_options.n_samples=300",
            "--set", "embed_dim=8", "--set", "hidden_dim=16", "--set", "dropout=0", "--set", "fusion_options.dropout=0",
            "--set", "encoders.m0.dropout=0", "--set", "encoders.m1.dropout=0"]
    metrics = {}
    for mode in ("--vectorize", "--one-by-one"):
        result = CliRunner().invoke(app, base + [mode, "--out", f"runs{mode}", "--leaderboard", f"board{mode}"])
        assert result.exit_code == 0, result.output
        assert result.output.count("band ±") == 4  # one check per fusion and metric (accuracy, f1_macro)
        for e in load_entries(tmp_path / f"board{mode}"):
            run = tmp_path / f"runs{mode}" / e.task / e.name / f"seed{e.seed}"
            for name in ("config.json", "log.jsonl", "best.safetensors", "metrics.json", "result.json"):
                assert (run / name).exists(), (mode, name)
            metrics.setdefault((e.name, e.seed), []).append(e.metrics)
    assert len(metrics) == 4
    for (fusion, seed), (vec, one) in metrics.items():
        assert vec.keys() == one.keys()
        for condition in vec:
            assert vec[condition]["accuracy"] == pytest.approx(one[condition]["accuracy"], abs=1e-9), (fusion, seed, condition)


def test_reproduce_keeps_finished_runs(tmp_path, monkeypatch, one_thread):
    # an interrupted grid goes on where it stopped: runs that finished with the same config and
    # data are kept, the rest trained; a changed config or --no-resume trains again
    import mmbench.training.multiseed as multiseed
    from mmbench.reproduce import run_grid

    over = {"epochs": 1, "dataset_options": {"n_samples": 200}, "embed_dim": 8, "hidden_dim": 8}
    args = dict(tasks=["synthetic-unique"], fusions=["concat"], seeds=[0, 1, 2], out_dir=tmp_path / "runs",
                leaderboard_dir=tmp_path / "lb", progress=False, log=lambda m: None, vectorize=True)
    first, _ = run_grid(overrides=over, **args)
    trained: list[list[int]] = []
    real = multiseed.train_seeds

    def spy(cfg, seeds, **kw):
        trained.append(list(seeds))
        return real(cfg, seeds, **kw)

    monkeypatch.setattr(multiseed, "train_seeds", spy)
    again, checks = run_grid(overrides=over, **args)
    assert trained == [] and [r.model_dump() for r in again] == [r.model_dump() for r in first]
    assert len(checks) == 2
    entry = tmp_path / "lb" / "synthetic-unique"
    assert not (entry / "history").exists()  # the kept runs' entries are not re-versioned

    runs = tmp_path / "runs" / "synthetic-unique" / "concat"
    (runs / "seed1" / "result.json").unlink()  # cut before evaluation
    config = runs / "seed2" / "config.json"  # a later run of seed 2 started (and was cut): its result is stale
    os.utime(config, ns=(config.stat().st_atime_ns, (runs / "seed2" / "result.json").stat().st_mtime_ns + 1))
    again, _ = run_grid(overrides=over, **args)
    assert trained == [[1, 2]] and [r.seed for r in again] == [0, 1, 2]
    run_grid(overrides=over | {"lr": 0.01}, **args)  # another config: everything again
    assert trained[-1] == [0, 1, 2]
    run_grid(overrides=over | {"lr": 0.01}, resume=False, **args)
    assert trained[-1] == [0, 1, 2]


def test_a_failing_row_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch, capsys, one_thread):
    # the H200 run of 2026-12-04 stopped the whole grid at attention's first failure; now the
    # row is recorded with its one-line error (table, report), the others run, and the exit is 1
    import mmbench.training.multiseed as multiseed
    from tests._cli import run_main

    real = multiseed.train_seeds

    def fails_for_attention(cfg, seeds, **kw):
        if cfg.fusion == "attention":
            raise RuntimeError("LSE is not correctly aligned (strideH)\nException raised from ... (most recent call first)")
        return real(cfg, seeds, **kw)

    monkeypatch.setattr(multiseed, "train_seeds", fails_for_attention)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_main(["reproduce", "--suite", "quick", "--tasks", "synthetic-unique", "--fusions", "concat",
                             "--fusions", "attention", "--fusions", "add", "--seeds", "0", "--no-progress",
                             "--set", "epochs=1", "--set", "dataset_options.n_samples=200", "--set", "embed_dim=8",
                             "--set", "hidden_dim=8"], monkeypatch, capsys)
    assert rc == 1, out + err
    error = "RuntimeError: LSE is not correctly aligned (strideH)"
    assert f"attention FAILED: {error}" in out
    # entries go to OUT/leaderboard by default: a run from a clone never rewrites the shipped ./leaderboard
    assert {(e.name, e.seed) for e in load_entries(tmp_path / "runs" / "leaderboard")} == {("concat", 0), ("add", 0)}
    assert not (tmp_path / "leaderboard").exists()
    assert out.index("attention FAILED") < out.index("add seed 0")  # the row after the failure still ran
    failed_rows = [line for line in out.splitlines() if line.strip().startswith("synthetic-unique       attention")]
    assert len(failed_rows) == 2 and all(line.endswith(f"FAILED: {error}") for line in failed_rows)  # 2 metrics
    assert "error: 1 of 3 (task, fusion) rows failed" in err and f"failed: synthetic-unique attention: {error}" in err
    assert "Exception raised from" not in out + err  # one line per failure
    report = (tmp_path / "runs" / "report.html").read_text()
    assert f"FAILED: {error}" in report and re.search(r">(reproduces|DIFFERS)</td>", report)
    assert f"Failed (task, fusion) rows, without results: synthetic-unique attention: {error}." in report
