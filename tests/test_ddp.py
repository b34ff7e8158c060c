"""Data-parallel training: `mmbench train` under torchrun, two CPU processes on gloo."""

import json
import os
import subprocess
import sys

import pytest
import torch

from mmbench.core.errors import MMBenchError
from mmbench.training.trainer import (
    TrainConfig,
    _read_resume_state,
    shard_permutation,
    train,
)

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

N_TRAIN = 360  # 60% of n_samples=600


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def test_torchrun_two_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mmbench.cli", "train", "synthetic-unique", "--fusion", "concat", "--device", "cpu",
           "--epochs", "2", "--out", str(tmp_path), "--no-progress",
           "--set", "dataset_options.n_samples=600", "--set", "batch_size=32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("on 2 processes") == 1  # rank 0 prints, rank 1 does not

    metrics_files = list(tmp_path.rglob("metrics.json"))
    assert len(metrics_files) == 1
    run_dir = metrics_files[0].parent
    assert run_dir == tmp_path / "synthetic-unique" / "concat" / "seed0"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["config.json", "log.jsonl", "last.safetensors", "best.safetensors", "metrics.json", "predictions.parquet",
         "result.json"])  # rank 0 alone scores the run

    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    for record in log:
        # each rank trained on its own half of the epoch: disjoint shards covering the split
        assert record["samples_seen"] == [N_TRAIN // 2, N_TRAIN // 2]
        assert record["samples_unique"] == N_TRAIN
    metrics = json.loads(metrics_files[0].read_text())
    assert metrics["test"]["accuracy"] > 0.75  # chance is 0.5


def test_shards_are_disjoint_equal_and_cover_the_permutation():
    perm = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    shards = [shard_permutation(perm, r, 4) for r in range(4)]
    assert {len(s) for s in shards} == {25}  # same number of steps on every rank
    together = torch.cat(shards)
    assert len(set(together.tolist())) == 100
    assert set(together.tolist()) <= set(perm.tolist())
    assert torch.equal(shard_permutation(perm, 0, 1), perm)


def test_resume_with_another_world_size_is_refused(tmp_path):
    cfg = TrainConfig(task="synthetic-unique", fusion="concat", epochs=1, batch_size=64, embed_dim=8, hidden_dim=16,
                      device="cpu", dataset_options={"n_samples": 200})
    train(cfg, tmp_path, progress=False)
    assert _read_resume_state(tmp_path, cfg, 1) is not None
    with pytest.raises(MMBenchError, match="1 process.*this one has 2"):
        _read_resume_state(tmp_path, cfg, 2)
