"""`mmbench train TASK --fusion NAME`: train a task's model (config from `baselines/`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmbench.cli.common import overrides


def train(
    task: str = typer.Argument(..., help="Task name, or a task spec .yaml file."),
    fusion: Optional[str] = typer.Option(None, "--fusion", "-f", help="Fusion name (see `mmbench fusions`); a "
                                         "retrieval task trains its dual encoder (default dual-encoder)."),
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
                                "than a second thread gains; raise it for big models)."),
) -> None:
    """Train a fusion model on a task (config from baselines/, overridable).

    Data parallel: `torchrun --nproc_per_node K -m mmbench.cli train ...` trains on K processes
    (one per GPU, or gloo on the CPU); batch_size is per process, so the global batch is
    batch_size x K. Only rank 0 writes the run folder and prints.
    """
    import torch
    import yaml

    from mmbench.core.errors import SpecError
    from mmbench.data.splits import load_training_splits, task_dataset, with_dataset_options
    from mmbench.data.tasks import get_task
    from mmbench.reproduce import baseline_config, config_file, write_run_result
    from mmbench.training.trainer import TrainConfig, distributed_session
    from mmbench.training.trainer import train as run_train

    spec = get_task(task)  # a spec file is known by its name from here on
    task = spec.name
    if fusion is None:
        if spec.target.type != "retrieval":
            raise SpecError("give --fusion (see `mmbench fusions`)")
        fusion = "dual-encoder"
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
    cfgs = [TrainConfig.from_dict(base | {"seed": s}, str(config or "baselines")) for s in seed]
    spec = with_dataset_options(spec, cfgs[0].dataset_options)
    dataset = task_dataset(spec, cfgs[0].data_dir)
    splits = load_training_splits(spec, cfgs[0].data_dir, dataset)  # loaded once for every seed
    torch.set_num_threads(max(1, threads))  # after loading: a cold cache's encoder (a transformer) uses every core
    name = fusion.replace(":", "-")
    with distributed_session(device) as dist:  # one process group for every seed under torchrun
        for cfg in cfgs:
            run_dir = out / task / name / f"seed{cfg.seed}"
            trained = run_train(cfg, run_dir, progress=not no_progress, splits=splits)
            if dist.is_main:  # scored under every condition, as in a grid: result.json for report and publish
                result = write_run_result(spec, trained, dataset, splits["test"], run_dir, name, cfg.data_dir)
                metrics = " ".join(f"{k} {v:.4f}" for k, v in result.metrics["clean"].items())
                workers = f" on {dist.world} processes" if dist.active else ""
                typer.echo(f"{task} {fusion} seed {cfg.seed}{workers}: best epoch {trained.best_epoch}, "
                           f"test {metrics}  -> {run_dir}")


def register(app: typer.Typer) -> None:
    app.command()(train)
