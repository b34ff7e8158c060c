"""CLI commands of this area; `register(app)` is called by mmbench.cli.

`mmbench evaluate TASK (--predictions FILE | --model SPEC [--weights FILE]) ...` scores a
submission, and `verify_command` (run by `mmbench leaderboard verify`) recomputes every
leaderboard entry that has stored predictions. Every check runs before anything is written:
a refused submission leaves no result file, no entry and no copied predictions behind.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    task: str = typer.Argument(..., help="Task name, or a task spec .yaml file."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", "-p",
                                               help="Predictions file: CSV, JSON lines or Parquet (id, [condition], prediction "
                                                    "or score_0..score_{C-1}); .npz embeddings for retrieval. Runs no code."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="'baseline' (with --weights), 'path/to/file.py:build' (run isolated) or a "
                                             "torch.export 'model.pt2'. Retrieval: the model has encode_image and "
                                             "encode_text (a .pt2: two programs of those names)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="safetensors weights for --model."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Submission name (default: the file's stem)."),
    conditions: list[str] = typer.Option([], "--conditions", "-c",
                                         help="Only these of the task's conditions (repeatable or comma-separated)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the result JSON here (atomically)."),
    board_dir: Optional[Path] = typer.Option(None, "--leaderboard", help="Add the result to this leaderboard folder."),
    device: str = typer.Option("cpu", "--device", help="cpu, auto, cuda or cuda:N (model submissions)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    timeout: float = typer.Option(600.0, "--timeout", help="Wall-clock seconds a sandboxed model may run."),
    memory_mb: int = typer.Option(8192, "--memory-mb", help="Address-space limit of a sandboxed model (MB; CPU only)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Batch size for sandboxed models (rows per encoder call "
                                                               "for retrieval)."),
    resamples: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CI (0 = none)."),
    isolation: str = typer.Option("auto", "--isolation",
                                  help="Model submissions: 'auto' runs the model under bubblewrap (no network, no "
                                       "files but its own folder) and warns where that is unavailable, 'required' "
                                       "refuses then, 'none' runs it as a plain process."),
    split: str = typer.Option("test", "--split", help="test, or validation: score on the validation split (for "
                                                       "tuning without the test labels; never written to a leaderboard)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Quick check of a --model: run it on the first N items under "
                                                              "every condition, print its outputs, score and write nothing."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Accept predictions that leave out some of the "
                                                                      "task's conditions (robustness then shows as absent)."),
    clip_range: bool = typer.Option(False, "--clip-range", help="Clip regression predictions to the task's range "
                                                                "(recorded in the entry) instead of refusing them."),
    force: bool = typer.Option(False, "--force", help="Replace the leaderboard entry of the same --name (kept in history)."),
    description: Optional[str] = typer.Option(None, "--description", help="One line about the submission (in the entry)."),
    url: Optional[str] = typer.Option(None, "--url", help="Where the submission is described: paper, code (in the entry)."),
    template: Optional[Path] = typer.Option(None, "--template", help="Write a model template for TASK into this folder "
                                                                      "(model.py: the call contract and a working model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result JSON."),
    test_set: Optional[str] = typer.Option(None, "--test-set", help="The test-set fingerprint the submission was made "
                                           "for (`mmbench data info TASK` prints it): refused if this machine's "
                                           "test set differs."),
    shards: int = typer.Option(1, "--shards", help="--model: split the test items across N sandboxed workers run at "
                               "once (cut on --batch-size boundaries: the same predictions as one worker, bit for bit)."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="--model: keep each condition's predictions in "
                               "$MMBENCH_CACHE/predictions (keyed by the submission's files, the test set, the masks "
                               "sent and the code), so a killed evaluation resumes and a second one runs no model."),
) -> None:
    """Score a predictions file or a model on a task under its missing-modality conditions."""
    from mmbench.core.errors import MMBenchError, SubmissionError
    from mmbench.evaluation.submissions.checks import check_name

    if template is not None:
        return _write_template(task, template, data_dir)
    if (predictions is None) == (model is None):
        raise MMBenchError("give exactly one of --predictions FILE or --model SPEC")
    if split not in ("test", "validation"):
        raise MMBenchError(f"--split must be test or validation, not {split!r}")
    if split != "test" and board_dir is not None:
        raise MMBenchError("--split validation scores never go on a leaderboard; leave out --leaderboard")
    if limit is not None and (model is None or board_dir is not None or output is not None):
        raise MMBenchError("--limit is a quick check of a --model: it writes nothing (leave out --leaderboard, --output)")
    if weights is not None and model is None:
        raise MMBenchError("--weights goes with --model (for --predictions there are no weights)")
    if timeout <= 0 or memory_mb <= 0 or batch_size <= 0 or resamples < 0 or shards < 1:
        raise MMBenchError("--timeout, --memory-mb, --batch-size and --shards must be positive, --bootstrap >= 0")
    if name is None:
        source = predictions if predictions is not None else _model_source(model, weights)
        name = source.stem if source is not None else None
        if name is None:
            raise SubmissionError("give a --name for this submission")
        try:
            check_name(name)
        except SubmissionError:
            raise SubmissionError(f"cannot use the file name {name!r} as the submission name (letters, digits, '.', '_', "
                                  "'+', '-'); give --name", source) from None
    check_name(name)
    if output is not None and output.is_dir():
        raise MMBenchError("--output is a directory; give a file name", output)
    if board_dir is not None and board_dir.exists() and not board_dir.is_dir():
        raise MMBenchError("--leaderboard is not a directory", board_dir)

    from mmbench.data.tasks import get_task

    spec = get_task(task)
    if board_dir is not None and not force:
        _check_new_name(board_dir, spec.name, name)
    out_of_range = "clip" if clip_range else "refuse"
    kept: dict = {}
    if predictions is not None:
        from mmbench.evaluation.scoring import evaluate_predictions

        result = evaluate_predictions(spec, predictions, name, data_dir=data_dir, conditions=conditions or None,
                                      n_resamples=resamples, allow_partial=allow_partial, out_of_range=out_of_range,
                                      split_role=split)
    else:
        from mmbench.evaluation.evaluator import evaluate_model
        from mmbench.evaluation.sandbox.runner import SandboxConfig

        cfg = SandboxConfig(timeout_s=timeout, memory_mb=memory_mb, batch_size=batch_size,
                            isolation=_isolation_mode(isolation, model), denied=_denied(data_dir, board_dir))
        if weights is None and model != "baseline" and not str(model).endswith(".pt2"):
            typer.echo("warning: no --weights: the model is scored as build() returns it, untrained unless build() "
                       "loads trained weights itself", err=True)
        if limit is not None:
            return _print_probe(spec, model, weights, limit, device, data_dir, conditions, cfg, split)
        from mmbench.evaluation.prediction_cache import PredictionCache

        prediction_cache = PredictionCache(enabled=cache)
        result = evaluate_model(spec, model, weights, name, device=device, data_dir=data_dir,
                                conditions=conditions or None, sandbox_config=cfg, n_resamples=resamples,
                                split_role=split, out_of_range="accept" if model == "baseline" else out_of_range,
                                keep_predictions=kept, cache=prediction_cache if cache else None, shards=shards)
        if cache and spec.target.type != "retrieval":
            typer.echo(prediction_cache.summary(), err=True)
    result = _with_metadata(result, description, url)

    if test_set is not None and result.test_set_fingerprint != test_set:
        raise SubmissionError(f"the submission claims test set {test_set}, but task {spec.name!r} here has test set "
                              f"{result.test_set_fingerprint} (protocol {result.protocol}): other test items, targets or "
                              "masks; nothing was written", predictions or _model_source(model, weights))
    stored: tuple[Path, bytes] | None = None
    if board_dir is not None and predictions is not None:
        stored = _prepare_copy(board_dir, result, predictions)
        result = result.model_copy(update={"predictions_file": stored[0].relative_to(board_dir).as_posix()})
    elif board_dir is not None and kept:
        result, stored = _model_predictions(board_dir, result, kept)

    # everything is validated: now write (result file, stored predictions, leaderboard entry)
    from mmbench.core.io import atomic_write_bytes, atomic_write_json

    written = []
    if output is not None:
        atomic_write_json(output, result.to_json())
        written.append(f"result {output}")
    if board_dir is not None:
        from filelock import FileLock

        from mmbench.core.io import safe_join
        from mmbench.board.entries import write_entry

        task_dir = safe_join(board_dir, result.task)
        task_dir.mkdir(parents=True, exist_ok=True)
        # one submitter of a name at a time: the stored copy and the entry must belong together
        with FileLock(str(task_dir / f".{result.name}.submit.lock")):
            if not force:
                _check_new_name(board_dir, result.task, result.name)
            if stored is not None:
                atomic_write_bytes(stored[0], stored[1])
            entry = write_entry(board_dir, result)
        written.append(f"leaderboard entry {entry}")
    if as_json:
        import json

        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print_summary(result)
    for w in written:
        typer.echo(f"wrote {w}", err=as_json)  # keep stdout pure JSON with --json


def _write_template(task: str, folder: Path, data_dir: Optional[Path] = None) -> None:
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.submissions.contract import write_template

    spec = get_task(task)
    path = write_template(spec, folder, str(data_dir) if data_dir else None)
    typer.echo(f"wrote {path}: a working model for {spec.name} and its call contract; check it with "
               f"`mmbench evaluate {spec.name} --model {path}:build --limit 4`")


def _check_new_name(board_dir: Path, task: str, name: str) -> None:
    from mmbench.core.errors import SubmissionError
    from mmbench.core.io import safe_join

    task_dir = safe_join(Path(board_dir), task)
    taken = [p for p in (task_dir / f"{name}.json", *task_dir.glob(f"{name}__seed*.json")) if p.is_file()]
    if taken:
        raise SubmissionError(f"the leaderboard already has an entry named {name!r} for task {task!r}; choose another "
                              "--name, or pass --force to replace it (the old entry is kept in history/)", taken[0])


def _with_metadata(result: Any, description: str | None, url: str | None) -> Any:
    """The submission's metadata in the entry: name, description, URL, parameters, isolation."""
    from mmbench.core.errors import MMBenchError

    meta: dict[str, Any] = {"name": result.name}
    for key, value in (("description", description), ("url", url)):
        if value is not None:
            text = " ".join(value.split())
            if not text or len(text) > 500:
                raise MMBenchError(f"--{key} must be one line of 1 to 500 characters")
            meta[key] = text
    if url is not None and not url.startswith(("https://", "http://")):
        raise MMBenchError("--url must start with https:// or http://")
    params = (result.efficiency or {}).get("params")
    if params is not None:
        meta["params"] = params
    meta["isolation"] = result.extra.get("isolation", "none (no submitted code runs)" if result.kind == "predictions"
                                         else "none (mmbench's own model)")
    return result.model_copy(update={"extra": {**result.extra, "submission": meta}})


def _model_predictions(board_dir: Path, result: Any, kept: dict) -> tuple[Any, tuple[Path, bytes]]:
    """A model's predictions stored with its entry, as a parquet file `leaderboard verify` rescores
    (a retrieval model: its embeddings, as the .npz a submitter would give)."""
    import hashlib

    from mmbench.board.publish import run_predictions_bytes, stored_predictions_path

    ids = kept.pop("__ids__", None)
    data, suffix = run_predictions_bytes(result, kept, ids)
    dest = stored_predictions_path(board_dir, result, suffix)
    extra = {**result.extra, "predictions_sha256": hashlib.sha256(data).hexdigest()}
    return result.model_copy(update={"predictions_file": dest.relative_to(board_dir).as_posix(), "extra": extra}), (dest, data)


def _print_probe(spec: Any, model: str, weights: Path | None, limit: int, device: str, data_dir: Path | None,
                 conditions: list[str], cfg: Any, split: str) -> None:
    from mmbench.evaluation.probe import describe_outputs, probe_model

    probe = probe_model(spec, model, weights, limit, device=device, data_dir=data_dir, conditions=conditions or None,
                        sandbox_config=cfg, split_role=split)
    what = "modality" if spec.target.type == "retrieval" else "condition"
    typer.echo(f"{spec.name}: the model's raw outputs on the first {probe.items} {split} items, per {what} "
               f"(isolation: {probe.isolation}); nothing scored or written")
    for line in describe_outputs(probe):
        typer.echo(line)


def _isolation_mode(mode: str, model: str) -> str:
    """Resolve --isolation before any data is loaded: refuse (required) or warn in one line."""
    from mmbench.evaluation.sandbox.isolation import BUBBLEWRAP, resolve

    if model == "baseline":  # mmbench's own model, in-process: nothing submitted runs
        return "none"
    iso = resolve(mode)
    if iso.warning:
        typer.echo(iso.warning, err=True)
    return "required" if iso.used == BUBBLEWRAP else "none"


def _denied(data_dir: Path | None, board_dir: Path | None) -> dict[str, Path]:
    from mmbench.data.datasets.base import data_root

    out = {"data root": data_root(data_dir)}
    if board_dir is not None:
        out["leaderboard"] = board_dir
    return out


def _model_source(model: str | None, weights: Path | None) -> Path | None:
    import re

    if model is None:
        return None
    if model == "baseline":
        return weights
    m = re.match(r"^(.+\.py):\w+$", model)
    return Path(m.group(1)) if m else Path(model)


def _prepare_copy(board_dir: Path, result: Any, predictions: Path) -> tuple[Path, bytes]:
    """Destination and bytes of the stored copy; the bytes must be what was evaluated."""
    import hashlib

    from mmbench.core.errors import SubmissionError
    from mmbench.core.io import safe_join

    data = predictions.read_bytes()
    if hashlib.sha256(data).hexdigest() != result.submission_hash:
        raise SubmissionError("file changed while it was being evaluated; submit it again", predictions)
    ext = predictions.suffix.lower()
    dest = safe_join(safe_join(safe_join(board_dir, result.task), "predictions"), f"{result.name}{ext}")
    return dest, data


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _print_summary(result: Any) -> None:
    pm = result.primary_metric
    split = result.extra.get("split", "test")
    typer.echo(f"{result.task}  {result.name}  ({result.kind}, {len(result.metrics)} condition"
               f"{'s' if len(result.metrics) != 1 else ''}, scored on the {split} split"
               + (": a tuning figure, not comparable with the board's test scores" if split != "test" else "") + ")")
    clean = result.metrics.get("clean")
    if clean:
        ci = result.confidence_intervals.get("clean", {}).get(pm)
        ci_text = f"  95% CI [{ci['low']:.4f}, {ci['high']:.4f}]" if ci and math.isfinite(ci.get("low", math.nan)) else ""
        typer.echo("  clean: " + "  ".join(f"{k} {_fmt(v)}" for k, v in clean.items()) + ci_text)
    for cond, values in result.metrics.items():
        if cond != "clean":
            typer.echo(f"  {cond}: {pm} {_fmt(values.get(pm))}")
    rob = result.robustness
    parts = [f"{k} {_fmt(rob[k])}" for k in ("worst_drop", "auc_rate") if k in rob]
    if parts:
        typer.echo("  robustness: " + "  ".join(parts))
    if "isolation" in result.extra:
        typer.echo(f"  isolation: {result.extra['isolation']}")
    eff = result.efficiency or {}
    if eff:
        from mmbench.evaluation.latency import TIMED

        typer.echo("  efficiency: " + "  ".join(f"{k} {_fmt(eff[k])}" for k in ("params", "flops_per_sample", "latency_ms_per_batch")
                                                if k in eff))
        if "latency_ms_per_batch" in eff:
            typer.echo(f"  latency: {TIMED}; batch size {eff.get('batch_size', '?')}")


# --------------------------------------------------------------------------------------------
# leaderboard verify
# --------------------------------------------------------------------------------------------


def _differences(stored: dict[str, dict[str, float]], recomputed: dict[str, dict[str, float]]) -> list[str]:
    out = []
    for cond in sorted(set(stored) | set(recomputed)):
        if cond not in recomputed:
            out.append(f"{cond}: not recomputed")
            continue
        if cond not in stored:
            out.append(f"{cond}: not in the entry")
            continue
        for metric in sorted(set(stored[cond]) | set(recomputed[cond])):
            a, b = stored[cond].get(metric), recomputed[cond].get(metric)
            if a is None or b is None or not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
                out.append(f"{cond} {metric}: entry {a} recomputed {b}")
    return out


def verify_entry(board_dir: Path, entry: Any, data_dir: Any = None, labels_cache: dict | None = None) -> tuple[str, str]:
    """(status, message) for one entry: OK, DIFFERS, ERROR or SKIP. The metrics of every
    condition and the per-item records the board's significance reads (``extra.test_items``)
    are recomputed from the stored predictions. `labels_cache` keeps each task's test labels
    between entries."""
    from mmbench.core.errors import MMBenchError
    from mmbench.data.masks import MASKS_PROTOCOL
    from mmbench.evaluation.scoring import evaluate_predictions
    from mmbench.evaluation.significance import item_record_differences
    from mmbench.core.io import safe_join, sha256_file
    from mmbench.data.tasks import get_task

    if not entry.predictions_file:
        return "SKIP", "no stored predictions"
    try:
        path = safe_join(board_dir, entry.predictions_file)
        if not path.is_file():
            return "ERROR", f"stored predictions {entry.predictions_file} not found"
        # a baseline's submission_hash identifies its weights; its predictions' sha256 is in extra
        expected = entry.extra.get("predictions_sha256") or (entry.submission_hash if entry.kind == "predictions" else None)
        if expected and sha256_file(path) != expected:
            return "DIFFERS", f"stored predictions {entry.predictions_file} changed (sha256 does not match the entry)"
        spec = get_task(entry.task)
        labels = None
        if spec.target.type != "retrieval":
            labels = task_labels(spec, data_dir, labels_cache)
        recomputed = evaluate_predictions(spec, path, entry.name, data_dir=data_dir, conditions=list(entry.metrics)
                                          if spec.target.type != "retrieval" else None, n_resamples=0, labels=labels,
                                          out_of_range="clip" if entry.extra.get("clipped_to_range") else "accept",
                                          masks_protocol=entry.masks_protocol)
    except MMBenchError as exc:
        return "ERROR", " ".join(str(exc).split())
    here = recomputed.test_set_fingerprint
    if entry.test_set_fingerprint and here != entry.test_set_fingerprint and entry.masks_protocol != MASKS_PROTOCOL:
        # scored under an earlier masks protocol: the test set as that protocol drew it, over the entry's conditions
        from mmbench.data.testset import task_test_set

        key = ("masks-protocol", spec.name, entry.masks_protocol, tuple(entry.metrics))
        cache = labels_cache if labels_cache is not None else {}
        try:
            if key not in cache:
                cache[key] = task_test_set(spec, data_dir, masks_protocol=entry.masks_protocol,
                                           condition_names=list(entry.metrics)).fingerprint
        except MMBenchError as exc:
            return "ERROR", " ".join(str(exc).split())
        here = cache[key]
    if entry.test_set_fingerprint and here != entry.test_set_fingerprint:
        return "DIFFERS", (f"scored on test set {entry.test_set_fingerprint} ({entry.protocol}); the test set here is "
                           f"{here} ({recomputed.protocol})")
    diffs = _differences(entry.metrics, recomputed.metrics)
    items = item_record_differences(entry.extra.get("test_items"), recomputed.extra.get("test_items"))
    if items:
        diffs.append(f"extra.test_items: {items}")
    if spec.target.type == "retrieval":
        diffs += retrieval_record_differences(entry.extra, recomputed.extra)
    if diffs:
        return "DIFFERS", "; ".join(diffs[:3]) + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")
    legacy = "" if entry.test_set_fingerprint else "; no test-set fingerprint stored (entry made before they existed)"
    if entry.masks_protocol != MASKS_PROTOCOL and any(c.startswith("rate:") for c in entry.metrics):
        legacy += (f"; scored under masks protocol {entry.masks_protocol} (its rate conditions may leave items with no "
                   "modality; re-run to score under the current one)")
    if spec.target.type == "retrieval":
        what = ("and the per-query records match" if entry.extra.get("test_queries") else
                "match (the entry stores no per-query records)")
        return "OK", f"{len(entry.metrics)} condition(s) {what} (recall@k recomputed from the stored embeddings){legacy}"
    return "OK", f"{len(entry.metrics)} condition(s) and the per-item records match{legacy}"


def retrieval_record_differences(stored: dict[str, Any], recomputed: dict[str, Any]) -> list[str]:
    """What a retrieval entry's per-query records, missing counts and present-only recalls
    (``extra``) differ in from those recomputed from its stored embeddings."""
    from mmbench.evaluation.retrieval_scoring import query_record_differences

    out = []
    queries = query_record_differences(stored.get("test_queries"), recomputed.get("test_queries"))
    if queries:
        out.append(f"extra.test_queries: {queries}")
    for key in ("missing", "present_only"):
        a, b = stored.get(key), recomputed.get(key)
        if a is None:
            continue
        same = a == b or (b is not None and {k: v for k, v in a.items() if k != "metrics"} == {
            k: v for k, v in b.items() if k != "metrics"} and not _differences({"": a.get("metrics", {})},
                                                                               {"": b.get("metrics", {})}))
        if not same:
            out.append(f"extra.{key}: entry {a} recomputed {b}")
    return out


def task_labels(spec: Any, data_dir: Any = None, cache: dict | None = None) -> Any:
    """A task's test labels, loaded once per task (`cache`: task name -> labels, or the
    MMBenchError that loading raised, raised again for every later entry)."""
    from mmbench.core.errors import MMBenchError
    from mmbench.evaluation.submissions.tables import load_test_labels

    cache = cache if cache is not None else {}
    if spec.name not in cache:
        try:
            cache[spec.name] = load_test_labels(spec, data_dir)
        except MMBenchError as exc:
            cache[spec.name] = exc
    if isinstance(cache[spec.name], MMBenchError):
        raise cache[spec.name]
    return cache[spec.name]


def _data_needed(board: Path, entries: list[Any], data_dir: Any, cache: dict) -> dict[str, str]:
    """{task: why} for the tasks whose test labels cannot be loaded from the data root."""
    from mmbench.core.errors import MMBenchError
    from mmbench.data.tasks import get_task

    out = {}
    for task in dict.fromkeys(e.task for e in entries if e.predictions_file):
        try:
            spec = get_task(task)
            if spec.target.type != "retrieval":
                task_labels(spec, data_dir, cache)
            else:  # the gallery (ids and caption -> image map) the stored embeddings are scored against
                from mmbench.evaluation.retrieval_scoring import retrieval_gallery

                retrieval_gallery(spec, data_dir)
        except MMBenchError as exc:
            out[task] = " ".join(str(exc).split())
    return out


def verify_command(board_dir, data_dir: Any = None) -> None:
    """Recompute every entry with stored predictions; one line per entry; exit 1 if any differ.
    A task whose labels need data that is not there gets one line for all its entries."""
    from mmbench.core.errors import DataError, MMBenchError
    from mmbench.board.entries import read_entry
    from mmbench.data.datasets.base import data_root

    board = Path(board_dir)
    if not board.is_dir():
        raise MMBenchError("leaderboard folder not found", board)
    files = sorted(f for d in sorted(board.iterdir()) if d.is_dir() for f in d.glob("*.json"))
    if not files:
        raise MMBenchError(f"no leaderboard entries in {board}")
    counts = {"OK": 0, "DIFFERS": 0, "ERROR": 0, "SKIP": 0}
    labels_cache: dict = {}
    failed: list[str] = []
    parsed: list[tuple[Path, Any]] = []
    for f in files:
        try:
            parsed.append((f, read_entry(f)))
        except DataError as exc:
            parsed.append((f, exc))
    missing = _data_needed(board, [e for _, e in parsed if not isinstance(e, DataError)], data_dir, labels_cache)
    unchecked = 0
    for f, entry in parsed:
        if isinstance(entry, DataError):
            status, label, message = "ERROR", f.relative_to(board).as_posix(), " ".join(str(entry).split())
        elif entry.task in missing and entry.predictions_file:
            unchecked += 1
            continue
        else:
            label = f"{entry.task}/{entry.name}" + (f" seed {entry.seed}" if entry.seed is not None else "")
            status, message = verify_entry(board, entry, data_dir, labels_cache=labels_cache)
        counts[status] += 1
        if status in ("DIFFERS", "ERROR"):
            failed.append(label)
        typer.echo(f"{status:<7} {label}: {message}")
    typer.echo(f"verified {len(files) - unchecked} entries: {counts['OK']} ok, {counts['DIFFERS']} differ, "
               f"{counts['ERROR']} errors, {counts['SKIP']} without stored predictions")
    if counts["DIFFERS"] or counts["ERROR"]:
        # an exception, not typer.Exit: mmbench.cli.main runs the app with standalone_mode=False,
        # where click returns an Exit's code instead of exiting with it
        n = counts["DIFFERS"]
        raise MMBenchError(f"leaderboard verification failed: {n} entr{'y differs' if n == 1 else 'ies differ'}, "
                           f"{counts['ERROR']} could not be checked: {', '.join(failed[:5])}"
                           f"{f' (+{len(failed) - 5} more)' if len(failed) > 5 else ''}")
    if missing:
        tasks = ", ".join(missing)
        raise MMBenchError(f"{unchecked} entries of {tasks} not verified: their labels need the data, not found under "
                           f"the data root {data_root(data_dir)}; set MMBENCH_DATA or pass --data-dir "
                           f"({next(iter(missing))}: {next(iter(missing.values()))})")
