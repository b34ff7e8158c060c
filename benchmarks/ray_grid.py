"""The quick suite on the local executor against Ray with 2 workers; a killed-and-resumed Ray grid
against an uninterrupted one. ``python -m benchmarks.ray_grid [--out FILE] [--epochs N] [--samples N]``.

Not one of ``python -m benchmarks``' cases: each Ray grid starts a Ray instance (about 10-20 s
on a loaded 2-core machine), too slow for that suite's CI smoke run. Every grid runs as the
`mmbench reproduce` command a user types, in a subprocess, timed from start to exit:

1. ``local``: ``--executor local`` (one run after the other, one torch thread);
2. ``ray``: ``--executor ray --workers 2`` (one CPU and one thread per run); its start-up is
   the "ready in" figure the executor prints (starting the node until ``ray.init`` returns);
   ratio = local / ray; every run's metrics must be identical to the local grid's;
3. ``killed``: the Ray grid SIGKILLed (the driver alone) once a third of its runs are written,
   then the same command again (``--resume``): the total of both, the runs kept, and the runs
   trained twice (a run finished before the kill whose result.json or best.safetensors changed:
   must be 0); its metrics must equal the uninterrupted grid's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO, load_average, machine_info


def _command(out: Path, executor: str, epochs: int, samples: int, seeds: list[int]) -> list[str]:
    cmd = [sys.executable, "-m", "mmbench.cli", "reproduce", "--suite", "quick", "--out", str(out), "--no-progress",
           "--set", f"epochs={epochs}", "--set", f"dataset_options.n_samples={samples}", "--set", "embed_dim=16",
           "--set", "hidden_dim=32", "--threads", "1", "--executor", executor]
    for s in seeds:
        cmd += ["--seeds", str(s)]
    return cmd + (["--workers", "2"] if executor == "ray" else [])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("RAY_ADDRESS", None)
    return env


def _run(cmd: list[str], log: Path, kill_after: int | None = None, runs_dir: Path | None = None) -> tuple[float, int, str]:
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if kill_after is not None and runs_dir is not None:
            while proc.poll() is None and len(list(runs_dir.glob("*/*/seed*/result.json"))) < kill_after:
                time.sleep(0.05)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.perf_counter() - started, proc.returncode, log.read_text(errors="replace")


def _metrics(out: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(out)): json.loads(p.read_text())["metrics"] for p in out.glob("*/*/seed*/result.json")}


def _stamps(out: Path) -> dict[str, tuple[int, int]]:
    return {str(p.parent.relative_to(out)): (p.stat().st_mtime_ns, (p.parent / "best.safetensors").stat().st_mtime_ns)
            for p in out.glob("*/*/seed*/result.json")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ray_grid", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=2)
    a = p.parse_args(argv)
    seeds = list(range(a.seeds))
    rows: dict[str, object] = {"machine": machine_info("cpu"), "load_before": load_average(),
                               "size": {"suite": "quick", "epochs": a.epochs, "n_samples": a.samples, "seeds": seeds,
                                        "runs": 3 * 4 * len(seeds)}}
    with tempfile.TemporaryDirectory(prefix="mmbench-raybench-") as tmp:
        work = Path(tmp)
        local_s, rc, _ = _run(_command(work / "local", "local", a.epochs, a.samples, seeds), work / "local.log")
        assert rc == 0, (work / "local.log").read_text()[-2000:]
        ray_s, rc, ray_out = _run(_command(work / "ray", "ray", a.epochs, a.samples, seeds), work / "ray.log")
        assert rc == 0, ray_out[-2000:]
        ready = re.search(r"ready in ([0-9.]+)s", ray_out)
        same = _metrics(work / "local") == _metrics(work / "ray")
        rows["local_vs_ray"] = {"local_s": round(local_s, 1), "ray_2_workers_s": round(ray_s, 1),
                                "ratio_local_over_ray": round(local_s / ray_s, 2),
                                "ray_startup_s": float(ready.group(1)) if ready else None,
                                "identical_metrics": same}
        print(json.dumps(rows["local_vs_ray"]), flush=True)
        cmd = _command(work / "killed", "ray", a.epochs, a.samples, seeds)
        n_runs = 3 * 4 * len(seeds)
        sessions = set(Path("/tmp").glob("mmray*"))
        first_s, _, _ = _run(cmd, work / "killed1.log", kill_after=max(1, n_runs // 3), runs_dir=work / "killed")
        time.sleep(3)  # the killed driver's Ray node stops (it dies with its parent)
        for folder in set(Path("/tmp").glob("mmray*")) - sessions:  # the killed driver's Ray session folder
            shutil.rmtree(folder, ignore_errors=True)
        before = _stamps(work / "killed")
        second_s, rc, second_out = _run(cmd, work / "killed2.log")
        assert rc == 0, second_out[-2000:]
        after = _stamps(work / "killed")
        twice = sum(1 for run, stamp in before.items() if after.get(run) != stamp)
        rows["killed_and_resumed"] = {"killed_after_s": round(first_s, 1), "resumed_s": round(second_s, 1),
                                      "total_s": round(first_s + second_s, 1), "uninterrupted_s": round(ray_s, 1),
                                      "runs_finished_before_kill": len(before),
                                      "runs_kept_on_resume": second_out.count("(kept: "),
                                      "runs_trained_twice": twice,
                                      "identical_metrics": _metrics(work / "killed") == _metrics(work / "ray")}
        print(json.dumps(rows["killed_and_resumed"]), flush=True)
    rows["load_after"] = load_average()
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2) + "\n")
    ok = rows["local_vs_ray"]["identical_metrics"] and rows["killed_and_resumed"]["identical_metrics"] \
        and rows["killed_and_resumed"]["runs_trained_twice"] == 0  # type: ignore[index]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
