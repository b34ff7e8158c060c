"""Crash recovery: SIGKILL at random moments, restart, same result; corrupt checkpoints refused."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from mmbench.core.errors import MMBenchError
from mmbench.core.io import atomic_save_safetensors, load_safetensors
from mmbench.training.trainer import TrainConfig, load_checked, load_model, train

EPOCHS = 8
RUN_FILES = ["best.safetensors", "config.json", "last.safetensors", "log.jsonl", "metrics.json", "predictions.parquet",
             "result.json"]


def _env() -> dict[str, str]:
    # one thread: the same float reductions in every process (and no oversubscription)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _cmd(out) -> list[str]:
    return [sys.executable, "-m", "mmbench.cli", "train", "synthetic-synergy", "--fusion", "gnn", "--device", "cpu",
            "--epochs", str(EPOCHS), "--out", str(out), "--no-progress", "--modality-dropout", "0.2",
            "--set", "dataset_options.n_samples=600", "--set", "patience=100"]


def _epochs_logged(run_dir) -> int:
    try:
        return len((run_dir / "log.jsonl").read_text().splitlines())
    except OSError:
        return 0


def _content(path):
    tensors, meta = load_safetensors(path)
    return {k: v.tolist() for k, v in tensors.items()}, meta  # file bytes vary (header key order), content not


def test_sigkill_at_random_moments_resumes_to_identical_results(tmp_path):
    started = time.monotonic()
    ref = subprocess.run(_cmd(tmp_path / "ref"), env=_env(), capture_output=True, text=True, timeout=300, check=False)
    ref_wall = time.monotonic() - started
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_dir = tmp_path / "ref" / "synthetic-synergy" / "gnn" / "seed0"
    epoch_seconds = json.loads((ref_dir / "metrics.json").read_text())["seconds"] / EPOCHS

    run_dir = tmp_path / "cut" / "synthetic-synergy" / "gnn" / "seed0"
    rng = random.Random(20240611)
    # kill 1 at a random moment after the start (importing, loading data, or training);
    # kills 2 and 3 at random moments inside (or writing) a random later epoch
    # (the timed kill falls inside the reference run's own wall time, so it lands on any machine)
    plan = [("time", rng.uniform(0.1, 0.6) * ref_wall), ("epoch", rng.randint(1, 3)), ("epoch", rng.randint(4, 6))]
    kills = resumed_kills = 0
    for kind, when in plan:
        proc = subprocess.Popen(_cmd(tmp_path / "cut"), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if kind == "time":
                time.sleep(when)
            else:
                deadline = time.monotonic() + 120
                while proc.poll() is None and _epochs_logged(run_dir) < when and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 1.0) * epoch_seconds)
            had_checkpoint = (run_dir / "last.safetensors").exists()
            logged = _epochs_logged(run_dir)
            proc.send_signal(signal.SIGKILL)
        finally:
            _, err = proc.communicate(timeout=60)
        print(f"kill at {kind} {when}: {logged} epochs logged, checkpoint {had_checkpoint}, exit {proc.returncode}")
        if proc.returncode == 0:  # it finished before the kill (a very slow or very fast machine)
            break
        assert proc.returncode == -signal.SIGKILL, err[-3000:]
        kills += 1
        resumed_kills += had_checkpoint
        if (run_dir / "last.safetensors").exists():
            load_checked(run_dir / "last.safetensors")  # atomic writes: never a torn checkpoint
    assert kills >= 2 and resumed_kills >= 1, (kills, resumed_kills)

    final = subprocess.run(_cmd(tmp_path / "cut"), env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr[-3000:]

    assert sorted(p.name for p in run_dir.iterdir()) == RUN_FILES  # no temporaries left behind
    assert (run_dir / "log.jsonl").read_text() == (ref_dir / "log.jsonl").read_text()
    assert _epochs_logged(run_dir) == EPOCHS
    assert (run_dir / "config.json").read_text() == (ref_dir / "config.json").read_text()
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, ref_dir))
    got.pop("seconds"), want.pop("seconds")
    assert got == want
    for name in ("last.safetensors", "best.safetensors"):
        assert _content(run_dir / name) == _content(ref_dir / name), name


CFG = {"task": "synthetic-unique", "fusion": "concat", "epochs": 2, "batch_size": 64, "embed_dim": 8, "hidden_dim": 16,
       "device": "cpu", "dataset_options": {"n_samples": 200}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(TrainConfig(**CFG), run_dir, progress=False)
    return run_dir


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garble_header(data: bytes) -> bytes:
    header_len = int.from_bytes(data[:8], "little")
    pos = 8 + header_len // 2
    return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :]


def _change_a_digit_in_the_header(data: bytes) -> bytes:
    """Still valid JSON and a valid safetensors file: only the checksum can tell."""
    header_len = int.from_bytes(data[:8], "little")
    pos = data.index(b"train_loss", 8, 8 + header_len)
    while not chr(data[pos]).isdigit():
        pos += 1
    return data[:pos] + str((int(chr(data[pos])) + 1) % 10).encode() + data[pos + 1 :]


def _flip_a_tensor_bit(data: bytes) -> bytes:
    return data[:-3] + bytes([data[-3] ^ 0x01]) + data[-2:]


@pytest.mark.parametrize("corrupt", [_truncate, _garble_header, _change_a_digit_in_the_header, _flip_a_tensor_bit])
def test_corrupt_last_checkpoint_is_refused_not_loaded_or_overwritten(finished_run, tmp_path, corrupt):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    last = run_dir / "last.safetensors"
    bad = corrupt(last.read_bytes())
    last.write_bytes(bad)
    log = (run_dir / "log.jsonl").read_text()
    with pytest.raises(MMBenchError, match="corrupt") as info:
        train(TrainConfig(**CFG), run_dir, progress=False)
    assert str(last) in str(info.value)
    assert last.read_bytes() == bad and (run_dir / "log.jsonl").read_text() == log  # nothing started over


def test_checkpoint_without_checksum_is_refused(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    tensors, meta = load_safetensors(run_dir / "last.safetensors")
    del meta["sha256"]
    atomic_save_safetensors(run_dir / "last.safetensors", tensors, meta)
    with pytest.raises(MMBenchError, match="no sha256"):
        train(TrainConfig(**CFG), run_dir, progress=False)


def test_corrupt_best_model_is_refused_by_load_model(finished_run, tmp_path):
    best = tmp_path / "best.safetensors"
    best.write_bytes(_flip_a_tensor_bit((finished_run / "best.safetensors").read_bytes()))
    with pytest.raises(MMBenchError, match="corrupt") as info:
        load_model(best)
    assert str(best) in str(info.value)
    # a model file written before checksums existed still loads
    tensors, meta = load_safetensors(finished_run / "best.safetensors")
    del meta["sha256"]
    atomic_save_safetensors(best, tensors, meta)
    model, _ = load_model(best)
    assert torch.equal(model.state_dict()[next(iter(tensors))], next(iter(tensors.values())))


def test_cli_reports_a_corrupt_checkpoint(tmp_path):
    run_dir = tmp_path / "synthetic-unique" / "concat" / "seed0"
    cmd = [sys.executable, "-m", "mmbench.cli", "train", "synthetic-unique", "--fusion", "concat", "--device", "cpu",
           "--epochs", "1", "--out", str(tmp_path), "--no-progress", "--set", "dataset_options.n_samples=200"]
    assert subprocess.run(cmd, env=_env(), capture_output=True, timeout=300, check=False).returncode == 0
    last = run_dir / "last.safetensors"
    last.write_bytes(_flip_a_tensor_bit(last.read_bytes()))
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {last}: checkpoint is corrupt"), proc.stderr
    assert "Traceback" not in proc.stderr
