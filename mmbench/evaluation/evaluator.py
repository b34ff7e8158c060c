"""Scoring a model under the task's missing-modality conditions, and the `Result` it makes.

`predict` runs a model over a split, `evaluate_conditions` scores any Split -> predictions
function under each condition; `evaluate_trained`, `evaluate_model` (a submitted factory,
`.pt2` program or baseline checkpoint, run in the sandbox) and the retrieval paths turn those
scores into a validated `Result`. Scoring a predictions file needs no torch and lives in
mmbench.evaluation.scoring.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mmbench.data.masks import Condition
from mmbench.data.samples import Split
from mmbench.data.tasks import TaskSpec
from mmbench.evaluation.latency import median_latency_ms
from mmbench.evaluation.results import Result, make_result
from mmbench.evaluation.retrieval_scoring import retrieval_gallery, retrieval_result
from mmbench.evaluation.prediction_cache import cached_outputs
from mmbench.evaluation.scoring import (
    clean_ci, check_range, classification_extras, item_record, primary_ci, score, select_conditions)
from mmbench.evaluation.summaries import check_finite_metrics, robustness_summary
from mmbench.evaluation.targets import uses_scores


@torch.no_grad()
def predict(model: nn.Module, split: Split, device: torch.device | str = "cpu", batch_size: int = 1024,
            autocast_dtype: torch.dtype | None = None) -> Tensor:
    """Raw model outputs for every row of `split` (a Split, or the mixed rows of several
    conditions, mmbench.evaluation.mixing), in order, as float32 on the CPU; a model whose
    forward takes ``steps`` gets a segment condition's observed time steps."""
    from mmbench.evaluation.mixing import takes_steps

    model.eval()
    device = torch.device(device)
    data = split if split.targets.device == device else split.to(device)
    with_steps = takes_steps(model)
    outs = []
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data)), device=device)
        b = data.batch(index)
        kwargs = {"steps": b.steps} if with_steps and b.steps else {}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(b.modalities, b.present, b.lengths, **kwargs)
        outs.append(out.float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def outputs_to_predictions(outputs: Tensor, target: str | TaskSpec) -> np.ndarray:
    """Class labels (argmax of logits), real values (regression), label probabilities
    ``[N, C]`` (multilabel: sigmoid of the logits), or, for a task given as a spec that
    :func:`uses_scores`, the softmax probability of label 1."""
    target_type = target if isinstance(target, str) else target.target.type
    if target_type == "regression":
        return outputs.reshape(len(outputs), -1)[:, 0].numpy().astype(np.float64)
    if target_type == "multilabel":
        return torch.sigmoid(outputs.float()).numpy().astype(np.float64)
    if not isinstance(target, str) and uses_scores(target):
        return torch.softmax(outputs.float(), -1)[:, 1].numpy().astype(np.float64)
    return outputs.argmax(-1).numpy().astype(np.int64)


def evaluate_conditions(
    spec: TaskSpec,
    split: Split,
    predict_fn: Callable[[Any], np.ndarray],
    conditions: Sequence[Condition] | None = None,
    seed: int | None = None,
    keep_predictions: dict[str, np.ndarray] | None = None,
    report: dict[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """{condition name: {metric: value}} for `predict_fn` (rows -> predictions) under each
    condition. Conditions with equal masks are evaluated once (mmbench.evaluation.presence);
    the rows of all conditions go to `predict_fn` in one seeded, mixed order
    (mmbench.evaluation.mixing) and are scored per condition over the items the data give at
    least one modality. `keep_predictions`, when given, receives each condition's predictions
    in item order; `report` receives the ``extra`` fields: condition aliases, absent
    modalities, the items with nothing present, and the masks protocol."""
    from mmbench.data.splits import TRAINING_MEANS
    from mmbench.evaluation.mixing import mix_conditions
    from mmbench.evaluation.presence import distinct_with_report, score_apart, scored_items

    conditions = list(conditions if conditions is not None else spec.conditions())
    seed = spec.missing.seed if seed is None else seed
    y_true = split.targets.cpu().numpy()
    present = {m: split.present[m].cpu().numpy() for m in split.modality_names}
    distinct, extra = distinct_with_report(conditions, split.ids, split.modality_names, seed, split.name, present)
    mixed = mix_conditions(split, distinct, seed, (split.info or {}).get(TRAINING_MEANS))
    predictions = mixed.unmix(np.asarray(predict_fn(mixed)))
    results, apart = score_apart(lambda t, p: score(spec, t, p), y_true, predictions,
                                 scored_items(present, len(split)))
    if keep_predictions is not None:
        keep_predictions.update(predictions)
    if report is not None:
        report.update(extra | apart)
    return results


def state_hash(model: nn.Module) -> str:
    """sha256 over the model's parameter names and bytes: identifies the exact weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-dim buffers too
    return h.hexdigest()


@torch.no_grad()
def measure_efficiency(model: nn.Module, split: Split, device: torch.device | str, batch_size: int = 64, repeats: int = 5) -> dict[str, Any]:
    """Parameters of the modules the output uses (``used_parameter_count``), FLOPs per sample
    (torch's FlopCounterMode), latency per batch as :mod:`mmbench.evaluation.latency` times it
    (the forward alone; one CPU thread on the CPU, recorded as ``threads``), the batch size, device and precision (the parameters' dtype), peak GPU memory."""
    from torch.utils.flop_counter import FlopCounterMode

    from mmbench.models.model import used_parameter_count

    device = torch.device(device)
    model.eval()
    b = split.batch(torch.arange(min(batch_size, len(split)))).to(device)
    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:  # the counter's module tracker needs autograd on
        model(b.modalities, b.present, b.lengths)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    latency, threads = median_latency_ms(lambda: model(b.modalities, b.present, b.lengths), device, repeats)
    out = {
        "params": used_parameter_count(model),
        "flops_per_sample": float(counter.get_total_flops() / len(b)),
        "latency_ms_per_batch": latency,
        "batch_size": len(b),
        "device": str(device),
        "precision": str(next(model.parameters(), torch.zeros(())).dtype).replace("torch.", ""),
    }
    if threads is not None:
        out["threads"] = threads
    if device.type == "cuda":
        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def with_test_set(result: Result, spec: TaskSpec, data_dir: Any = None, dataset: Any = None,
                  loaded: Split | None = None) -> Result:
    """`result` with the fingerprint and protocol of the task's test set (mmbench.data.testset),
    read from the annotation files (or from `loaded`, the test split already loaded)."""
    from mmbench.data.testset import task_test_set, testset_fields

    return result.model_copy(update=testset_fields(task_test_set(spec, data_dir, dataset, loaded)))


def evaluate_trained(spec: TaskSpec, trained: Any, test_split: Split, dataset_fingerprint: str, name: str | None = None,
                     keep_predictions: dict[str, np.ndarray] | None = None) -> Result:
    """Score a `TrainResult` on the test split under every condition of the task;
    `keep_predictions`, when given, receives each condition's test predictions (a retrieval
    task: the gallery's embeddings, see `_evaluate_trained_retrieval`)."""
    if spec.target.type == "retrieval":
        return _evaluate_trained_retrieval(spec, trained, test_split, dataset_fingerprint, name, keep_predictions)
    model = trained.model
    device = next(model.parameters()).device
    run = lambda s: outputs_to_predictions(predict(model, s, device), spec)  # noqa: E731
    predictions: dict[str, np.ndarray] = {}
    extra: dict[str, Any] = {"best_epoch": trained.best_epoch, "validation": trained.val_metrics,
                             "train_seconds": trained.seconds}
    per_condition = evaluate_conditions(spec, test_split, run, keep_predictions=predictions, report=extra)
    if keep_predictions is not None:
        keep_predictions.update(predictions)
    y_true = test_split.targets.cpu().numpy()
    y_clean = predictions["clean"] if "clean" in predictions else run(test_split)
    ci = {"clean": {spec.primary_metric: primary_ci(spec, y_true, y_clean, seed=trained.config.seed)}}
    extra |= classification_extras(spec, y_true, y_clean) | item_record(spec, test_split.ids, y_true, y_clean)
    return make_result(
        task=spec.name,
        name=name or trained.config.fusion,
        kind="baseline",
        fusion=trained.config.fusion,
        seed=trained.config.seed,
        primary_metric=spec.primary_metric,
        higher_is_better=spec.primary.higher_is_better,
        metrics=per_condition,
        confidence_intervals=ci,
        robustness=robustness_summary(per_condition, spec.primary_metric, spec.primary.higher_is_better),
        efficiency=measure_efficiency(model, test_split, device),
        dataset_fingerprint=dataset_fingerprint,
        submission_hash=state_hash(model),
        device=str(device),
        extra=extra,
    )


# --------------------------------------------------------------------------------------------
# submissions: predictions files and submitted models (see mmbench.evaluation.submissions, mmbench.evaluation.sandbox)
# --------------------------------------------------------------------------------------------


def _input_mismatch(trained: dict[str, Any], test: dict[str, Any], task: str) -> str:
    """What differs between a checkpoint's inputs and the task's test data, per modality."""
    def shape(d: dict[str, Any] | None) -> str:
        return "absent" if d is None else ("sequence of " if d.get("sequence") else "") + str(list(d.get("shape", [])))

    diffs = [f"{m}: trained on {shape(trained.get(m))}, test data {shape(test.get(m))}"
             for m in sorted(set(trained) | set(test)) if trained.get(m) != test.get(m)]
    return (f"checkpoint's input shapes do not match the task's test data ({'; '.join(diffs)}); task {task!r} "
            "decodes with its spec's dataset options, so a model trained with other ones (--set dataset_options...) "
            "needs a task spec of its own (MMBENCH_TASKS_PATH)")


def evaluate_model(spec: TaskSpec, model_spec: str, weights: Any, name: str, device: str = "cpu", data_dir: Any = None,
                   conditions: Any = None, sandbox_config: Any = None, limits: Any = None, seed: int = 0,
                   n_resamples: int = 1000, split_role: str = "test", out_of_range: str = "refuse",
                   keep_predictions: dict[str, np.ndarray] | None = None, cache: Any = None,
                   shards: int = 1) -> Result:
    """Score a submitted model under the task's conditions: `baseline` + safetensors weights
    (loaded in-process, nothing unpickled), or `file.py:factory` / `program.pt2` (run in a
    separate, isolated process by mmbench.evaluation.sandbox.runner). On a retrieval task the factory's model or
    the .pt2 provides one encoder per modality (see `_evaluate_retrieval_model`). Writes nothing.
    `split_role` ``validation`` scores the validation split instead of the test split; a submitted
    model's regression outputs outside the task's range are refused or, with `out_of_range`
    ``clip``, clipped (``accept``: neither); `keep_predictions` receives each condition's predictions
    and, under ``__ids__``, the split's ids in their order. With `cache` (a
    :class:`~mmbench.evaluation.prediction_cache.PredictionCache`) each condition's outputs come
    from the cache when it holds them for this submission, test set, masks and code, and are
    cached as they are predicted (a sandboxed model runs in up to 4 worker calls then, so a killed
    evaluation resumes); the cache counts the items it served and the items predicted. `shards` > 1
    splits a sandboxed model's test items across that many workers (:mod:`~mmbench.evaluation.sharding`;
    the gathered outputs equal one worker's bit for bit)."""
    from mmbench.core.errors import SubmissionError
    from mmbench.models.model import describe_inputs
    from mmbench.evaluation.submissions.checks import Limits, check_name, submission_hash
    from mmbench.evaluation.submissions.models import parse_model_spec
    from mmbench.data.splits import load_task_split, task_dataset
    from mmbench.models.checkpoint import load_model, resolve_device

    check_name(name)
    limits = limits or Limits.from_env()
    if spec.target.type == "retrieval":
        if split_role != "test":
            raise SubmissionError(f"task {spec.name!r}: retrieval models are scored on the test gallery only")
        return with_test_set(_evaluate_retrieval_model(spec, model_spec, weights, name, device, data_dir, conditions,
                                                       sandbox_config, limits, keep_predictions), spec, data_dir)
    ms = parse_model_spec(model_spec, weights, limits)
    conds = select_conditions(spec, conditions)
    dev = resolve_device(device)
    dataset = task_dataset(spec, data_dir)
    split = load_task_split(spec, split_role, data_dir, dataset)
    y_true = split.targets.cpu().numpy()
    digest, files = submission_hash(ms.files)
    extra: dict[str, Any] = {"model": ms.kind, "submission_files": files}
    if split_role != "test":
        extra["split"] = split_role
    fusion = None
    from mmbench.data.splits import with_training_means
    from mmbench.evaluation.presence import distinct_with_report

    split = with_training_means(spec, split, data_dir, dataset)
    present = {m: split.present[m].cpu().numpy() for m in split.modality_names}
    # conditions whose masks equal another's are run and shown once (extra: their aliases)
    conds, report = distinct_with_report(conds, split.ids, split.modality_names, spec.missing.seed, split.name, present)
    extra |= report
    keys: dict[str, str] = {}
    if cache is not None:
        from mmbench.evaluation.prediction_cache import PredictionCache, masks_digest, submission_digest, test_set_digest

        batch = str((sandbox_config.batch_size if sandbox_config else None) or "default") if ms.kind != "baseline" else "-"
        common = {"submission": submission_digest(ms), "test_set": test_set_digest(dataset.fingerprint(), split),
                  "task": spec.name, "kind": ms.kind, "device": str(dev), "batch_size": batch,
                  "isolation": str(sandbox_config.isolation) if sandbox_config and ms.kind != "baseline" else "-"}
        keys = {c.name: PredictionCache.key(masks=masks_digest(split, c, spec.missing.seed), **common) for c in conds}
        keys["__efficiency__"] = PredictionCache.key(record="efficiency", **common)
    if shards > 1 and ms.kind == "baseline":
        raise SubmissionError("--shards is for sandboxed models (file.py:build or a .pt2 program); a baseline "
                              "checkpoint is scored in this process")
    if ms.kind == "baseline":
        model, config = load_model(ms.weights, dev)
        if config.get("task") != spec.name:
            raise SubmissionError(f"checkpoint was trained for task {config.get('task')!r}, not {spec.name!r}", ms.weights)
        if config.get("inputs") != describe_inputs(split):
            raise SubmissionError(_input_mismatch(config.get("inputs") or {}, describe_inputs(split), spec.name), ms.weights)
        fusion = config.get("fusion")

        def run(cs: list) -> dict[str, np.ndarray]:
            from mmbench.data.splits import TRAINING_MEANS
            from mmbench.evaluation.mixing import mix_conditions

            mixed = mix_conditions(split, cs, spec.missing.seed, (split.info or {}).get(TRAINING_MEANS))
            out = predict(model, mixed, dev)  # the conditions' rows in one mixed order, as in the sandbox
            if not torch.isfinite(out).all():
                raise SubmissionError("model outputs contain NaN or infinity", ms.weights)
            return mixed.unmix(out.cpu().numpy())

        raw = cached_outputs(cache, conds, split.ids, keys, run, len(conds))
        predictions = {c: outputs_to_predictions(torch.from_numpy(a), spec) for c, a in raw.items()}
        record = cache.get_record(keys["__efficiency__"]) if cache is not None else None
        efficiency = record["efficiency"] if record else measure_efficiency(model, split, dev)
        if cache is not None and record is None:
            cache.put_record(keys["__efficiency__"], {"efficiency": efficiency})
        extra["state_hash"] = state_hash(model)
    else:
        from mmbench.evaluation.sandbox.runner import SandboxConfig
        from mmbench.evaluation.sharding import run_sharded

        record = cache.get_record(keys["__efficiency__"]) if cache is not None else None
        ran: dict[str, Any] = {"seconds": 0.0, "efficiency": (record or {}).get("efficiency"),
                               "isolation": (record or {}).get("isolation"), "measured": record is not None}

        def run(cs: list) -> dict[str, np.ndarray]:
            out = run_sharded(ms, spec, split, cs, str(dev), sandbox_config or SandboxConfig(), max(1, shards),
                              efficiency=not ran["measured"])
            if not ran["measured"]:
                ran.update(efficiency=out.efficiency, measured=True)
                if cache is not None:
                    cache.put_record(keys["__efficiency__"], {"efficiency": out.efficiency, "isolation": out.isolation})
            ran["seconds"] += out.seconds
            ran["isolation"] = out.isolation
            return out.outputs

        raw = cached_outputs(cache, conds, split.ids, keys, run, -(-len(conds) // 4) if cache is not None else len(conds))
        predictions = {c: outputs_to_predictions(torch.from_numpy(a), spec) for c, a in raw.items()}
        if out_of_range != "accept":
            predictions = check_range(spec, predictions, ms.source, clip=out_of_range == "clip")
            if out_of_range == "clip" and spec.target.type == "regression" and spec.target.range is not None:
                extra["clipped_to_range"] = list(spec.target.range)
        efficiency = ran["efficiency"]
        extra["sandbox_seconds"] = round(ran["seconds"], 3)
        extra["isolation"] = ran["isolation"]
    if keep_predictions is not None:
        keep_predictions.update(predictions)
        keep_predictions["__ids__"] = list(split.ids)
    from mmbench.evaluation.presence import score_apart, scored_items

    # an item the data leave with no modality is scored apart ("nothing present")
    per_condition, apart = score_apart(lambda t, p: score(spec, t, p), y_true, predictions, scored_items(present, len(split)))
    extra |= apart
    check_finite_metrics(per_condition, ms.source or ms.weights)
    aliases = extra.get("condition_aliases", {})
    extra["conditions_not_evaluated"] = [c.name for c in spec.conditions()
                                         if c.name not in per_condition and c.name not in aliases]
    if "clean" in predictions:
        extra |= classification_extras(spec, y_true, predictions["clean"]) | item_record(spec, split.ids, y_true, predictions["clean"])
    result = make_result(
        task=spec.name, name=name, kind="baseline" if ms.kind == "baseline" else "model", fusion=fusion,
        primary_metric=spec.primary_metric, higher_is_better=spec.primary.higher_is_better, metrics=per_condition,
        confidence_intervals=clean_ci(spec, y_true, predictions, seed, n_resamples),
        robustness=robustness_summary(per_condition, spec.primary_metric, spec.primary.higher_is_better),
        efficiency=efficiency, dataset_fingerprint=dataset.fingerprint(), submission_hash=digest,
        device=str(dev), extra=extra,
    )
    # a validation-split score is not a test-set result: it carries no test-set fingerprint
    return with_test_set(result, spec, data_dir, dataset, split) if split_role == "test" else result


def retrieval_inputs(split: Split, caption_image_index: np.ndarray, n_images: int) -> dict[str, dict[str, Any]]:
    """What a retrieval model encodes, in gallery order: one row per image (the image modality
    of its first caption's sample; the split holds one sample per caption) and one per caption,
    each with its presence mask and, for a sequence modality, its lengths."""
    from mmbench.core.errors import DataError

    missing = [m for m in ("image", "text") if m not in split.modalities]
    if missing:
        raise DataError(f"a retrieval split needs modalities image and text; split {split.name!r} has "
                        f"{', '.join(split.modality_names)}")
    index = np.asarray(caption_image_index, dtype=np.int64)
    if len(split) != len(index) or not np.array_equal(split.targets.cpu().numpy(), index):
        raise DataError(f"the dataset's split {split.name!r} does not match its retrieval gallery "
                        f"({len(split)} samples, {len(index)} captions)")
    rows, first = np.unique(index, return_index=True)
    if not np.array_equal(rows, np.arange(n_images)):
        raise DataError(f"{n_images - len(rows)} gallery image(s) have no caption")

    def rows_of(m: str, at: torch.Tensor | None) -> dict[str, Any]:
        pick = (lambda t: t) if at is None else (lambda t: t.index_select(0, at))
        return {"x": pick(split.modalities[m]), "present": pick(split.present[m]),
                "lengths": pick(split.lengths[m]) if m in split.lengths else None}

    return {"image": rows_of("image", torch.from_numpy(first.astype(np.int64))), "text": rows_of("text", None)}


@torch.no_grad()
def embed_gallery(model: Any, split: Split, device: torch.device | str = "cpu",
                  batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image embeddings ``[n_images, D]``, caption embeddings ``[n_captions, D]``,
    caption -> image index, image absent bool) of a retrieval split, in gallery order."""
    index = split.targets.cpu().numpy().astype(np.int64)
    inputs = retrieval_inputs(split, index, int(index.max()) + 1 if len(index) else 0)
    model.eval()
    device = torch.device(device)

    def run(encode, part: dict[str, Any]) -> np.ndarray:
        out = [encode(part["x"][i:i + batch_size].to(device), part["present"][i:i + batch_size].to(device)).float().cpu()
               for i in range(0, len(part["x"]), batch_size)]
        return torch.cat(out).numpy()

    absent = ~inputs["image"]["present"].cpu().numpy().astype(bool)
    return run(model.encode_image, inputs["image"]), run(model.encode_text, inputs["text"]), index, absent


def _permute(inputs: dict[str, Any], order: np.ndarray) -> dict[str, Any]:
    idx = torch.from_numpy(order)
    return {k: (v.index_select(0, idx) if v is not None else None) for k, v in inputs.items()}


def _evaluate_retrieval_model(spec: TaskSpec, model_spec: str, weights: Any, name: str, device: str, data_dir: Any,
                              conditions: Any, sandbox_config: Any, limits: Any,
                              keep_predictions: dict[str, Any] | None = None) -> Result:
    """A retrieval model, run in the sandbox worker: ``encode_image(image[, present])`` on every
    gallery image and ``encode_text(text[, present][, lengths])`` on every caption, in batches,
    each returning ``[B, D]``. The embeddings pass the .npz checks and are scored like an .npz."""
    from mmbench.core.errors import SubmissionError
    from mmbench.evaluation.sandbox.runner import SandboxConfig, run_retrieval_model
    from mmbench.evaluation.submissions.checks import submission_hash
    from mmbench.evaluation.submissions.models import check_retrieval_program, parse_model_spec
    from mmbench.evaluation.submissions.retrieval import check_embeddings
    from mmbench.data.splits import load_task_split, task_dataset
    from mmbench.models.checkpoint import resolve_device

    ms = parse_model_spec(model_spec, weights, limits)
    if ms.kind == "exported":
        check_retrieval_program(ms.source)
    if conditions and [c.name for c in select_conditions(spec, conditions)] != ["clean"]:
        raise SubmissionError(f"task {spec.name!r}: retrieval models are scored under the clean condition only")
    dev = resolve_device(device)
    dataset = task_dataset(spec, data_dir)
    image_ids, caption_ids, cap_index, fingerprint = retrieval_gallery(spec, data_dir, dataset)
    test_split = load_task_split(spec, "test", data_dir, dataset)
    if ms.kind == "baseline":
        return _evaluate_retrieval_checkpoint(spec, ms.weights, name, dev, test_split, cap_index, image_ids,
                                              caption_ids, fingerprint, limits, submission_hash(ms.files))
    inputs = retrieval_inputs(test_split, cap_index, len(image_ids))
    # rows go out in a fresh random order: the gallery's order (captions grouped by image) would reveal the answers
    rng = np.random.default_rng()
    order = {m: rng.permutation(len(v["x"])) for m, v in inputs.items()}
    out = run_retrieval_model(ms, spec, {m: _permute(v, order[m]) for m, v in inputs.items()}, str(dev),
                              sandbox_config or SandboxConfig(), max_dim=limits.max_embedding_dim)
    emb = {}
    for m, sent in out.outputs.items():
        emb[m] = np.empty_like(sent)
        emb[m][order[m]] = sent
    source = ms.source
    absent = ~inputs["image"]["present"].cpu().numpy().astype(bool)
    dim = check_embeddings(source, emb["image"], emb["text"], limits,
                           labels=("model output for images", "model output for captions"),
                           row_names=(image_ids, caption_ids), image_absent=absent)
    digest, files = submission_hash(ms.files)
    if keep_predictions is not None:  # the .npz a predictions-file submitter would give
        keep_predictions.update({"image_ids": image_ids, "image_embeddings": emb["image"], "caption_ids": caption_ids,
                                 "caption_embeddings": emb["text"]})
    return retrieval_result(spec, name, "model", emb["image"], emb["text"], cap_index, source, fingerprint, digest,
                            efficiency=out.efficiency, device=str(dev),
                            extra={"model": ms.kind, "images": len(image_ids), "captions": len(caption_ids),
                                   "embedding_dim": dim, "submission_files": files,
                                   "sandbox_seconds": round(out.seconds, 3), "isolation": out.isolation},
                            gallery=(image_ids, caption_ids), presence=_gallery_presence(inputs))


def _retrieval_baseline_result(spec: TaskSpec, model: nn.Module, test_split: Split, device: torch.device, name: str,
                               fingerprint: str, digest: str, source: Any, limits: Any, extra: dict[str, Any],
                               row_names: Any = None, keep_embeddings: dict[str, np.ndarray] | None = None) -> Result:
    """Embed the test gallery with a trained dual encoder and score it like an .npz. With
    `keep_embeddings` the embeddings are rounded to float16, the precision they are stored in,
    and scored in it (so the stored file recomputes the result exactly); the dict receives them
    as ``image_embeddings`` and ``caption_embeddings``, in gallery order."""
    from mmbench.evaluation.submissions.checks import Limits
    from mmbench.evaluation.submissions.retrieval import check_embeddings

    image, text, index, absent = embed_gallery(model, test_split, device)
    if row_names is None and "gallery_image_ids" in test_split.info:
        row_names = (test_split.info["gallery_image_ids"], test_split.info["gallery_caption_ids"])
    if keep_embeddings is not None:
        stored = {"image_embeddings": image.astype(np.float16), "caption_embeddings": text.astype(np.float16)}
        image, text = (stored[k].astype(np.float32) for k in ("image_embeddings", "caption_embeddings"))
    dim = check_embeddings(source, image, text, limits or Limits.from_env(),
                           labels=("model output for images", "model output for captions"), row_names=row_names,
                           image_absent=absent)
    if keep_embeddings is not None:
        keep_embeddings.update(stored)
        extra = {**extra, "stored_precision": "float16"}
    present_text = test_split.present["text"].cpu().numpy().astype(bool)
    return retrieval_result(spec, name, "baseline", image, text, index, source, fingerprint, digest,
                            efficiency={"params": int(sum(p.numel() for p in model.parameters()))}, device=str(device),
                            extra={**extra, "images": len(image), "captions": len(text), "embedding_dim": dim},
                            gallery=row_names, presence={"image": ~absent, "text": present_text})


def _gallery_presence(inputs: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per gallery image and caption whether the data give its modality (retrieval_inputs' masks)."""
    return {"image": inputs["image"]["present"].cpu().numpy().astype(bool),
            "text": inputs["text"]["present"].cpu().numpy().astype(bool)}


def _evaluate_trained_retrieval(spec: TaskSpec, trained: Any, test_split: Split, dataset_fingerprint: str,
                                name: str | None, keep_embeddings: dict[str, np.ndarray] | None = None) -> Result:
    model = trained.model
    result = _retrieval_baseline_result(spec, model, test_split, next(model.parameters()).device,
                                        name or trained.config.fusion, dataset_fingerprint, state_hash(model),
                                        trained.run_dir, None,
                                        {"best_epoch": trained.best_epoch, "validation": trained.val_metrics,
                                         "train_seconds": trained.seconds}, keep_embeddings=keep_embeddings)
    return result.model_copy(update={"fusion": trained.config.fusion, "seed": trained.config.seed})


def _evaluate_retrieval_checkpoint(spec: TaskSpec, weights: Any, name: str, device: torch.device, test_split: Split,
                                   cap_index: np.ndarray, image_ids: list[str], caption_ids: list[str],
                                   fingerprint: str, limits: Any, hashed: tuple[str, Any]) -> Result:
    """`--model baseline --weights best.safetensors` on a retrieval task: the dual encoder that
    `mmbench train` wrote, loaded in-process (safetensors, digest checked, nothing unpickled)."""
    from mmbench.core.errors import SubmissionError
    from mmbench.models.dual_encoder import DualEncoder
    from mmbench.models.model import describe_inputs
    from mmbench.models.checkpoint import load_model

    model, config = load_model(weights, device)
    if not isinstance(model, DualEncoder):
        raise SubmissionError(f"checkpoint is a {config.get('fusion')!r} classifier, not a retrieval dual encoder", weights)
    if config.get("task") != spec.name:
        raise SubmissionError(f"checkpoint was trained for task {config.get('task')!r}, not {spec.name!r}", weights)
    if config.get("inputs") != describe_inputs(test_split):
        raise SubmissionError(_input_mismatch(config.get("inputs") or {}, describe_inputs(test_split), spec.name), weights)
    if not np.array_equal(test_split.targets.cpu().numpy(), cap_index):
        raise SubmissionError("the task's test split does not match its retrieval gallery", weights)
    digest, files = hashed
    result = _retrieval_baseline_result(spec, model, test_split, device, name, fingerprint, digest, weights, limits,
                                        {"model": "baseline", "state_hash": state_hash(model), "submission_files": files},
                                        row_names=(image_ids, caption_ids))
    return result.model_copy(update={"fusion": config.get("fusion"), "seed": config.get("seed")})
