"""`mmbench` command line: a thin layer over the Python API.

Heavy modules (torch, pandas) are imported inside the commands so `mmbench --help` stays fast.
Every user-facing error is one line `error: <file>: <problem>` and exit code 1; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Benchmark multimodal learning: datasets, fusion baselines, evaluation, leaderboard.")
data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect, prepare and mask datasets.")
app.add_typer(data_app, name="data")

_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _overrides(items: list[str]) -> dict[str, Any]:
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
        target[leaf] = _parse_value(value)
    return out


@app.command()
def tasks(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered tasks."""
    from mmbench.data.tasks import get_task, task_names

    rows = []
    for name in task_names():
        s = get_task(name)
        rows.append({"name": name, "dataset": s.dataset.name, "target": s.target.type, "modalities": s.modalities,
                     "primary_metric": s.primary_metric, "description": s.description})
    if as_json:
        return _echo_json(rows)
    for r in rows:
        typer.echo(f"{r['name']:<24} {r['target']:<11} {r['dataset']:<10} {'+'.join(r['modalities']):<24} "
                   f"{r['primary_metric']:<12} {r['description']}")


@app.command()
def fusions(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered fusion methods."""
    from mmbench.core.registry import FUSIONS

    rows = [{"name": n, "description": (cls.__doc__ or "").strip().split("\n")[0]} for n, cls in FUSIONS.items()]
    if as_json:
        return _echo_json(rows)
    for r in rows:
        typer.echo(f"{r['name']:<12} {r['description']}")


def _dataset_or_task(name: str, data_dir: Optional[Path], options: Optional[dict[str, Any]] = None):
    """A dataset by registry name, or the dataset (with its options) that a task uses;
    `options` are laid over either."""
    from mmbench.data.datasets.base import load_dataset
    from mmbench.core.errors import SpecError
    from mmbench.core.registry import DATASETS
    from mmbench.data.tasks import get_task, task_names

    base: dict[str, Any] = {}
    if name not in DATASETS and name in task_names():
        spec = get_task(name)
        name, base = spec.dataset.name, dict(spec.dataset.options)
    if not options:
        return load_dataset(name, data_dir, **base)
    try:
        return load_dataset(name, data_dir, **(base | options))
    except TypeError as exc:  # a keyword the loader does not take
        raise SpecError(f"dataset {name!r}: bad option in --set ({exc})") from None


@data_app.command("info")
def data_info(
    dataset: str = typer.Argument(..., help="Dataset or task name."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data root (default $MMBENCH_DATA)."),
    split: Optional[str] = typer.Option(None, "--split"),
    as_json: bool = typer.Option(False, "--json"),
    set_: list[str] = typer.Option([], "--set", help="Dataset option key=value (repeatable), as for `data prepare`."),
) -> None:
    """Per split: samples, per-modality present counts, class counts, where the files are.
    Counted from the annotation files and the file system: nothing is encoded."""
    ds = _dataset_or_task(dataset, data_dir, _overrides(set_))
    splits = [split] if split else list(ds.split_names)
    info = {"dataset": ds.name, "root": str(ds.root), "files": ds.locate(),
            "splits": {s: ds.split_summary(s) for s in splits}}
    if as_json:
        return _echo_json(info)
    typer.echo(f"dataset {info['dataset']}  (root {info['root']})")
    for k, v in info["files"].items():
        typer.echo(f"  {k}: {v}")
    for s, summ in info["splits"].items():
        if "images" in summ:  # image-caption data: images in the annotations and on disk, captions
            scope = f"  ({summ['scope']})" if "scope" in summ else ""
            typer.echo(f"  {s:<6} images {summ['images']:,} in the annotations, {summ['images_on_disk']:,} on disk; "
                       f"captions {summ['captions']:,}{scope}")
            continue
        present = ", ".join(f"{m} {c}" for m, c in summ["present"].items())
        extra = ""
        if "classes" in summ:
            extra = "  classes " + " ".join(f"{k}:{v}" for k, v in summ["classes"].items())
        elif "target" in summ:
            extra = "  target min {min:.3f} max {max:.3f} mean {mean:.3f}".format(**summ["target"])
        typer.echo(f"  {s:<6} {summ['samples']:>7} samples  present: {present}{extra}")


@data_app.command("masks")
def data_masks(
    task: str = typer.Argument(...),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write (id, condition, one 0/1 column per modality)."),
    split: str = typer.Option("test", "--split", help="Split role: train, validation or test."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
) -> None:
    """Export the exact missing-modality masks of a task's conditions, for predictions-file submitters."""
    from mmbench.core.io import atomic_write_text
    from mmbench.data.masks import masks_table
    from mmbench.data.splits import load_task_split
    from mmbench.data.tasks import get_task

    spec = get_task(task)
    s = load_task_split(spec, split, data_dir)
    conditions = spec.conditions()
    if split in ("train", "validation") and spec.missing.train:  # the masks training actually applies
        from mmbench.data.masks import parse_condition

        conditions = [parse_condition(spec.missing.train, spec.modalities)]
    table = masks_table(conditions, s.ids, spec.modalities, spec.missing.seed, s.name)
    atomic_write_text(out, table.to_csv(index=False))
    typer.echo(f"wrote {len(table)} rows ({len(conditions)} conditions x {len(s)} samples) to {out}")


@data_app.command("export")
def data_export(
    task: str = typer.Argument(...),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (datasets.load_from_disk reads it)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
) -> None:
    """Write a task's splits as a Hugging Face dataset: modalities, presence, target, ids."""
    from mmbench.data.export import export_task
    from mmbench.data.tasks import get_task

    rows = export_task(get_task(task), out, data_dir)
    typer.echo(f"wrote {', '.join(f'{r} {n}' for r, n in rows.items())} rows to {out}")


@data_app.command("prepare")
def data_prepare(
    dataset: str = typer.Argument(..., help="Dataset or task name."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    download: bool = typer.Option(False, "--download", help="Fetch the official files (SHA-256 checked, resumable)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="With --download: fetch from this mirror, which "
                                         "replaces scheme and host of each official URL, keeping the path "
                                         "(default $MMBENCH_DOWNLOAD_MIRROR)."),
    set_: list[str] = typer.Option([], "--set", help="Dataset option key=value (repeatable), e.g. mnist=idx."),
) -> None:
    """Verify a dataset's inputs and build its derived files (spectrograms, encoded features)."""
    ds = _dataset_or_task(dataset, data_dir, _overrides(set_))
    for key, value in ds.prepare(download=download, mirror=mirror).items():
        typer.echo(f"  {key}: {value}")
    typer.echo(f"dataset {ds.name} ready under {ds.root}")


@app.command()
def train(
    task: str = typer.Argument(...),
    fusion: Optional[str] = typer.Option(None, "--fusion", "-f", help="Fusion name (see `mmbench fusions`); a "
                                         "retrieval task trains its dual encoder (default dual-encoder)."),
    seed: list[int] = typer.Option([0], "--seed", help="Repeat for several seeds."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    out: Path = typer.Option(Path("runs"), "--out", help="Runs folder; each run goes to OUT/TASK/FUSION/seedN."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML training config (default: baselines/)."),
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
) -> None:
    """Train a fusion model on a task (config from baselines/, overridable).

    Data parallel: `torchrun --nproc_per_node K -m mmbench.cli train ...` trains on K processes
    (one per GPU, or gloo on the CPU); batch_size is per process, so the global batch is
    batch_size x K. Only rank 0 writes the run folder and prints.
    """
    import yaml

    from mmbench.core.errors import SpecError
    from mmbench.reproduce import baseline_config
    from mmbench.data.tasks import get_task
    from mmbench.training.trainer import TrainConfig, distributed_session
    from mmbench.training.trainer import train as run_train

    if fusion is None:
        if get_task(task).target.type != "retrieval":
            raise SpecError("give --fusion (see `mmbench fusions`)")
        fusion = "dual-encoder"
    base = baseline_config(task, fusion)
    if config:
        base |= yaml.safe_load(config.read_text()) or {}
    base |= _overrides(set_)
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
    with distributed_session(device) as dist:  # one process group for every seed under torchrun
        for cfg in cfgs:
            run_dir = out / task / fusion.replace(":", "-") / f"seed{cfg.seed}"
            result = run_train(cfg, run_dir, progress=not no_progress)
            if dist.is_main:
                metrics = " ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
                workers = f" on {dist.world} processes" if dist.active else ""
                typer.echo(f"{task} {fusion} seed {cfg.seed}{workers}: best epoch {result.best_epoch}, "
                           f"test {metrics}  -> {run_dir}")


@app.command()
def leaderboard(
    task: Optional[str] = typer.Argument(None, help="A task, or: verify, publish RUNS..., site."),
    runs: Optional[list[Path]] = typer.Argument(None, help="publish: reproduce output folders (--out) to publish."),
    fmt: str = typer.Option("table", "--format", help="table, md, csv, json or html."),
    board_dir: Path = typer.Option(Path("leaderboard"), "--dir", help="Board folder (default ./leaderboard)."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to a file instead of stdout."),
    only: list[str] = typer.Option([], "--task", help="publish: only these tasks' runs (repeatable)."),
    check: bool = typer.Option(False, "--check", help="site: write nothing; exit 1 if a page differs from the entries."),
) -> None:
    """Rank leaderboard entries by each task's primary metric. `leaderboard verify` recomputes
    every entry from its stored predictions; `leaderboard publish RUNS...` writes the finished
    runs of `reproduce` output folders as entries with their predictions; `leaderboard site`
    writes the board's static pages (index.html and one page per task)."""
    if task == "verify":
        from mmbench.cli.evaluate import verify_command

        return verify_command(board_dir)
    if task in ("publish", "site"):
        from mmbench.cli.board import publish_command, site_command

        return publish_command(runs or [], board_dir, only) if task == "publish" else site_command(board_dir, check)
    if runs:
        from mmbench.core.errors import MMBenchError

        raise MMBenchError(f"unexpected argument {str(runs[0])!r} (only `leaderboard publish` takes folders)")
    from mmbench.core.errors import MMBenchError
    from mmbench.core.io import atomic_write_text
    from mmbench.board.entries import load_entries, rank, render

    if fmt not in ("table", "md", "csv", "json", "html"):
        raise MMBenchError(f"--format must be table, md, csv, json or html, not {fmt!r}")
    rows = rank(load_entries(board_dir, task))
    if not rows:
        raise MMBenchError(f"no leaderboard entries{' for ' + task if task else ''} in {board_dir}")
    if fmt == "html":
        from mmbench.board.report import render_leaderboard_html

        text = render_leaderboard_html(rows)
    else:
        text = render(rows, fmt)
    if fmt in ("table", "md"):
        from mmbench.board.published import load_published, published_rows, render_published

        published = published_rows(load_published(board_dir, task))
        if published:
            text += "\n\n" + render_published(published)
    if out:
        atomic_write_text(out, text)
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text)


@app.command()
def reproduce(
    suite: str = typer.Option("quick", "--suite", help="quick or full (see baselines/suites.yaml)."),
    tasks_: list[str] = typer.Option([], "--tasks", help="Restrict to these tasks (repeatable)."),
    fusions_: list[str] = typer.Option([], "--fusions", help="Restrict to these fusions (repeatable)."),
    seeds: list[int] = typer.Option([], "--seeds", help="Use these seeds (repeatable)."),
    device: str = typer.Option("auto", "--device"),
    out: Path = typer.Option(Path("runs"), "--out"),
    board_dir: Path = typer.Option(Path("leaderboard"), "--leaderboard"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    set_: list[str] = typer.Option([], "--set", help="Override a config field for every run: key=value."),
    no_progress: bool = typer.Option(False, "--no-progress"),
    write_reference: Optional[Path] = typer.Option(
        None, "--write-reference", help="Record this run's mean/std per metric as the reference in this JSON file."),
    threads: int = typer.Option(1, "--threads", help="CPU threads for torch (the baselines are small: one thread "
                                "avoids thread start-up costs that dominate on small CPUs; raise it for big models)."),
    report: Optional[Path] = typer.Option(
        None, "--report", help="Report of this grid with its reference checks (.html or .md); default OUT/report.html."),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Keep runs in OUT that finished with the same config and data (their "
        "result.json); train only the rest. --no-resume trains every run again."),
    vectorize: Optional[bool] = typer.Option(
        None, "--vectorize/--one-by-one", help="Train a baseline's seeds all at once (vmapped over the seeds) or one "
        "after the other; default: at once on CUDA, one by one elsewhere."),
) -> None:
    """Train, evaluate and rank a suite of baselines; check each against the measured reference."""
    import torch

    torch.set_num_threads(max(1, threads))
    from mmbench.board.entries import load_entries, rank, render
    from mmbench.reproduce import load_suite, run_grid

    s = load_suite(suite)
    t = tasks_ or s["tasks"]
    f = fusions_ or s["fusions"]
    sd = seeds or s["seeds"]
    typer.echo(f"reproducing suite {suite}: {len(t)} tasks x {len(f)} fusions x {len(sd)} seeds")
    results, checks = run_grid(t, f, sd, out, board_dir, device, str(data_dir) if data_dir else None,
                               _overrides(set_), progress=not no_progress, log=typer.echo, vectorize=vectorize,
                               resume=resume)
    typer.echo("")
    entries = [e for e in load_entries(board_dir) if e.task in t]
    typer.echo(render(rank(entries), "table"))
    if write_reference:
        from mmbench.core.io import atomic_write_json
        from mmbench.reproduce import merge_reference, reference_from_results
        from mmbench.evaluation.results import hardware_info

        hw = hardware_info(device if device != "auto" else None)
        label = f"{hw.get('gpu') or hw['cpu']} ({hw['cpu_count']} cores), torch {hw.get('torch')}"
        ref = reference_from_results(results, label, note=f"mmbench reproduce --suite {suite}, seeds {sd}")
        atomic_write_json(write_reference, merge_reference(write_reference, ref))
        typer.echo(f"wrote the reference for {len(results)} runs to {write_reference}")
    typer.echo("reference check (mean over seeds vs baselines/reference.json; band: 3 standard errors of the "
               "difference of the two means):")
    for c in checks:
        ref = f"{c.reference:.4f} ± {c.reference_std:.4f}" if c.reference is not None else "-"
        band = f"band ±{c.band:.4f}" if c.band is not None else ""
        mean = "-     " if c.error is not None else f"{c.mean:.4f}"
        typer.echo(f"  {c.task:<22} {c.fusion:<12} {c.metric:<14} {mean}  ref {ref:<18} {band:<13} {c.verdict}")
    from mmbench.board.report import write_results_report
    from mmbench.reproduce import failed_checks, run_folder

    if results:
        runs = sorted({str(run_folder(out, r.task, r.name, r.seed)) for r in results})
        path = write_results_report(results, report or out / "report.html", f"mmbench reproduce --suite {suite}", runs,
                                    checks=checks)
        typer.echo(f"wrote {path}")
    failed = failed_checks(checks)
    if failed:  # the other rows ran and are written; the exit status says the grid is incomplete
        from mmbench.core.errors import MMBenchError

        for c in failed:
            typer.echo(f"failed: {c.task} {c.fusion}: {c.error}", err=True)
        raise MMBenchError(f"{len(failed)} of {len(t) * len(f)} (task, fusion) rows failed (listed above)")


def _register_extensions() -> None:
    """Commands defined in their own modules (each has `register(app)`); typer only at import."""
    import importlib

    for module in ("mmbench.cli.evaluate", "mmbench.cli.report"):
        importlib.import_module(module).register(app)


_register_extensions()


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one plain line (Python's default adds the source file and line). Replacing
    the format, not `warnings.showwarning`, leaves `warnings.catch_warnings(record=True)` working."""
    return "warning: " + " ".join(str(message).split()) + "\n"


def main() -> None:
    import warnings

    from mmbench.core.errors import MMBenchError

    debug = "--debug" in sys.argv[1:]
    if not debug:
        warnings.formatwarning = _format_warning
    try:
        app(standalone_mode=False)
    except MMBenchError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors and anything unexpected
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(1)

