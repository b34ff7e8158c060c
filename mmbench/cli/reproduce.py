"""`mmbench reproduce --suite NAME`: train, evaluate and rank a grid of baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmbench.cli.common import (ADDRESS, EXECUTOR, GPUS_PER_RUN, MAX_RETRIES, MEMORY_PER_RUN, WORKERS, executor_from,
                                overrides)


def suite_names() -> list[str]:
    """The suites of baselines/suites.yaml, read as its top-level keys (no YAML import: this
    runs for `mmbench --help`)."""
    import re

    from mmbench.core.io import builtin_dir

    try:
        text = (builtin_dir("baselines") / "suites.yaml").read_text(encoding="utf-8")
    except OSError:
        return []
    return re.findall(r"^([A-Za-z0-9_.-]+):", text, flags=re.M)


def reproduce(
    suite: str = typer.Option("quick", "--suite", help=f"One of {', '.join(suite_names())} (baselines/suites.yaml "
                              "names each one's tasks, fusions and seeds)."),
    tasks_: list[str] = typer.Option([], "--tasks", help="Restrict to these tasks (repeatable; a name or a task spec .yaml file)."),
    fusions_: list[str] = typer.Option([], "--fusions", help="Restrict to these fusions (repeatable)."),
    seeds: list[int] = typer.Option([], "--seeds", help="Use these seeds (repeatable)."),
    device: str = typer.Option("auto", "--device"),
    out: Path = typer.Option(Path("runs"), "--out"),
    board_dir: Optional[Path] = typer.Option(
        None, "--leaderboard", help="Folder for this grid's leaderboard entries; default OUT/leaderboard, so a run never "
        "rewrites the board shipped in ./leaderboard (name that folder to add to it on purpose)."),
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
    executor: str = EXECUTOR,
    address: Optional[str] = ADDRESS,
    workers: Optional[int] = WORKERS,
    gpus_per_run: Optional[float] = GPUS_PER_RUN,
    memory_per_run: Optional[float] = MEMORY_PER_RUN,
    max_retries: int = MAX_RETRIES,
) -> None:
    """Train, evaluate and rank a suite of baselines; check each against the measured reference."""
    import torch

    torch.set_num_threads(max(1, threads))
    from mmbench.board.entries import load_entries, rank, render
    from mmbench.reproduce import load_suite, run_grid

    from mmbench.data.tasks import get_task

    runner = executor_from(executor, address, workers, threads, device, gpus_per_run, memory_per_run, max_retries)
    s = load_suite(suite)
    t = [get_task(x).name for x in tasks_] or s["tasks"]  # a spec file is known by its name from here on
    f = fusions_ or s["fusions"]
    sd = seeds or s["seeds"]
    if "modality_dropout" in s:  # the train/test mismatch grid
        return _mismatch(s, suite, t, f, sd, out, device, data_dir, set_, no_progress, report, resume, vectorize,
                         write_reference)
    board_dir = board_dir or out / "leaderboard"
    typer.echo(f"reproducing suite {suite}: {len(t)} tasks x {len(f)} fusions x {len(sd)} seeds")
    results, checks = run_grid(t, f, sd, out, board_dir, device, str(data_dir) if data_dir else None,
                               overrides(set_), progress=not no_progress, log=typer.echo, vectorize=vectorize,
                               resume=resume, executor=runner, threads=threads)
    typer.echo("")
    entries = [e for e in load_entries(board_dir) if e.task in t]
    typer.echo(render(rank(entries), "table"))
    if write_reference:
        _write_reference(write_reference, results, device, suite, sd)
    _print_checks(checks)
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


def _write_reference(path: Path, results: list, device: str, suite: str, seeds: list[int]) -> None:
    """Record the grid's mean/std per metric as the reference in the JSON file at `path`."""
    from mmbench.core.io import atomic_write_json
    from mmbench.evaluation.results import hardware_info
    from mmbench.reproduce import merge_reference, reference_from_results

    hw = hardware_info(device if device != "auto" else None)
    label = f"{hw.get('gpu') or hw['cpu']} ({hw['cpu_count']} cores), torch {hw.get('torch')}"
    ref = reference_from_results(results, label, note=f"mmbench reproduce --suite {suite}, seeds {seeds}")
    atomic_write_json(path, merge_reference(path, ref))
    typer.echo(f"wrote the reference for {len(results)} runs to {path}")


def _print_checks(checks: list) -> None:
    typer.echo("reference check (mean over seeds vs baselines/reference.json; band: 3 standard errors of the "
               "difference of the two means):")
    for c in checks:
        ref = f"{c.reference:.4f} ± {c.reference_std:.4f}" if c.reference is not None else "-"
        band = f"band ±{c.band:.4f}" if c.band is not None else ""
        mean = "-     " if c.error is not None else f"{c.mean:.4f}"
        typer.echo(f"  {c.task:<22} {c.fusion:<12} {c.metric:<14} {mean}  ref {ref:<18} {band:<13} {c.verdict}")


def _mismatch(s: dict, suite: str, tasks: list[str], fusions: list[str], seeds: list[int], out: Path, device: str,
              data_dir: Optional[Path], set_: list[str], no_progress: bool, report: Optional[Path], resume: bool,
              vectorize: Optional[bool], write_reference: Optional[Path]) -> None:
    """``reproduce --suite mismatch``: the grid, then the p_train x p_test matrix per fusion and
    its tests, printed and written to OUT/mismatch.md (or --report .md) and OUT/mismatch.json."""
    import json

    from mmbench.board.mismatch import mismatch_matrices, mismatch_report
    from mmbench.core.errors import MMBenchError
    from mmbench.core.io import atomic_write_json, atomic_write_text
    from mmbench.reproduce import MISMATCH_TEST_RATES, failed_checks, run_mismatch

    dropouts = [float(p) for p in s["modality_dropout"]]
    rates = [float(r) for r in s.get("test_rates", MISMATCH_TEST_RATES)]
    typer.echo(f"reproducing suite {suite}: {len(tasks)} tasks x {len(fusions)} fusions x {len(dropouts)} modality "
               f"dropouts x {len(seeds)} seeds, tested at {len(rates)} missing rates")
    results, checks = run_mismatch(tasks, fusions, seeds, dropouts, rates, out, device, str(data_dir) if data_dir else None,
                                   overrides(set_), progress=not no_progress, log=typer.echo, vectorize=vectorize,
                                   resume=resume)
    from mmbench.board.entries import load_entries

    # the entries (not the run records) name their stored per-condition predictions
    wanted = {(r.task, r.name, r.seed) for r in results}
    entries = [e for e in load_entries(out / "leaderboard") if (e.task, e.name, e.seed) in wanted]
    matrices = mismatch_matrices(entries, out / "leaderboard")
    text = mismatch_report(matrices, f"mmbench reproduce --suite {suite}")
    typer.echo("\n" + text)
    path = report if report is not None and report.suffix == ".md" else out / "mismatch.md"
    atomic_write_text(path, text)
    atomic_write_json(out / "mismatch.json", json.loads(json.dumps([m.to_json() for m in matrices])))
    typer.echo(f"wrote {path} and {out / 'mismatch.json'}")
    if write_reference:
        _write_reference(write_reference, results, device, suite, seeds)
    _print_checks(checks)
    failed = failed_checks(checks)
    if failed:
        for c in failed:
            typer.echo(f"failed: {c.task} {c.fusion}: {c.error}", err=True)
        raise MMBenchError(f"{len(failed)} of {len(tasks) * len(fusions) * len(dropouts)} (task, fusion, dropout) rows "
                           "failed (listed above)")


def register(app: typer.Typer) -> None:
    app.command()(reproduce)
