"""One job of a grid: the seeds of one (task, fusion) trained together and scored.

A job is what an executor (:mod:`mmbench.reproduce.executors`) runs, in the driver's process
or in a Ray worker on another node: it loads the task's data (kept for the next job of the
same task in that process), trains its seeds (:func:`~mmbench.training.multiseed.train_seeds`:
one by one, resuming each from its last checkpoint, or vmapped together on a GPU), scores
each under the task's conditions and writes each run's predictions file. It writes only its
own run folders; the results it returns are written (result.json, leaderboard entries) by
the driver.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunJob", "TrainJob", "run_job", "task_data", "train_job"]


@dataclass(frozen=True)
class RunJob:
    task: str
    fusion: str  # as the grid names it (``unimodal:audio``)
    seeds: tuple[int, ...]
    config: dict[str, Any]  # the TrainConfig of the first seed, as a dict
    run_dirs: tuple[str, ...]  # one per seed
    data_dir: str | None = None
    dataset_options: dict[str, Any] | None = None
    vectorize: bool | None = None
    resume: bool = True
    progress: bool = False
    threads: int | None = None  # torch threads in the worker (None: leave the process's setting)
    order: tuple[int, int] = field(default=(0, 0))  # (task, row) position in the grid
    result_name: str | None = None  # default: the fusion's (``unimodal-audio``)
    conditions: tuple[str, ...] | None = None  # default: the task's

    @property
    def name(self) -> str:
        """The result name (``unimodal-audio``; ``concat-pdrop0.3`` in the mismatch grid)."""
        return self.result_name or self.fusion.replace(":", "-")

    @property
    def label(self) -> str:
        seeds = ",".join(str(s) for s in self.seeds)
        return f"{self.task}/{self.name}/seed{seeds}"


_LOADED: dict[str, Any] = {}  # one task's data per process: the last one a job used


def task_data(task: str, dataset_options: dict[str, Any] | None, data_dir: str | None,
              splits: bool = True) -> tuple[Any, Any, dict[str, Any] | None]:
    """(spec, dataset, training splits or None) of `task`, kept for the next call with the same
    arguments in this process (a worker runs many jobs of one task in a row)."""
    from mmbench.data.splits import load_training_splits, task_dataset, with_dataset_options
    from mmbench.data.tasks import get_task

    key = json.dumps([task, dataset_options or {}, data_dir], sort_keys=True, default=str)
    if _LOADED.get("key") != key:
        _LOADED.clear()
        spec = with_dataset_options(get_task(task), dataset_options)
        _LOADED.update(key=key, spec=spec, dataset=task_dataset(spec, data_dir), splits=None)
    if splits and _LOADED["splits"] is None:
        _LOADED["splits"] = load_training_splits(_LOADED["spec"], data_dir, _LOADED["dataset"])
    return _LOADED["spec"], _LOADED["dataset"], _LOADED["splits"]


def run_job(job: RunJob) -> list[tuple[int, Any, str]]:
    """Train and score the job's seeds; ``(seed, Result, note)`` per seed, in order. Writes each
    run folder's training files and predictions file, never its result.json."""
    from mmbench.reproduce import score_run
    from mmbench.training.multiseed import train_seeds
    from mmbench.training.trainer import TrainConfig

    if job.threads:
        import torch

        torch.set_num_threads(int(job.threads))
    spec, dataset, splits = task_data(job.task, job.dataset_options, job.data_dir)
    assert splits is not None
    if job.conditions:  # scored under these conditions instead of the task's (the mismatch grid)
        spec = spec.model_copy(update={"missing": spec.missing.model_copy(update={"conditions": list(job.conditions)})})
    run_dirs = [Path(d) for d in job.run_dirs]
    trained = train_seeds(TrainConfig.from_dict(job.config), list(job.seeds), splits=splits, out_dirs=run_dirs,
                          progress=job.progress, vectorize=job.vectorize, resume=job.resume)
    out = []
    for seed, run_dir, run in zip(job.seeds, run_dirs, trained):
        result = score_run(spec, run, dataset, splits["test"], run_dir, job.name, job.data_dir, splits["train"].targets)
        out.append((seed, result, f"{run.seconds:.1f}s, best epoch {run.best_epoch}"))
    return out


@dataclass(frozen=True)
class TrainJob:
    """One run of a `mmbench train` grid (a fusion and a seed) on an executor."""

    task: str
    fusion: str
    config: dict[str, Any]  # the run's TrainConfig, as a dict
    run_dir: str
    threads: int = 1

    @property
    def label(self) -> str:
        return f"{self.task}/{self.fusion.replace(':', '-')}/seed{self.config['seed']}"


def train_job(job: TrainJob) -> dict[str, Any]:
    """Train the run into its folder (resuming from it, as `mmbench train` does) and score it
    under every condition (its predictions file in its folder); its best epoch and its result
    record, which the driver writes as result.json."""
    import torch

    from mmbench.reproduce import score_run
    from mmbench.training.trainer import TrainConfig, train

    cfg = TrainConfig.from_dict(job.config)
    spec, dataset, splits = task_data(job.task, cfg.dataset_options, cfg.data_dir)
    assert splits is not None
    torch.set_num_threads(int(job.threads))
    trained = train(cfg, job.run_dir, progress=False, splits=splits)
    result = score_run(spec, trained, dataset, splits["test"], job.run_dir, job.fusion.replace(":", "-"), cfg.data_dir,
                       splits["train"].targets)
    return {"best_epoch": trained.best_epoch, "result": result.to_json()}
