"""A real Ray cluster in the tests: a head and one more worker node on 127.0.0.1 (`ray start`),
a tiny grid through `reproduce --executor ray --address`, then both nodes stopped (by the
processes this test started, never `ray stop`, which would end every Ray on the machine)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys

import pytest

from tests._ray import (TINY, env_for_ray, free_port, session_pids, short_temp_dir, start_mmbench, stop_session,
                        wait_for_line)

pytest.importorskip("ray")


def _ray_start(args: list[str], env: dict[str, str], log) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - the process holds it until stopped
    return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *args], env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def two_node_cluster(tmp_path):
    """(address, env): a head (1 CPU) and a worker node (1 CPU) on 127.0.0.1 with a token of their
    own; both stopped at the end whatever happened (SIGTERM, then SIGKILL of their sessions)."""
    env = env_for_ray() | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats",
              f"--object-store-memory={100 * 1024**2}"]
    head_dir, worker_dir = short_temp_dir(), short_temp_dir()
    nodes = []
    try:
        nodes.append(_ray_start(["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={head_dir}",
                                 *common], env, tmp_path / "head.log"))
        wait_for_line(tmp_path / "head.log", "Ray runtime started", nodes[0], 240)
        nodes.append(_ray_start([f"--address=127.0.0.1:{port}", *common], env, tmp_path / "worker.log"))
        wait_for_line(tmp_path / "worker.log", "Ray runtime started", nodes[1], 240)
        yield f"127.0.0.1:{port}", env
    finally:
        clean = [stop_session(node) for node in reversed(nodes)]
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(worker_dir, ignore_errors=True)
        assert not any(session_pids(node.pid) for node in nodes), "Ray processes of the test cluster were left running"
        assert all(clean), "a Ray node did not stop on SIGTERM (its processes were killed)"


@pytest.mark.timeout(900)
def test_a_tiny_grid_runs_on_a_two_node_cluster_through_address(tmp_path, two_node_cluster, monkeypatch):
    address, env = two_node_cluster
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):  # the driver joins with the cluster's token
        monkeypatch.setenv(key, env[key])
    log = tmp_path / "grid.log"
    proc = start_mmbench(["reproduce", "--tasks", "synthetic-unique", "--fusions", "concat", "--fusions", "add",
                          "--seeds", "0", "--set", "epochs=2", *TINY, "--executor", "ray", "--address", address],
                         tmp_path, log)
    try:
        proc.wait(timeout=600)
    finally:
        stop_session(proc)
    out = log.read_text()
    assert proc.returncode == 0, out
    assert f"executor ray: the Ray cluster at {address}, 2 node(s), 2 CPUs" in out
    results = sorted(tmp_path.glob("runs/synthetic-unique/*/seed0/result.json"))
    assert [p.parent.parent.name for p in results] == ["add", "concat"]
    for path in results:  # written by the driver, predictions by the worker that trained the run
        assert json.loads(path.read_text())["metrics"]["clean"]["accuracy"] > 0
        assert (path.parent / "predictions.parquet").is_file() and (path.parent / "best.safetensors").is_file()
    assert "concat seed 0: accuracy" in out and "add seed 0: accuracy" in out
