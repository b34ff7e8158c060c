"""Train, evaluate and rank a grid of baselines (tasks x fusions x seeds) from `baselines/`.

`baselines/suites.yaml` names each suite's tasks, fusions and seeds; a
`baselines/<task>__<fusion>.yaml` file holds that pair's training config (any missing pair
uses `baselines/<task>.yaml` or the TrainConfig defaults); `baselines/reference.json` holds
the measured reference (mean and std over seeds per metric) that reproductions are checked
against.
"""

from __future__ import annotations

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
    from mmbench.data.tasks import nearest

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
) -> tuple[list[Any], list[Check]]:
    """Train every (task, fusion, seed), evaluate under the task's conditions, write result
    JSONs and leaderboard entries; return the results and the reference checks. The seeds of
    one (task, fusion) are trained by :func:`~mmbench.training.multiseed.train_seeds`:
    ``vectorize`` None picks all seeds at once on CUDA and one by one elsewhere. With
    ``resume``, a run folder that already holds a finished run of the same training config on
    the same data (its result.json) is kept, not trained again, and a run trained one by one
    continues from its last checkpoint: an interrupted grid goes on where it stopped. Without
    it every run is trained from the start.

    A (task, fusion) that raises (bad config, a kernel error, out of memory) does not stop the
    grid: it is logged and returned as a check per metric with ``error`` set (its one-line
    error), and the other rows still run; :func:`failed_checks` lists them."""
    from mmbench.data.splits import with_dataset_options

    if not seeds:
        raise MMBenchError("reproduce needs at least one seed")
    reference = load_reference()
    results, checks = [], []
    for task in tasks:
        spec = with_dataset_options(get_task(task), (overrides or {}).get("dataset_options"))
        dataset, splits, failed = _task_data(spec, task, fusions, data_dir, log)
        if failed:
            checks += failed
            continue
        for fusion in fusions:
            try:
                per_seed = _run_pair(spec, task, fusion, seeds, dataset, splits, out_dir, leaderboard_dir, device, data_dir,
                                     overrides, progress, log, vectorize, resume)
            except Exception as exc:  # noqa: BLE001 - recorded; the other rows still run
                checks += _failed(spec, task, fusion, exc, log)
                continue
            results += per_seed
            for metric in [m.name for m in spec.metrics]:
                checks.append(check_against_reference(task, fusion, metric, [r.metrics["clean"][metric] for r in per_seed],
                                                      reference, dataset.fingerprint()))
    return results, checks


MISMATCH_TEST_RATES = tuple(round(0.1 * i, 1) for i in range(10))  # 0 (clean) to 0.9, LNLN's sweep


def mismatch_spec(spec: Any, test_rates: list[float]) -> Any:
    """``spec`` evaluated at the clean test set and every ``rate:<r>`` of ``test_rates`` (0 = clean)."""
    conditions = ["clean"] + [f"rate:{r:g}" for r in sorted(set(test_rates)) if r > 0]
    return spec.model_copy(update={"missing": spec.missing.model_copy(update={"conditions": conditions})})


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
    from mmbench.data.splits import with_dataset_options

    if not seeds or not dropouts:
        raise MMBenchError("the mismatch grid needs at least one seed and one modality dropout")
    bad = [p for p in dropouts if not 0.0 <= float(p) < 1.0]
    if bad:
        raise MMBenchError(f"modality dropout must be in [0, 1), got {bad[0]}")
    leaderboard_dir = Path(out_dir) / "leaderboard"
    reference = load_reference()
    results, checks = [], []
    for task in tasks:
        spec = mismatch_spec(with_dataset_options(get_task(task), (overrides or {}).get("dataset_options")), test_rates)
        dataset, splits, failed = _task_data(spec, task, fusions, data_dir, log)
        if failed:
            checks += failed
            continue
        for fusion in fusions:
            for p in dropouts:
                name = mismatch_name(fusion, float(p))
                try:
                    per_seed = _run_pair(spec, task, fusion, seeds, dataset, splits, out_dir, leaderboard_dir, device,
                                         data_dir, (overrides or {}) | {"modality_dropout": float(p)}, progress, log,
                                         vectorize, resume, name=name)
                except Exception as exc:  # noqa: BLE001 - recorded; the other rows still run
                    checks += _failed(spec, task, name, exc, log)
                    continue
                results += per_seed
                checks += [check_against_reference(task, name, m.name, [r.metrics["clean"][m.name] for r in per_seed],
                                                   reference, dataset.fingerprint()) for m in spec.metrics]
    return results, checks


def _task_data(spec: Any, task: str, fusions: list[str], data_dir: str | None,
               log: Callable[[str], None]) -> tuple[Any, Any, list[Check]]:
    """(dataset, training splits, []) of a task; (None, None, one failed check per fusion and
    metric) when loading them raises, so that the other tasks still run."""
    from mmbench.data.splits import load_training_splits, task_dataset

    try:
        dataset = task_dataset(spec, data_dir)
        return dataset, load_training_splits(spec, data_dir, dataset), []
    except Exception as exc:  # noqa: BLE001 - recorded; the other tasks still run
        return None, None, [c for fusion in fusions for c in _failed(spec, task, fusion, exc, log)]


def _failed(spec: Any, task: str, fusion: str, exc: Exception, log: Callable[[str], None]) -> list[Check]:
    error = one_line_error(exc)
    log(f"{task:>22} {fusion:>12} FAILED: {error}")
    try:  # a failure on a GPU (out of memory, a kernel error) leaves cached blocks behind
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - the failure is already recorded
        pass
    return [Check(task, fusion, m.name, math.nan, None, None, False, error=error) for m in spec.metrics]


def _run_pair(spec, task, fusion, seeds, dataset, splits, out_dir, leaderboard_dir, device, data_dir, overrides, progress,
              log, vectorize, resume, name: str | None = None) -> list[Any]:
    """Train (or keep) and evaluate every seed of one (task, fusion); its results, in seed order.
    ``name``: the result name (default: the fusion's)."""
    from mmbench.evaluation.evaluator import evaluate_trained, with_test_set
    from mmbench.core.io import atomic_write_json
    from mmbench.board.publish import attach_run_predictions, publish_run
    from mmbench.training.multiseed import train_seeds
    from mmbench.training.trainer import TrainConfig

    from mmbench.evaluation.reference_points import with_training_majority

    per_seed = []
    cfg_dict = baseline_config(task, fusion) | (overrides or {}) | {"seed": seeds[0], "device": device}
    if data_dir:
        cfg_dict["data_dir"] = data_dir
    cfg = TrainConfig.from_dict(cfg_dict)
    name = name or fusion.replace(":", "-")
    run_dirs = {seed: run_folder(out_dir, task, name, seed) for seed in seeds}
    kept = {seed: r for seed in seeds if resume and (r := finished_run(run_dirs[seed], replace(cfg, seed=seed), name,
                                                                       dataset.fingerprint())) is not None}
    todo = [seed for seed in seeds if seed not in kept]
    # all seeds at once on a GPU (vectorised over the seeds), one by one on a CPU
    runs = dict(zip(todo, train_seeds(cfg, todo, splits=splits, out_dirs=[run_dirs[s] for s in todo],
                                      progress=progress, vectorize=vectorize, resume=resume))) if todo else {}
    for seed in seeds:
        if seed in kept:
            result = with_training_majority(kept[seed], spec, splits["train"].targets)
            note = f"kept: {run_dirs[seed]} finished with this config and data"
        else:
            trained = runs[seed]
            test_predictions: dict[str, Any] = {}
            result = with_test_set(evaluate_trained(spec, trained, splits["test"], dataset.fingerprint(), name=name,
                                                    keep_predictions=test_predictions), spec, dataset=dataset,
                                   loaded=splits["test"])
            if spec.target.type == "retrieval":  # the test embeddings, with the gallery's ids
                test_predictions |= gallery_ids(spec, dataset, data_dir, splits["test"])
            result = with_training_majority(attach_run_predictions(run_dirs[seed], result, splits["test"].ids,
                                                                   test_predictions), spec, splits["train"].targets)
            atomic_write_json(run_dirs[seed] / "result.json", result.to_json())
            note = f"{trained.seconds:.1f}s, best epoch {trained.best_epoch}"
        if leaderboard_dir:
            publish_run(leaderboard_dir, run_dirs[seed], result)
        per_seed.append(result)
        log(f"{task:>22} {name:>12} seed {seed}: {spec.primary_metric} {result.primary_clean:.4f} ({note})")
    return per_seed


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


def finished_run(run_dir: Path, cfg: Any, name: str, dataset_fingerprint: str) -> Any:
    """The Result in `run_dir`/result.json when that run finished with training config `cfg`
    (its config.json) under result name `name` on the data with this fingerprint; else None.
    A config.json newer than the result belongs to a run started later (and cut short): the
    result is then stale."""
    from pydantic import ValidationError

    from mmbench.evaluation.results import Result

    try:  # fields added to the config since the run was written take their defaults
        trained_with = type(cfg).from_dict(json.loads((run_dir / "config.json").read_text())["train"]).to_dict()
        result = Result.model_validate_json((run_dir / "result.json").read_text())
        in_order = (run_dir / "result.json").stat().st_mtime_ns >= (run_dir / "config.json").stat().st_mtime_ns
    except (OSError, ValueError, KeyError, TypeError, ValidationError, MMBenchError):
        return None
    as_json = lambda d: json.loads(json.dumps(d))  # noqa: E731 - tuples and lists alike
    same = (in_order and as_json(trained_with) == as_json(cfg.to_dict()) and result.name == name
            and result.dataset_fingerprint == dataset_fingerprint and scored_as_now(result, cfg.task))
    return result if same else None


def scored_as_now(result: Any, task: str) -> bool:
    """Whether `result` was scored under the current masks protocol and covers the task's
    conditions as they are now (a result made before either changed is run again)."""
    from mmbench.data.masks import MASKS_PROTOCOL
    from mmbench.data.tasks import get_task

    if result.masks_protocol != MASKS_PROTOCOL:
        return False
    covered = set(result.metrics) | set(result.extra.get("condition_aliases", {}))
    try:
        wanted = {c.name for c in get_task(task).conditions()}
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
