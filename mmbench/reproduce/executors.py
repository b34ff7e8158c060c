"""Where a grid's runs execute: in this process (``local``, the default) or as Ray tasks.

An executor takes a list of jobs and a module-level function, runs ``fn(job)`` for each and
yields ``(job, value)`` as each job ends, ``value`` being what ``fn`` returned or the
exception that ended it. The caller (the driver) writes everything shared (result files,
leaderboard entries, the reference checks, the report) as the values arrive; ``fn`` writes
only the job's own run folders. Nothing shared is written by two processes at once.

:class:`RayExecutor` is Ray's own scheduling, nothing home-made: each job is one
``ray.remote`` task with its resources declared (``num_cpus``, ``num_gpus``, ``memory``),
Ray places it on a node with room, retries it up to ``max_retries`` times when its worker
process or node dies (``retry_exceptions=False``: an error raised by the run itself is not
retried, it is that run's result), and the driver collects the tasks with ``ray.wait`` as
they finish. Without an address it starts a local Ray instance of its own (never one that
happens to run on the machine already): ``ray start --head --block`` as a child process that
the kernel signals when the driver dies (``PR_SET_PDEATHSIG``), so even a driver killed with
SIGKILL takes its Ray processes with it (``ray.init``'s own local instance leaves its agents
running then); at the end the driver stops it.

Ray is an optional extra (``pip install -e ".[cluster]"``); without it the Ray executor
refuses with one line naming the extra.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmbench.core.errors import MMBenchError

__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "WorkerLost", "make_executor", "require_ray"]

EXECUTORS = ("local", "ray")


class WorkerLost(MMBenchError):
    """A job whose worker process (or node) died on every try."""


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MMBenchError('the Ray executor needs Ray: pip install -e ".[cluster]" (or pip install "mmbench[cluster]")') from None
    return ray


class LocalExecutor:
    """Every job in this process, one after the other, in order."""

    name = "local"

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], label: Callable[[Any], str] = str) -> Iterator[tuple[Any, Any]]:
        for job in jobs:
            try:
                value = fn(job)
            except Exception as exc:  # noqa: BLE001 - handed to the driver, which records it
                value = exc
            yield job, value


@dataclass
class RayExecutor:
    """Each job a Ray task. ``address``: a running cluster (``ray start`` / ``ray://``), None
    for a local instance of ``workers`` x ``num_cpus`` CPUs. ``num_cpus`` / ``num_gpus`` /
    ``memory`` (bytes) are what each job declares; ``max_retries``: how many times a job whose
    worker died is run again (then it is recorded as failed and the others go on)."""

    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    memory: int | None = None
    max_retries: int = 2
    workers: int | None = None
    log: Callable[[str], None] = print

    name = "ray"

    def _connect(self, ray: Any) -> bool:
        """Connect (or start a local instance); True when this call started Ray."""
        if ray.is_initialized():
            return False
        common: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning", "log_to_driver": True,
                                  "configure_logging": True}
        started = time.perf_counter()
        if self.address:
            ray.init(address=self.address, **common)
            where = f"the Ray cluster at {self.address}"
        else:
            workers = self.workers or max(1, int((os.cpu_count() or 1) // max(self.num_cpus, 1)))
            try:
                ray.init(address=self._start_local(int(max(workers * self.num_cpus, 1))), **common)
            except BaseException:
                self._stop_local()
                raise
            where = f"a local Ray instance ({workers} worker{'s' if workers != 1 else ''})"
        res = ray.cluster_resources()
        self.log(f"executor ray: {where}, {len(ray.nodes())} node(s), {res.get('CPU', 0):g} CPUs, "
                 f"{res.get('GPU', 0):g} GPUs; each run declares {self.num_cpus:g} CPU, {self.num_gpus:g} GPU"
                 f"{f', {self.memory / 1024**3:.1f} GiB' if self.memory else ''} (ready in {time.perf_counter() - started:.1f}s)")
        return True

    _head: Any = field(default=None, init=False, repr=False)
    _temp: str | None = field(default=None, init=False, repr=False)
    _saved_env: dict[str, str | None] | None = field(default=None, init=False, repr=False)

    def _start_local(self, cpus: int) -> str:
        """Start ``ray start --head --block`` (on 127.0.0.1, a free port, a session folder of its
        own) as a child that dies with this process; its address once it is up."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self._temp = tempfile.mkdtemp(prefix="mmray", dir="/tmp")  # short: it holds Unix sockets
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
                   "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--include-dashboard=false",
                   "--disable-usage-stats", f"--temp-dir={self._temp}", f"--object-store-memory={200 * 1024**2}"]
        if not self.num_gpus:
            command.append("--num-gpus=0")
        log = open(os.path.join(self._temp, "head.log"), "w+")  # noqa: SIM115 - read below, closed with the head
        # Ray 2.5x reads the token mode once per process: a driver that imported Ray before the head
        # made its token cannot join it. This private instance of this driver's runs on 127.0.0.1 runs
        # without token authentication (as Ray always did before 2.50), in the head and in the driver.
        self._saved_env = {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE")}
        os.environ["RAY_AUTH_MODE"] = "disabled"
        self._head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            log.seek(0)
            text = log.read()
            if "Ray runtime started" in text:
                return f"127.0.0.1:{port}"
            if self._head.poll() is not None:
                self._stop_local()
                raise MMBenchError(f"the local Ray instance did not start: {text.strip().splitlines()[-1:] or ['no output']}")
            time.sleep(0.2)
        self._stop_local()
        raise MMBenchError("the local Ray instance did not start within 300 s")

    def _stop_local(self) -> None:
        if self._head is not None:
            if self._head.poll() is None:
                self._head.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
                try:
                    self._head.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self._head.kill()
                    self._head.wait()
            self._head = None
        if self._temp:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
        for key, value in (self._saved_env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = None

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], label: Callable[[Any], str] = str) -> Iterator[tuple[Any, Any]]:
        ray = require_ray()
        from ray.exceptions import RayTaskError

        started_here = self._connect(ray)
        try:
            options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                                       "max_retries": max(int(self.max_retries), 0), "retry_exceptions": False}
            if self.memory:
                options["memory"] = int(self.memory)
            remote = ray.remote(fn)
            pending = {remote.options(name=label(job), **options).remote(job): job for job in jobs}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        value = ray.get(ref)
                    except RayTaskError as exc:  # the run raised: its own error, as in the local executor
                        value = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
                    except Exception as exc:  # noqa: BLE001 - worker or node died on every try
                        value = WorkerLost(f"its Ray worker died on all {max(int(self.max_retries), 0) + 1} tries "
                                           f"({type(exc).__name__})")
                    yield job, value
        finally:
            if started_here:
                ray.shutdown()
                self._stop_local()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def make_executor(name: str, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                  memory_gb: float | None = None, max_retries: int = 2, workers: int | None = None,
                  log: Callable[[str], None] = print) -> LocalExecutor | RayExecutor:
    """The executor called `name` (``local`` or ``ray``); Ray's options refused for ``local``."""
    if name not in EXECUTORS:
        raise MMBenchError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
    if name == "local":
        if address:
            raise MMBenchError("--address is for the Ray executor: add --executor ray")
        return LocalExecutor()
    require_ray()
    if num_cpus <= 0 or num_gpus < 0 or (memory_gb is not None and memory_gb <= 0) or max_retries < 0:
        raise MMBenchError("Ray resources: CPUs per run must be > 0, GPUs >= 0, memory > 0, retries >= 0")
    return RayExecutor(address=address, num_cpus=num_cpus, num_gpus=num_gpus,
                       memory=int(memory_gb * 1024**3) if memory_gb else None, max_retries=max_retries,
                       workers=workers, log=log)
