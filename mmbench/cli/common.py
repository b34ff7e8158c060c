"""Helpers the command modules share: JSON output and `--set key=value` overrides."""

from __future__ import annotations

import json
from typing import Any

import typer


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def overrides(items: list[str]) -> dict[str, Any]:
    from mmbench.core.errors import SpecError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set expects key=value, got {item!r}")
        target = out
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = parse_value(value)
    return out


# --executor and Ray's options, shared by `reproduce` and `train` (a grid of fusions or seeds)
EXECUTOR = typer.Option("local", "--executor", help="local (this process, one run after the other) or ray (each run a "
                        "Ray task; needs the cluster extra: pip install -e \".[cluster]\").")
ADDRESS = typer.Option(None, "--address", help="Ray cluster to run on (host:port of `ray start --head`, or ray://...); "
                       "default: a local Ray instance started for this grid.")
WORKERS = typer.Option(None, "--workers", help="Runs at once on the local Ray instance (default: the CPU count divided "
                       "by --threads); not used with --address.")
GPUS_PER_RUN = typer.Option(None, "--gpus-per-run", help="GPUs each Ray task declares (default 1 with --device cuda*, "
                            "else 0).")
MEMORY_PER_RUN = typer.Option(None, "--memory-per-run", help="Memory (GiB) each Ray task declares, so Ray never packs "
                              "more runs on a node than fit.")
MAX_RETRIES = typer.Option(2, "--max-retries", help="Times a Ray task whose worker process or node died is run again "
                           "(it resumes from its last checkpoint); then the run is recorded as failed and the grid "
                           "goes on.")


def executor_from(name: str, address: Any, workers: Any, threads: int, device: str, gpus: Any, memory_gb: Any,
                  max_retries: int) -> Any:
    """The executor the command-line options name."""
    from mmbench.reproduce.executors import make_executor

    if gpus is None:
        gpus = 1 if device.startswith("cuda") else 0
    return make_executor(name, address, num_cpus=max(1, threads), num_gpus=gpus, memory_gb=memory_gb,
                         max_retries=max_retries, workers=workers, log=typer.echo)
