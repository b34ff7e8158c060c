"""`mmbench train TASK --fusion NAME`: train a task's model (config from `baselines/`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmbench.cli.common import (ADDRESS, EXECUTOR, GPUS_PER_RUN, MAX_RETRIES, MEMORY_PER_RUN, WORKERS, executor_from,
                                overrides)


def train(
    task: str = typer.Argument(..., help="Task name, or a task spec .yaml file."),
    fusions: list[str] = typer.Option([], "--fusion", "-f", help="Fusion name (see `mmbench fusions`; repeat for a "
                                      "grid of fusions); a retrieval task trains its dual encoder (default dual-encoder)."),
    seed: list[int] = typer.Option([0], "--seed", help="Repeat for several seeds."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    out: Path = typer.Option(Path("runs"), "--out", help="Runs folder; each run goes to OUT/TASK/FUSION/seedN."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML training config file, or a built-in baseline "
                                         "config by name (e.g. mosi; default: the task's baseline config)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: key=value (repeatable)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    modality_dropout: Optional[float] = typer.Option(None, "--modality-dropout"),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    compile_backend: Optional[str] = typer.Option(None, "--compile-backend",
                                                  help="torch.compile backend (default inductor; eager for a quick check)."),
    compile_mode: Optional[str] = typer.Option(None, "--compile-mode", help="torch.compile mode with inductor: default, "
                                               "reduce-overhead (CUDA graphs: small models on a GPU), max-autotune."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto (bf16 autocast on CUDA), bf16, fp16 or fp32."),
    no_progress: bool = typer.Option(False, "--no-progress"),
    threads: int = typer.Option(1, "--threads", help="CPU threads for torch while training and scoring, as in `reproduce` "
                                "(the baselines are small: on a small CPU, thread start-up and contention cost more "
                                "than a second thread gains; raise it for big models). With --executor ray: the CPUs "
                                "each run declares."),
    executor: str = EXECUTOR,
    address: Optional[str] = ADDRESS,
    workers: Optional[int] = WORKERS,
    gpus_per_run: Optional[float] = GPUS_PER_RUN,
    memory_per_run: Optional[float] = MEMORY_PER_RUN,
    max_retries: int = MAX_RETRIES,
) -> None:
    """Train a fusion model on a task (config from baselines/, overridable).

    Data parallel: `torchrun --nproc_per_node K -m mmbench.cli train ...` trains on K processes
    (one per GPU, or gloo on the CPU); batch_size is per process, so the global batch is
    batch_size x K. Only rank 0 writes the run folder and prints.

    A grid (several --fusion and/or --seed) with --executor ray trains each (fusion, seed) as a
    Ray task (docs/scale.md); each run writes its own folder, as here.
    """
    from mmbench.core.errors import SpecError
    from mmbench.data.tasks import get_task

    runner = executor_from(executor, address, workers, threads, device, gpus_per_run, memory_per_run, max_retries)
    spec = get_task(task)  # a spec file is known by its name from here on
    task = spec.name
    if not fusions:
        if spec.target.type != "retrieval":
            raise SpecError("give --fusion (see `mmbench fusions`)")
        fusions = ["dual-encoder"]
    cfgs = [(fusion, cfg) for fusion in fusions
            for cfg in _configs(task, fusion, config, set_, device, epochs, data_dir, modality_dropout, compile_,
                                compile_backend, compile_mode, precision, seed)]
    if runner.name != "local":
        _train_on(runner, task, cfgs, out, threads)
    else:
        _train_here(spec, cfgs, out, device, threads, not no_progress)


def _train_on(runner, task, cfgs, out, threads) -> None:
    """A grid of (fusion, seed) runs as executor tasks; the driver writes each run's result.json."""
    from mmbench.core.errors import MMBenchError
    from mmbench.core.io import atomic_write_json
    from mmbench.reproduce import one_line_error
    from mmbench.reproduce.jobs import TrainJob, train_job

    jobs = [TrainJob(task, fusion, cfg.to_dict(), str((out / task / fusion.replace(":", "-") / f"seed{cfg.seed}").absolute()),
                     threads) for fusion, cfg in cfgs]
    failed = 0
    for job, value in runner.run(train_job, jobs, label=lambda j: j.label):
        if isinstance(value, BaseException):
            failed += 1
            typer.echo(f"{job.label}: FAILED: {one_line_error(value)}", err=True)
            continue
        atomic_write_json(Path(job.run_dir) / "result.json", value["result"])
        metrics = " ".join(f"{k} {v:.4f}" for k, v in value["result"]["metrics"]["clean"].items())
        typer.echo(f"{task} {job.fusion} seed {job.config['seed']}: best epoch {value['best_epoch']}, "
                   f"test {metrics}  -> {job.run_dir}")
    if failed:
        raise MMBenchError(f"{failed} of {len(jobs)} runs failed (listed above)")


def _train_here(spec, cfgs, out, device, threads, progress) -> None:
    """Train in this process (or under torchrun); each run scored under every condition, as in a grid."""
    import torch

    from mmbench.data.splits import load_training_splits, task_dataset, with_dataset_options
    from mmbench.reproduce import write_run_result
    from mmbench.training.trainer import distributed_session
    from mmbench.training.trainer import train as run_train

    all_threads = torch.get_num_threads()
    loaded: dict[str, tuple] = {}  # the data, loaded once for every run with the same dataset options
    with distributed_session(device) as dist:  # one process group for every seed under torchrun
        for fusion, cfg in cfgs:
            key = repr(sorted((cfg.dataset_options or {}).items()))
            if key not in loaded:
                torch.set_num_threads(all_threads)
                run_spec = with_dataset_options(spec, cfg.dataset_options)
                dataset = task_dataset(run_spec, cfg.data_dir)
                loaded[key] = (run_spec, dataset, load_training_splits(run_spec, cfg.data_dir, dataset))
            run_spec, dataset, splits = loaded[key]
            torch.set_num_threads(max(1, threads))  # after loading: a cold cache's encoder (a transformer) uses every core
            name = fusion.replace(":", "-")
            run_dir = out / spec.name / name / f"seed{cfg.seed}"
            trained = run_train(cfg, run_dir, progress=progress, splits=splits)
            if dist.is_main:  # result.json for report and publish
                result = write_run_result(run_spec, trained, dataset, splits["test"], run_dir, name, cfg.data_dir,
                                          splits["train"].targets)
                metrics = " ".join(f"{k} {v:.4f}" for k, v in result.metrics["clean"].items())
                workers_ = f" on {dist.world} processes" if dist.active else ""
                typer.echo(f"{spec.name} {fusion} seed {cfg.seed}{workers_}: best epoch {trained.best_epoch}, "
                           f"test {metrics}  -> {run_dir}")


def _configs(task, fusion, config, set_, device, epochs, data_dir, modality_dropout, compile_, compile_backend,
             compile_mode, precision, seed) -> list:
    """One TrainConfig per seed of (task, fusion): the baseline config, --config, --set, the options."""
    import yaml

    from mmbench.core.errors import SpecError
    from mmbench.reproduce import baseline_config, config_file
    from mmbench.training.trainer import TrainConfig

    base = baseline_config(task, fusion)
    if config:
        config = str(config_file(config))
        try:
            base |= yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise SpecError(f"invalid YAML: {exc}".replace("\n", " "), config) from None
    base |= overrides(set_)
    base["device"] = device
    if epochs is not None:
        base["epochs"] = epochs
    if data_dir:
        base["data_dir"] = str(data_dir)
    if modality_dropout is not None:
        base["modality_dropout"] = modality_dropout
    if compile_:
        base["compile"] = True
    if compile_backend:
        base["compile_backend"] = compile_backend
    if compile_mode:
        base["compile_mode"] = compile_mode
    if precision:
        base["precision"] = precision
    return [TrainConfig.from_dict(base | {"seed": s}, str(config or "baselines")) for s in seed]


def register(app: typer.Typer) -> None:
    app.command()(train)
