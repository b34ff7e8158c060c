"""`reproduce --executor ray`: the same numbers as the local executor, run for run; a worker
that dies is retried (bounded), then recorded as failed while the grid goes on; a killed
driver resumes without training a finished run again; no Ray process outlives a test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from tests._ray import TINY, env_for_ray, processes_named, start_mmbench, stop_session, wait_session_gone

pytest.importorskip("ray")

QUICK_TINY = {"epochs": 2, "dataset_options": {"n_samples": 300}, "embed_dim": 8, "hidden_dim": 16}


def _runs(out):
    """{(task, name, seed): (clean metrics, predictions bytes)} of every finished run under `out`."""
    found = {}
    for path in sorted(out.glob("*/*/seed*/result.json")):
        result = json.loads(path.read_text())
        found[(result["task"], result["name"], result["seed"])] = (result["metrics"],
                                                                   (path.parent / "predictions.parquet").read_bytes())
    return found


def test_without_ray_the_error_is_one_line_naming_the_extra(monkeypatch, capsys, tmp_path):
    from tests._cli import run_main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_main(["reproduce", "--tasks", "synthetic-unique", "--fusions", "concat", "--seeds", "0",
                             "--executor", "ray", *TINY], monkeypatch, capsys)
    assert rc == 1
    assert err.strip().count("\n") == 0 and '".[cluster]"' in err, err
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    rc, out, err = run_main(["reproduce", "--executor", "dask"], monkeypatch, capsys)
    assert rc == 1 and "unknown executor 'dask'; known: local, ray" in err


@pytest.mark.timeout(900)
def test_ray_grid_gives_the_local_numbers_run_for_run(tmp_path, monkeypatch, one_thread):
    """The quick suite at tiny size, one seed: every run's metrics under every condition and its
    stored predictions are identical (CPU, one thread per run) with 2 Ray workers and locally."""
    from mmbench.reproduce import load_suite, run_grid
    from mmbench.reproduce.executors import RayExecutor

    monkeypatch.setenv("PYTHONPATH", env_for_ray()["PYTHONPATH"])  # the local instance's workers import this checkout
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    suite = load_suite("quick")
    args = dict(tasks=suite["tasks"], fusions=suite["fusions"], seeds=[0], leaderboard_dir=None, progress=False,
                overrides=QUICK_TINY, log=lambda _: None)
    local_results, local_checks = run_grid(out_dir=tmp_path / "local", **args)
    lines: list[str] = []
    ray_results, ray_checks = run_grid(out_dir=tmp_path / "ray", executor=RayExecutor(workers=2, log=lines.append),
                                       threads=1, **args)
    assert "a local Ray instance (2 workers)" in lines[0]
    local, on_ray = _runs(tmp_path / "local"), _runs(tmp_path / "ray")
    assert len(local) == 3 * 4 and set(on_ray) == set(local)
    for key in local:
        assert on_ray[key][0] == local[key][0], key  # every metric of every condition, exactly
        assert on_ray[key][1] == local[key][1], key  # the stored per-item predictions, byte for byte
    assert [(r.task, r.name, r.seed) for r in ray_results] == [(r.task, r.name, r.seed) for r in local_results]
    assert [(c.task, c.fusion, c.metric, c.mean) for c in ray_checks] == [(c.task, c.fusion, c.metric, c.mean)
                                                                          for c in local_checks]
    import ray

    assert not ray.is_initialized()  # the local instance this grid started is shut down


LONG = ["--set", "epochs=60", "--set", "patience=1000"]  # a few seconds a run: long enough to be killed mid-way


def _long_args(out, *extra):
    return ["reproduce", "--tasks", "synthetic-unique", "--out", out, *TINY, *LONG, "--executor", "ray",
            "--workers", "2", *extra]


@pytest.mark.timeout(900)
def test_a_dying_worker_is_retried_then_recorded_as_failed(tmp_path, one_thread):
    """--max-retries 1: concat seed 0's worker is SIGKILLed once (the retry resumes from its last
    checkpoint and ends with the numbers of an uninterrupted run); add seed 0's worker is killed
    on both tries: that row is recorded as failed, the other rows finish, the exit status is 1."""
    log = tmp_path / "grid.log"
    proc = start_mmbench(_long_args("runs", "--fusions", "concat", "--fusions", "add", "--seeds", "0",
                                    "--max-retries", "1"), tmp_path, log)
    want = {"synthetic-unique/concat/seed0": 1, "synthetic-unique/add/seed0": 2}
    killed: dict[str, list[int]] = {k: [] for k in want}
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and any(len(killed[k]) < n for k, n in want.items()):
            for label, n in want.items():
                run = tmp_path / "runs" / label  # the label is the run's folder under OUT
                if len(killed[label]) >= n or not (run / "log.jsonl").exists():
                    continue  # kill only once an epoch is checkpointed: the retry has something to resume
                for pid in processes_named(f"ray::{label}"):
                    if pid not in killed[label] and os.getsid(pid) == proc.pid:
                        os.kill(pid, signal.SIGKILL)
                        killed[label].append(pid)
            time.sleep(0.05)
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        assert stop_session(proc), "Ray processes of the grid were left running"
    out = log.read_text()
    assert {k: len(v) for k, v in killed.items()} == want, out
    assert proc.returncode == 1, out
    assert "add FAILED: WorkerLost: its Ray worker died on all 2 tries" in out
    assert "failed: synthetic-unique add" in out and "concat seed 0: accuracy" in out
    assert not (tmp_path / "runs" / "synthetic-unique" / "add" / "seed0" / "result.json").exists()
    # the retried run equals the same run trained without interruption, in this process
    from mmbench.reproduce import run_grid

    over = {"epochs": 60, "patience": 1000, "dataset_options": {"n_samples": 300}, "embed_dim": 8, "hidden_dim": 16}
    run_grid(["synthetic-unique"], ["concat"], [0], out_dir=tmp_path / "whole", leaderboard_dir=None, progress=False,
             overrides=over, log=lambda _: None)
    assert _runs(tmp_path / "runs") == _runs(tmp_path / "whole")


@pytest.mark.timeout(900)
def test_a_killed_driver_resumes_and_trains_no_finished_run_twice(tmp_path, one_thread):
    """The driver is SIGKILLed once the first runs are written: its Ray instance goes with it;
    the same command again keeps every finished run (not trained again: its files untouched),
    resumes the others from their checkpoints, and ends with the numbers of an uninterrupted grid."""
    args = _long_args("runs", "--fusions", "concat", "--fusions", "add", "--seeds", "0", "--seeds", "1")
    before = set(Path("/tmp").glob("mmray*"))
    log = tmp_path / "first.log"
    proc = start_mmbench(args, tmp_path, log)
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if list((tmp_path / "runs").glob("*/*/seed*/result.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone
        proc.wait(timeout=30)
        gone = wait_session_gone(proc.pid, 60)  # its Ray instance shares its fate
    finally:
        assert stop_session(proc, grace=5), "Ray processes outlived the killed driver"
    assert gone, "Ray processes outlived the killed driver"
    for folder in set(Path("/tmp").glob("mmray*")) - before:  # the killed driver's Ray session folder
        shutil.rmtree(folder, ignore_errors=True)
    finished = {p.parent: (p.stat().st_mtime_ns, (p.parent / "best.safetensors").stat().st_mtime_ns)
                for p in (tmp_path / "runs").glob("*/*/seed*/result.json")}
    assert 1 <= len(finished) < 4
    log2 = tmp_path / "second.log"
    proc = start_mmbench(args, tmp_path, log2)
    try:
        proc.wait(timeout=600)
    finally:
        assert stop_session(proc), "Ray processes of the grid were left running"
    out = log2.read_text()
    assert proc.returncode == 0, out
    assert out.count("(kept: ") == len(finished)
    for run, stamps in finished.items():  # runs trained twice: 0
        assert (run / "result.json").stat().st_mtime_ns == stamps[0]
        assert (run / "best.safetensors").stat().st_mtime_ns == stamps[1]
    from mmbench.reproduce import run_grid

    over = {"epochs": 60, "patience": 1000, "dataset_options": {"n_samples": 300}, "embed_dim": 8, "hidden_dim": 16}
    run_grid(["synthetic-unique"], ["concat", "add"], [0, 1], out_dir=tmp_path / "whole", leaderboard_dir=None,
             progress=False, overrides=over, log=lambda _: None)
    assert _runs(tmp_path / "runs") == _runs(tmp_path / "whole")


@pytest.mark.timeout(600)
def test_a_train_grid_on_ray_writes_the_runs_train_writes_locally(tmp_path, monkeypatch, capsys, one_thread):
    """`train --fusion A --fusion B --seed 0 --executor ray`: each (fusion, seed) a Ray task; each
    run folder's metrics.json equals the same run trained by `train` in this process."""
    from tests._cli import run_main

    common = ["train", "synthetic-unique", "--fusion", "concat", "--fusion", "add", "--seed", "0", "--epochs", "2",
              "--set", "dataset_options.n_samples=300", "--set", "embed_dim=8", "--no-progress", "--threads", "1"]
    log = tmp_path / "train.log"
    proc = start_mmbench([*common, "--out", "ray", "--executor", "ray", "--workers", "2"], tmp_path, log)
    try:
        proc.wait(timeout=500)
    finally:
        assert stop_session(proc), "Ray processes of the grid were left running"
    assert proc.returncode == 0, log.read_text()
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_main([*common, "--out", "local"], monkeypatch, capsys)
    assert rc == 0, err
    for fusion in ("concat", "add"):
        ray_run, local_run = (tmp_path / d / "synthetic-unique" / fusion / "seed0" for d in ("ray", "local"))
        metrics = [json.loads((r / "metrics.json").read_text()) for r in (ray_run, local_run)]
        assert metrics[0]["test"] == metrics[1]["test"] and metrics[0]["validation"] == metrics[1]["validation"]
        assert f"synthetic-unique {fusion} seed 0: best epoch" in log.read_text()
