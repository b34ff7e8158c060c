"""Case 6: command-line latency, each command a fresh process (what a user waits for).

* ``mmbench --help``: target under 0.5 s;
* ``mmbench evaluate mosi --predictions FILE``: a CSV of predictions for the MOSI test split
  under every condition of the task (``--tiny``: the same command on three conditions, named
  with ``--conditions``), scored with the default 1,000 bootstrap resamples; target under 3 s
  end to end on the CPU, with the feature cache warm (one untimed run first); exactness: the
  clean Acc-2 it prints equals the one computed here from the same file;
* the same with a cold (empty) feature cache for every run: scoring needs only the labels
  (no encoding, no torch import), target under 1.5 s on the 2-core CPU machine. The ratio
  column is cold / warm, measured in the same process.

The console script is run directly (``<python's bin>/mmbench``), not through a version
manager's shim, which adds its own start-up time; ``python -m mmbench.cli`` is the fallback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import Row, Settings, error_row


def mmbench_command() -> list[str]:
    script = Path(sys.executable).parent / "mmbench"
    if script.is_file():
        return [str(script)]
    found = shutil.which("mmbench")
    return [found] if found else [sys.executable, "-m", "mmbench.cli"]


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, proc


def _timed_runs(cmd: list[str], env: dict[str, str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t, proc = _run(cmd, env)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[-4:])} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}")
        times.append(t)
    return times


def _predictions_file(st: Settings, env: dict[str, str]) -> tuple[Path, list[str], float]:
    """A predictions CSV (id, condition, prediction) for the MOSI test split: truth + noise,
    seeded, for every condition of the task (a complete submission; `--tiny`: three of them,
    scored with ``--conditions``). Returns the file, its conditions and the clean acc2_non0
    computed here (the exactness check)."""
    import numpy as np

    from mmbench.data.tasks import get_task
    from mmbench.evaluation.metrics import compute_metrics
    from mmbench.evaluation.submissions.tables import load_test_labels

    spec = get_task("mosi")
    old = os.environ.get("MMBENCH_CACHE")
    os.environ["MMBENCH_CACHE"] = env["MMBENCH_CACHE"]
    try:
        labels = load_test_labels(spec, st.data_dir)
    finally:
        if old is None:
            os.environ.pop("MMBENCH_CACHE", None)
        else:
            os.environ["MMBENCH_CACHE"] = old
    conditions = [c.name for c in spec.conditions()]
    if st.tiny:
        conditions = conditions[:3]
    rng = np.random.default_rng(0)
    truth = np.asarray(labels.targets, dtype=np.float64)
    lines, clean = ["id,condition,prediction\n"], None
    for k, cond in enumerate(conditions):
        pred = np.clip(truth + rng.normal(0, 1.0 + 0.1 * k, len(labels.ids)), -3, 3)
        clean = pred if cond == "clean" else clean
        lines += [f"{i},{cond},{p:.6f}\n" for i, p in zip(labels.ids, pred)]
    path = st.work_dir / "mosi_predictions.csv"
    path.write_text("".join(lines))
    expect = compute_metrics("regression", truth, np.round(clean, 6))["acc2_non0"]
    return path, conditions, float(expect)


def _clean_acc2(out: str) -> float:
    import json

    return float(json.loads(out[out.index("{"):])["metrics"]["clean"]["acc2_non0"])


def run(st: Settings) -> list[Row]:
    cmd = mmbench_command()
    env = dict(os.environ, MMBENCH_CACHE=str(st.work_dir / "cache-cli"), PYTHONUNBUFFERED="1")
    repeats = st.pick(7, 5, 2)
    rows: list[Row] = []
    try:
        _run(cmd + ["--help"], env)  # page cache
        times = _timed_runs(cmd + ["--help"], env, repeats)
        t = min(times)
        rows.append(Row("6", "mmbench --help", t, None, "-", "s", "< 0.5 s", (t < 0.5) if not st.tiny else None, None, None,
                        f"median {sorted(times)[len(times) // 2]:.3f} s; {' '.join(Path(c).name for c in cmd)}",
                        {"times": times, "command": cmd}))
    except Exception as exc:  # noqa: BLE001
        rows.append(error_row("6", "mmbench --help", exc))
    if st.data_dir is None:
        rows.append(error_row("6", "mmbench evaluate mosi --predictions FILE",
                              RuntimeError("real data not found (pass --data-dir or set MMBENCH_DATA)")))
        return rows
    try:
        preds, conditions, expect = _predictions_file(st, env)
        full = cmd + ["evaluate", "mosi", "--predictions", str(preds), "--data-dir", str(st.data_dir), "--json"]
        if st.tiny:  # the same command on a smaller file: three conditions, named
            full += ["--conditions", ",".join(conditions)]
        _, first = _run(full, env)  # warm the feature cache
        if first.returncode != 0:
            raise RuntimeError(f"exited {first.returncode}: {(first.stderr or first.stdout).strip()[-300:]}")
        got = _clean_acc2(first.stdout)
        times = _timed_runs(full, env, st.pick(5, 5, 1))
        t = min(times)
        rows.append(Row("6", "mmbench evaluate mosi --predictions FILE", t, None, "-", "s", "< 3 s (CPU)",
                        (t < 3.0) if not st.tiny else None, abs(got - expect) < 1e-12, None,
                        f"median {sorted(times)[len(times) // 2]:.2f} s; warm cache, 1,000 bootstrap resamples, "
                        f"{len(conditions)} conditions; clean Acc-2 {got:.4f} (computed here: {expect:.4f})",
                        {"times": times, "command": full, "acc2_non0": got, "expected": expect}))
        cold = []
        for k in range(st.pick(5, 5, 1)):
            cold_env = dict(env, MMBENCH_CACHE=str(st.work_dir / f"cache-cold-{k}"))
            cold += _timed_runs(full, cold_env, 1)
            shutil.rmtree(cold_env["MMBENCH_CACHE"], ignore_errors=True)
        c = min(cold)
        rows.append(Row("6", "mmbench evaluate mosi --predictions FILE (cold cache)", c, t, "the warm-cache run",
                        "s", "< 1.5 s (2-core CPU)", (c < 1.5) if not st.tiny else None, None, None,
                        f"median {sorted(cold)[len(cold) // 2]:.2f} s; an empty MMBENCH_CACHE each run, 1,000 "
                        "bootstrap resamples", {"times": cold, "command": full}))
    except Exception as exc:  # noqa: BLE001
        rows.append(error_row("6", "mmbench evaluate mosi --predictions FILE", exc))
    return rows
