"""Train, evaluate and rank a grid of baselines (tasks x fusions x seeds) from `baselines/`.

`baselines/suites.yaml` names each suite's tasks, fusions and seeds; a
`baselines/<task>__<fusion>.yaml` file holds that pair's training config (any missing pair
uses `baselines/<task>.yaml` or the TrainConfig defaults); `baselines/reference.json` holds
the measured reference (mean and std over seeds per metric) that reproductions are checked
against.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from mmbench.core.errors import MMBenchError, SpecError
from mmbench.data.tasks import builtin_dir, get_task


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}".replace("\n", " "), path) from None


def baselines_dir() -> Path:
    return builtin_dir("baselines")


def config_file(name_or_path: str | Path, root: Path | None = None) -> Path:
    """A training config: the file if it exists, else the built-in baseline config of that name
    (``mosi``, ``mosi.yaml`` or ``baselines/mosi.yaml`` all name one), so a
    wheel install, which has no ``baselines/`` folder, finds the configs it ships."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    root = root or baselines_dir()
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    if (root / f"{stem}.yaml").is_file():
        return root / f"{stem}.yaml"
    from mmbench.core.registry import nearest

    known = [p.stem for p in root.glob("*.yaml") if p.stem != "suites"]
    raise SpecError(f"config not found: not a file, nor a built-in baseline config{nearest(stem, known)}", path)


def load_suite(name: str, root: Path | None = None) -> dict[str, Any]:
    root = root or baselines_dir()
    suites = _read_yaml(root / "suites.yaml") or {}
    if name not in suites:
        raise MMBenchError(f"unknown suite {name!r}; known: {', '.join(sorted(suites))}")
    suite = suites[name]
    for key in ("tasks", "fusions", "seeds") + tuple(k for k in ("modality_dropout", "test_rates") if k in suite):
        if not isinstance(suite.get(key), list) or not suite[key]:
            raise SpecError(f"suite {name!r}: field {key!r} must be a non-empty list", root / "suites.yaml")
    return suite


def baseline_config(task: str, fusion: str, root: Path | None = None) -> dict[str, Any]:
    """Training config for (task, fusion): task-level defaults overlaid by the pair's file."""
    root = root or baselines_dir()
    cfg: dict[str, Any] = {}
    for path in (root / f"{task}.yaml", root / f"{task}__{fusion.replace(':', '-')}.yaml"):
        if path.exists():
            cfg |= _read_yaml(path) or {}
    cfg.update(task=task, fusion=fusion.split(":")[0])
    if ":" in fusion:  # unimodal:<modality>
        cfg["fusion_options"] = cfg.get("fusion_options", {}) | {"modality": fusion.split(":", 1)[1]}
    return cfg


def load_reference(root: Path | None = None) -> dict[str, Any]:
    path = (root or baselines_dir()) / "reference.json"
    return json.loads(path.read_text()) if path.exists() else {}


@dataclass
class Check:
    task: str
    fusion: str
    metric: str
    mean: float
    reference: float | None
    reference_std: float | None
    ok: bool | None
    band: float | None = None  # |mean - reference| allowed (see `tolerance`)
    error: str | None = None  # the (task, fusion) failed: its one-line error; mean is NaN
    other_data: bool = False  # a reference exists, measured on data of another construction

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return f"FAILED: {self.error}"
        if self.ok is None:
            return "no reference for this construction" if self.other_data else "no reference"
        return "reproduces" if self.ok else "DIFFERS"


def one_line_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (what a grid prints for a failed row)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def failed_checks(checks: list[Check]) -> list[Check]:
    """One check per (task, fusion) that failed, in grid order."""
    seen: dict[tuple[str, str], Check] = {}
    for c in checks:
        if c.error is not None:
            seen.setdefault((c.task, c.fusion), c)
    return list(seen.values())


def tolerance(ref_std: float, ref_n: int, new_std: float | None, new_n: int) -> float:
    """Agreement band for (new mean - reference mean): 3 standard errors of that difference,
    ``3 * s * sqrt(1/ref_n + 1/new_n)`` with ``s`` the pooled standard deviation of the two
    sets of seeds (both are draws of one distribution when the run reproduces; a single new
    seed brings no spread of its own and ``s`` is the reference's). Both means are uncertain:
    a band of 3 reference spreads over sqrt(new seeds) alone flags 10% of faithful 5-seed
    reruns (simulated, normal seeds); this one 1.7% (Student's t, 8 degrees of freedom).
    Never below 0.01 (one point), so a near-zero spread is not a coin toss."""
    ref_n, new_n = max(int(ref_n), 1), max(int(new_n), 1)
    if new_std is None or new_n < 2 or ref_n < 2:
        pooled = ref_std
    else:
        pooled = math.sqrt(((ref_n - 1) * ref_std**2 + (new_n - 1) * new_std**2) / (ref_n + new_n - 2))
    return max(3.0 * pooled * math.sqrt(1.0 / ref_n + 1.0 / new_n), 0.01)


def check_against_reference(task: str, fusion: str, metric: str, values: list[float], reference: dict[str, Any],
                            dataset_fingerprint: str | None = None) -> Check:
    """``dataset_fingerprint``: the data the values were measured on. A reference that records
    another fingerprint for the task (``dataset_fingerprints``: the data was built another way,
    e.g. AV-MNIST's pairing) is not compared: the verdict says so."""
    mean = float(np.mean(values))
    # references are keyed by the result name, where "unimodal:audio" is written "unimodal-audio"
    by_fusion = reference.get("results", {}).get(task, {})
    ref = (by_fusion.get(fusion) or by_fusion.get(fusion.replace(":", "-")) or {}).get(metric)
    measured_on = reference.get("dataset_fingerprints", {}).get(task)
    if ref is not None and dataset_fingerprint and measured_on and measured_on != dataset_fingerprint:
        return Check(task, fusion, metric, mean, None, None, None, other_data=True)
    if ref is None:
        return Check(task, fusion, metric, mean, None, None, None)
    new_std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    band = tolerance(ref["std"], ref.get("n", 5), new_std, len(values))
    return Check(task, fusion, metric, mean, ref["mean"], ref["std"], abs(mean - ref["mean"]) <= band, band)


@dataclass(frozen=True)
class GridRow:
    """One row of a grid: a fusion trained with these config overrides, its results named
    `name`, scored under the task's conditions or, when given, these (the mismatch grid)."""

    fusion: str
    overrides: dict[str, Any]
    name: str
    conditions: tuple[str, ...] | None = None


def run_grid(
    tasks: list[str],
    fusions: list[str],
    seeds: list[int],
    out_dir: str | Path = "runs",
    leaderboard_dir: str | Path | None = "leaderboard",
    device: str = "auto",
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    vectorize: bool | None = None,
    resume: bool = True,
    executor: Any = None,
    threads: int | None = None,
) -> tuple[list[Any], list[Check]]:
    """Train every (task, fusion, seed), evaluate under the task's conditions, write result
    JSONs and leaderboard entries; return the results and the reference checks. The seeds of
    one (task, fusion) are trained by :func:`~mmbench.training.multiseed.train_seeds`:
    ``vectorize`` None picks all seeds at once on CUDA and one by one elsewhere. With
    ``resume``, a run folder that already holds a finished run of the same training config on
    the same data, made by the same code (its result.json; config.json's ``source``, the
    :func:`~mmbench.core.source.source_hash` of the package), is kept, not trained again, and
    a run trained one by one continues from its last checkpoint: an interrupted grid goes on
    where it stopped. Without it every run is trained from the start.

    ``executor`` (:mod:`mmbench.reproduce.executors`; default: this process) runs the jobs
    (:mod:`mmbench.reproduce.jobs`): with the local one, all remaining seeds of a (task,
    fusion) are one job, as before; with Ray, each seed is its own Ray task, or on a GPU with
    ``vectorize`` all seeds of the pair one task (trained vmapped together). Each job writes
    only its run folders; this function (the driver) writes every result.json and leaderboard
    entry as the jobs finish, so a driver killed mid-grid loses no finished run.

    A (task, fusion) that raises (bad config, a kernel error, out of memory, a worker that died
    on every try) does not stop the grid: it is logged and returned as a check per metric
    with ``error`` set (its one-line error), and the other rows still run; :func:`failed_checks`
    lists them."""
    check_grid_names(tasks, fusions)  # a typo fails once, before any work, not once per row
    rows = [GridRow(fusion, overrides or {}, fusion.replace(":", "-")) for fusion in fusions]
    return run_rows(tasks, rows, seeds, out_dir, leaderboard_dir, device, data_dir, progress, log, vectorize, resume,
                    executor, threads)


def run_rows(tasks: list[str], rows: list[GridRow], seeds: list[int], out_dir: str | Path = "runs",
             leaderboard_dir: str | Path | None = "leaderboard", device: str = "auto", data_dir: str | None = None,
             progress: bool = True, log: Callable[[str], None] = print, vectorize: bool | None = None,
             resume: bool = True, executor: Any = None, threads: int | None = None) -> tuple[list[Any], list[Check]]:
    """:func:`run_grid` over explicit rows (each its overrides, result name and conditions)."""
    from mmbench.board.publish import publish_run
    from mmbench.core.io import atomic_write_json
    from mmbench.reproduce.executors import LocalExecutor
    from mmbench.reproduce.jobs import task_data

    if not seeds:
        raise MMBenchError("reproduce needs at least one seed")
    executor = executor or LocalExecutor()
    reference = load_reference()
    per_pair: dict[tuple[int, int], dict[int, Any]] = {}
    errors: dict[tuple[int, int], str] = {}  # (task, row) position -> its one-line error
    fingerprints: dict[str, str] = {}
    metrics: dict[str, list[str]] = {}
    jobs = []
    for ti, task in enumerate(tasks):
        try:
            options = rows[0].overrides.get("dataset_options") if rows else None
            spec, dataset, _ = task_data(task, options, data_dir, splits=False)
            fingerprints[task], metrics[task] = dataset.fingerprint(), [m.name for m in spec.metrics]
        except Exception as exc:  # noqa: BLE001 - recorded; the other tasks still run
            with contextlib.suppress(Exception):  # a known task's metric names, for its failed rows
                metrics[task] = [m.name for m in get_task(task).metrics]
            for fi, row in enumerate(rows):
                errors[(ti, fi)] = _log_failure(task, row.name, exc, log)
            continue
        for fi, row in enumerate(rows):
            try:
                kept, todo = _plan_pair(task, row, seeds, fingerprints[task], out_dir, device, data_dir, progress,
                                        vectorize, resume, executor.name, threads, (ti, fi))
            except Exception as exc:  # noqa: BLE001 - recorded; the other rows still run
                errors[(ti, fi)] = _log_failure(task, row.name, exc, log)
                continue
            per_pair[(ti, fi)] = {}
            for seed, (run_dir, result) in kept.items():
                per_pair[(ti, fi)][seed] = result
                if leaderboard_dir:
                    publish_run(leaderboard_dir, run_dir, result)
                log(f"{task:>22} {row.name:>12} seed {seed}: {spec.primary_metric} {result.primary_clean:.4f} "
                    f"(kept: {run_dir} finished with this config, data and code)")
            jobs += todo
    for job, value in executor.run(_run_job, jobs, label=lambda j: j.label):
        key = job.order
        if isinstance(value, BaseException):
            if key not in errors:
                errors[key] = _log_failure(job.task, job.name, value, log)
            continue
        for seed, result, note in value:  # the driver alone writes results and entries
            run_dir = Path(job.run_dirs[job.seeds.index(seed)])
            atomic_write_json(run_dir / "result.json", result.to_json())
            if leaderboard_dir:
                publish_run(leaderboard_dir, run_dir, result)
            per_pair.setdefault(key, {})[seed] = result
            log(f"{job.task:>22} {job.name:>12} seed {seed}: {result.primary_metric} {result.primary_clean:.4f} ({note})")
    results, checks = [], []
    for ti, task in enumerate(tasks):
        for fi, row in enumerate(rows):
            if (ti, fi) in errors:
                checks += [Check(task, row.name, m, math.nan, None, None, False, error=errors[(ti, fi)])
                           for m in metrics.get(task, ["-"])]
                continue
            per_seed = [per_pair[(ti, fi)][s] for s in seeds]
            results += per_seed
            for metric in metrics[task]:
                checks.append(check_against_reference(task, row.name, metric, [r.metrics["clean"][metric] for r in per_seed],
                                                      reference, fingerprints[task]))
    return results, checks


MISMATCH_TEST_RATES = tuple(round(0.1 * i, 1) for i in range(10))  # 0 (clean) to 0.9, LNLN's sweep


def run_mismatch(
    tasks: list[str],
    fusions: list[str],
    seeds: list[int],
    dropouts: list[float],
    test_rates: list[float] = MISMATCH_TEST_RATES,
    out_dir: str | Path = "runs",
    device: str = "auto",
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    vectorize: bool | None = None,
    resume: bool = True,
) -> tuple[list[Any], list[Check]]:
    """The train/test mismatch grid (``reproduce --suite mismatch``): every (task, fusion) trained
    with each modality dropout in ``dropouts`` (``modality_dropout`` of the training config) for
    every seed, and evaluated at the clean test set and every missing rate of ``test_rates``.
    Results are named ``<fusion>-pdrop<p>`` (:func:`mmbench.board.mismatch.mismatch_name`) and
    written as entries, with their per-condition predictions, to ``OUT/leaderboard``; the matrix
    and its tests are :func:`mmbench.board.mismatch.mismatch_matrices`. Each (task, fusion,
    dropout)'s clean metrics are checked against ``baselines/reference.json`` under the result
    name; a failing row is logged and returned as a failed check, as in :func:`run_grid`."""
    from mmbench.board.mismatch import mismatch_name

    if not seeds or not dropouts:
        raise MMBenchError("the mismatch grid needs at least one seed and one modality dropout")
    bad = [p for p in dropouts if not 0.0 <= float(p) < 1.0]
    if bad:
        raise MMBenchError(f"modality dropout must be in [0, 1), got {bad[0]}")
    check_grid_names(tasks, fusions)
    conditions = tuple(["clean"] + [f"rate:{r:g}" for r in sorted(set(test_rates)) if r > 0])
    rows = [GridRow(fusion, (overrides or {}) | {"modality_dropout": float(p)}, mismatch_name(fusion, float(p)), conditions)
            for fusion in fusions for p in dropouts]
    return run_rows(tasks, rows, seeds, out_dir, Path(out_dir) / "leaderboard", device, data_dir, progress, log,
                    vectorize, resume)


def check_grid_names(tasks: list[str], fusions: list[str]) -> None:
    """Refuse an unknown task, fusion or ``unimodal:<modality>`` in one line naming the nearest
    known name. ``dual-encoder`` is the retrieval tasks' model."""
    from mmbench.core.registry import FUSIONS, unknown_name

    specs = [get_task(t) for t in tasks]
    for fusion in fusions:
        base, _, modality = fusion.partition(":")
        if base == "dual-encoder":
            continue
        FUSIONS.get(base)  # raises "unknown fusion 'concatt'; did you mean 'concat'?"
        if modality:
            known = sorted({m for spec in specs for m in spec.modalities})
            missing = [spec.name for spec in specs if modality not in spec.modalities]
            if missing:
                raise SpecError(f"--fusions {fusion}: " + unknown_name("modality", modality, known)
                                + f" (not a modality of {', '.join(missing)})")


def _run_job(job: Any) -> Any:
    """The executors' function (module level: Ray pickles it by reference)."""
    from mmbench.reproduce.jobs import run_job

    return run_job(job)


def _log_failure(task: str, fusion: str, exc: BaseException, log: Callable[[str], None]) -> str:
    """Log a failed (task, fusion) row; its one-line error."""
    error = one_line_error(exc)
    log(f"{task:>22} {fusion:>12} FAILED: {error}")
    try:  # a failure on a GPU (out of memory, a kernel error) leaves cached blocks behind
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - the failure is already recorded
        pass
    return error


def _plan_pair(task, row, seeds, fingerprint, out_dir, device, data_dir, progress, vectorize, resume,
               executor, threads, order) -> tuple[dict[int, tuple[Path, Any]], list[Any]]:
    """The kept runs ``{seed: (run folder, Result)}`` of one (task, row) and the jobs that
    train the others: one job of all of them in this process (trained one by one, or vmapped);
    on Ray one job per seed, or one of all of them when they are trained vmapped (a GPU)."""
    from mmbench.reproduce.jobs import RunJob
    from mmbench.training.trainer import TrainConfig

    cfg_dict = baseline_config(task, row.fusion) | row.overrides | {"seed": seeds[0], "device": device}
    if data_dir:
        cfg_dict["data_dir"] = data_dir
    cfg = TrainConfig.from_dict(cfg_dict)
    run_dirs = {seed: run_folder(out_dir, task, row.name, seed) for seed in seeds}
    kept = {seed: (run_dirs[seed], r) for seed in seeds
            if resume and (r := finished_run(run_dirs[seed], replace(cfg, seed=seed), row.name, fingerprint,
                                             row.conditions)) is not None}
    todo = [seed for seed in seeds if seed not in kept]
    if not todo:
        return kept, []
    from mmbench.models.checkpoint import resolve_device

    together = executor == "local" or (vectorize if vectorize is not None else resolve_device(device).type == "cuda")
    groups = [todo] if together else [[s] for s in todo]
    options = row.overrides.get("dataset_options")
    # on Ray, absolute folders: a worker on another node (or in another working directory) writes the same place
    where = (lambda p: str(Path(p))) if executor == "local" else (lambda p: str(Path(p).absolute()))  # noqa: E731
    jobs = [RunJob(task, row.fusion, tuple(g), cfg.to_dict() | {"seed": g[0]}, tuple(where(run_dirs[s]) for s in g),
                   where(data_dir) if data_dir else None,
                   options, vectorize, resume, progress if executor == "local" else False,
                   threads if executor != "local" else None, order, row.name, row.conditions) for g in groups]
    return kept, jobs


def write_run_result(spec: Any, trained: Any, dataset: Any, test_split: Any, run_dir: Path, name: str,
                     data_dir: Any = None, train_targets: Any = None) -> Any:
    """Score a trained run on the test split under every condition of the task and write
    `run_dir`/result.json with its test predictions beside it: what `report`, `leaderboard
    publish` and `--resume` read. The same for a run of `mmbench train` and one of a grid."""
    from mmbench.core.io import atomic_write_json

    result = score_run(spec, trained, dataset, test_split, run_dir, name, data_dir, train_targets)
    atomic_write_json(Path(run_dir) / "result.json", result.to_json())
    return result


def score_run(spec: Any, trained: Any, dataset: Any, test_split: Any, run_dir: str | Path, name: str,
              data_dir: Any = None, train_targets: Any = None) -> Any:
    """Score a trained run on the test split under every condition of the task; its test
    predictions file is written into `run_dir` (the run's own folder) and its Result returned
    (the driver of a grid writes result.json). With `train_targets`, the result records the
    training split's majority (the board's majority reference point)."""
    from mmbench.board.publish import attach_run_predictions
    from mmbench.evaluation.evaluator import evaluate_trained, with_test_set
    from mmbench.evaluation.reference_points import with_training_majority

    test_predictions: dict[str, Any] = {}
    result = with_test_set(evaluate_trained(spec, trained, test_split, dataset.fingerprint(), name=name,
                                            keep_predictions=test_predictions), spec, dataset=dataset, loaded=test_split)
    if spec.target.type == "retrieval":  # the test embeddings, with the gallery's ids
        test_predictions |= gallery_ids(spec, dataset, data_dir, test_split)
    result = attach_run_predictions(run_dir, result, test_split.ids, test_predictions)
    return with_training_majority(result, spec, train_targets) if train_targets is not None else result


def gallery_ids(spec: Any, dataset: Any, data_dir: Any, test_split: Any) -> dict[str, list[str]]:
    """``image_ids`` and ``caption_ids`` of a retrieval task's test gallery, the order
    :func:`~mmbench.evaluation.evaluator.embed_gallery` embeds it in (checked against the split)."""
    from mmbench.evaluation.retrieval_scoring import retrieval_gallery

    image_ids, caption_ids, index, _ = retrieval_gallery(spec, data_dir, dataset)
    if not np.array_equal(index, test_split.targets.cpu().numpy()):
        raise MMBenchError(f"task {spec.name!r}: the test split does not match its retrieval gallery")
    return {"image_ids": image_ids, "caption_ids": caption_ids}


def run_folder(out_dir: str | Path, task: str, name: str, seed: int) -> Path:
    """Where `run_grid` writes the run of (task, result name, seed)."""
    return Path(out_dir) / task / name / f"seed{seed}"


def finished_run(run_dir: Path, cfg: Any, name: str, dataset_fingerprint: str,
                 conditions: tuple[str, ...] | None = None) -> Any:
    """The Result in `run_dir`/result.json when that run finished with training config `cfg`
    (its config.json) under result name `name` on the data with this fingerprint, made by the
    code that runs now (config.json's ``source``: the package's source hash); else None.
    A config.json newer than the result belongs to a run started later (and cut short): the
    result is then stale."""
    from pydantic import ValidationError

    from mmbench.evaluation.results import Result

    from mmbench.core.source import source_hash

    try:  # fields added to the config since the run was written take their defaults
        saved = json.loads((run_dir / "config.json").read_text())
        trained_with = type(cfg).from_dict(saved["train"]).to_dict()
        result = Result.model_validate_json((run_dir / "result.json").read_text())
        in_order = (run_dir / "result.json").stat().st_mtime_ns >= (run_dir / "config.json").stat().st_mtime_ns
    except (OSError, ValueError, KeyError, TypeError, ValidationError, MMBenchError):
        return None
    as_json = lambda d: json.loads(json.dumps(d))  # noqa: E731 - tuples and lists alike
    same = (in_order and saved.get("source") == source_hash() and as_json(trained_with) == as_json(cfg.to_dict())
            and result.name == name and result.dataset_fingerprint == dataset_fingerprint and scored_as_now(result, cfg.task, conditions))
    return result if same else None


def scored_as_now(result: Any, task: str, conditions: tuple[str, ...] | None = None) -> bool:
    """Whether `result` was scored under the current masks protocol and covers the task's
    conditions as they are now, or `conditions` when given (a result made before either
    changed is run again)."""
    from mmbench.data.masks import MASKS_PROTOCOL
    from mmbench.data.tasks import get_task

    if result.masks_protocol != MASKS_PROTOCOL:
        return False
    covered = set(result.metrics) | set(result.extra.get("condition_aliases", {}))
    try:
        wanted = set(conditions) if conditions else {c.name for c in get_task(task).conditions()}
    except MMBenchError:
        return False
    return get_task(task).target.type == "retrieval" or wanted <= covered


def merge_reference(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """`new` overlaid on the reference file at `path` (task/fusion pairs not re-measured are kept)."""
    old = json.loads(path.read_text()) if path.exists() else {"results": {}}
    merged = {**old, **{k: v for k, v in new.items() if k not in ("results", "dataset_fingerprints")},
              "results": dict(old.get("results", {}))}
    fingerprints = dict(old.get("dataset_fingerprints", {}))
    for task, fusions in new["results"].items():
        new_fp = new.get("dataset_fingerprints", {}).get(task)
        if new_fp and fingerprints.get(task) not in (None, new_fp):
            merged["results"][task] = {}  # re-measured on other data: the old figures no longer apply
        merged["results"].setdefault(task, {}).update(fusions)
        if new_fp:
            fingerprints[task] = new_fp
    if fingerprints:
        merged["dataset_fingerprints"] = fingerprints
    return merged


def reference_from_results(results: list[Any], hardware: str, note: str = "") -> dict[str, Any]:
    """The reference.json body (mean and sample std over seeds per metric) from a grid's results."""
    from mmbench import __version__

    grouped: dict[str, dict[str, dict[str, list[float]]]] = {}
    fingerprints = {r.task: r.dataset_fingerprint for r in results}
    for r in results:
        for metric, value in r.metrics["clean"].items():
            grouped.setdefault(r.task, {}).setdefault(r.name, {}).setdefault(metric, []).append(value)
    body: dict[str, Any] = {}
    for task, fus in grouped.items():
        for fusion, metrics in fus.items():
            body.setdefault(task, {})[fusion] = {
                m: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
                for m, v in metrics.items()
            }
    for task, fus in body.items():
        for fusion, metrics in fus.items():
            for stats in metrics.values():
                stats.update({"hardware": hardware, "mmbench_version": __version__})
    return {"mmbench_version": __version__, "note": note, "results": body, "dataset_fingerprints": fingerprints}
