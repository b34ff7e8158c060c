"""Helpers of the Ray tests: `mmbench` in a session of its own (so every Ray process it
starts can be found and ended by that session, never by name), a local `ray start` cluster."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["--no-progress", "--set", "dataset_options.n_samples=300", "--set", "embed_dim=8", "--set", "hidden_dim=16"]


def env_for_ray() -> dict[str, str]:
    """This checkout first on the path of the driver and of every Ray worker; no inherited cluster."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("RAY_ADDRESS", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def start_mmbench(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """`mmbench ARGS` in a new session (its own session), output to `log`."""
    out = open(log, "w")  # noqa: SIM115 - closed when the process is reaped (stop_session)
    return subprocess.Popen([sys.executable, "-m", "mmbench.cli", *map(str, args)], cwd=cwd, env=env_for_ray(),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def session_pids(sid: int) -> list[int]:
    """Pids of session `sid` (a Ray node's workers have process groups of their own, not sessions)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def wait_session_gone(sid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not session_pids(sid):
            return True
        time.sleep(0.5)
    return not session_pids(sid)


def stop_session(proc: subprocess.Popen, grace: float = 30.0) -> bool:
    """SIGTERM the process (Ray shuts its node down), wait, then SIGKILL whatever of its session
    is left (only processes this test started). True when nothing had to be killed."""
    clean = True
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            clean = False
    if not wait_session_gone(proc.pid, grace if clean else 1.0):
        clean = False
        for pid in session_pids(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_session_gone(proc.pid, 10.0)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    return clean


def processes_named(prefix: str) -> list[int]:
    """Pids whose command line starts with `prefix` (Ray names a running task's worker ``ray::NAME``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if args.startswith(prefix):
            found.append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_temp_dir() -> str:
    """Ray's session folder holds Unix sockets: the path must stay short (pytest's tmp_path may not)."""
    return tempfile.mkdtemp(prefix="mmray", dir="/tmp")


def wait_for_line(log: Path, text: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {text!r}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"no {text!r} within {seconds:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")
