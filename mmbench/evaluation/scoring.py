"""Scoring predictions against a task's labels: the metrics, their bootstrap CI and the
robustness summary (mmbench.evaluation.summaries), and `evaluate_predictions` for a predictions file.

This path imports neither torch nor any model code, so scoring a file needs only the task's
ids and labels (a loader's `load_labels`, where it has one) and starts fast. Retrieval
embeddings (.npz) are scored by mmbench.evaluation.retrieval_scoring, which needs torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mmbench.evaluation.metrics import bootstrap_ci, compute_metrics, confusion_matrix
from mmbench.evaluation.results import Result, make_result
from mmbench.evaluation.summaries import check_finite_metrics, robustness_summary
from mmbench.evaluation.targets import predicted_labels, uses_scores

if TYPE_CHECKING:
    from mmbench.data.tasks import TaskSpec


def score(spec: TaskSpec, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The task's metrics (those listed in the spec) for one set of predictions."""
    scores = y_pred if uses_scores(spec) else None
    allm = compute_metrics(spec.target.type, y_true, predicted_labels(spec, y_pred), spec.target.num_classes, scores=scores)
    return {m.name: float(allm[m.name]) for m in spec.metrics}


def item_record(spec: TaskSpec, ids: Any, y_true: np.ndarray, y_clean: np.ndarray) -> dict[str, Any]:
    """The clean per-item predictions a result keeps for paired significance on the board, with
    each item's cluster key where the task declares a resampling unit (``spec.cluster``)."""
    from mmbench.evaluation.significance import item_record as record

    unit = spec.cluster
    clusters = unit.keys(ids, y_true) if unit is not None else None
    return {"test_items": record(ids, y_true, y_clean, spec.target.type, spec.target.num_classes, scores=uses_scores(spec),
                                 clusters=clusters, unit=unit.unit if unit is not None else None)}


def primary_ci(spec: TaskSpec, y_true: np.ndarray, y_pred: np.ndarray, seed: int = 0, n_resamples: int = 1000) -> dict[str, float]:
    from mmbench.evaluation.metrics import single_metric

    metric, target = spec.primary_metric, spec.target

    def primary(t: np.ndarray, p: np.ndarray) -> float:  # = score(spec, t, p)[metric], the one metric alone
        return single_metric(target.type, metric, t, predicted_labels(spec, p), target.num_classes,
                             scores=p if uses_scores(spec) else None)

    return bootstrap_ci(primary, (y_true, y_pred), n_resamples=n_resamples, seed=seed)


def classification_extras(spec: TaskSpec, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Clean-condition confusion matrix (rows = truth) and class names, for reports."""
    if spec.target.type not in ("multiclass", "binary"):
        return {}
    cm = confusion_matrix(y_true, predicted_labels(spec, y_pred), spec.target.num_classes)
    names = spec.target.class_names or [str(i) for i in range(spec.target.num_classes)]
    return {"confusion_matrix": cm.tolist(), "class_names": names}


def select_conditions(spec: TaskSpec, conditions: Any) -> list:
    """The task's conditions, or the named subset of them (names are canonicalised)."""
    from mmbench.core.errors import SpecError
    from mmbench.data.masks import parse_condition

    task_conditions = spec.conditions()
    if not conditions:
        return task_conditions
    by_name = {c.name: c for c in task_conditions}
    out = []
    for text in conditions:
        for part in str(text).split(","):
            if not part.strip():
                continue
            name = parse_condition(part, spec.modalities).name
            if name not in by_name:
                raise SpecError(f"condition {part.strip()!r} is not one of task {spec.name!r}'s conditions "
                                f"({', '.join(by_name)})")
            if by_name[name] not in out:
                out.append(by_name[name])
    if not out:
        raise SpecError("--conditions names no condition")
    return out


def check_complete(spec: TaskSpec, evaluated: Any, source: Any) -> None:
    """Refuse predictions that leave out some of the task's conditions (their robustness would
    look perfect); ``--allow-partial`` (or naming ``--conditions``) skips this check."""
    from mmbench.core.errors import SubmissionError

    missing = [c.name for c in spec.conditions() if c.name not in evaluated]
    if missing and spec.target.type != "retrieval":
        raise SubmissionError(f"predictions cover {len(evaluated)} of task {spec.name!r}'s {len(spec.conditions())} "
                              f"conditions; missing {', '.join(missing)}. Predict every condition, or pass "
                              "--allow-partial (the entry then shows the missing robustness as absent)", source)


def check_range(spec: TaskSpec, predictions: dict[str, np.ndarray], source: Any, clip: bool = False) -> dict[str, np.ndarray]:
    """Regression predictions outside the task's declared ``target.range`` are refused, or,
    with `clip` (``--clip-range``), clipped to it; other tasks pass unchanged."""
    from mmbench.core.errors import SubmissionError

    if spec.target.type != "regression" or spec.target.range is None:
        return predictions
    lo, hi = spec.target.range
    out = {}
    for cond, p in predictions.items():
        p = np.asarray(p, dtype=np.float64)
        outside = (p < lo) | (p > hi)
        if outside.any() and not clip:
            worst = p[outside][np.argmax(np.abs(p[outside]))]
            raise SubmissionError(f"{int(outside.sum())} of {len(p)} predictions under {cond!r} lie outside task "
                                  f"{spec.name!r}'s range [{lo:g}, {hi:g}] (e.g. {worst:g}); clip them, or pass "
                                  "--clip-range to have them clipped (recorded in the entry)", source)
        out[cond] = np.clip(p, lo, hi)
    return out


def clean_ci(spec: TaskSpec, y_true: np.ndarray, predictions: dict[str, np.ndarray], seed: int, n_resamples: int) -> dict:
    if n_resamples <= 0 or "clean" not in predictions:
        return {}
    ci = primary_ci(spec, y_true, predictions["clean"], seed=seed, n_resamples=n_resamples)
    return {"clean": {spec.primary_metric: {k: float(v) for k, v in ci.items()}}}


def evaluate_predictions(spec: TaskSpec, path: Any, name: str, data_dir: Any = None, conditions: Any = None,
                         limits: Any = None, seed: int = 0, n_resamples: int = 1000, labels: Any = None,
                         allow_partial: bool = True, out_of_range: str = "accept", split_role: str = "test") -> Result:
    """Score a predictions file (CSV / JSON lines / Parquet, or an embeddings .npz for
    retrieval) against the task's test labels (`labels`: already loaded `TestLabels`, e.g.
    when verifying many entries of one task). Runs no submitted code. Raises
    SubmissionError (naming the file) for anything malformed; writes nothing.
    `allow_partial=False` refuses a file without every condition (:func:`check_complete`);
    `out_of_range` is ``accept``, ``refuse`` or ``clip`` (:func:`check_range`); `split_role`
    ``validation`` scores against the validation split's labels instead."""
    from pathlib import Path

    from mmbench.evaluation.submissions.checks import Limits, check_name, submission_hash

    from mmbench.evaluation.submissions.tables import load_test_labels, parse_predictions
    from mmbench.data.testset import testset_fields

    check_name(name)
    limits = limits or Limits.from_env()
    path = Path(path)
    if spec.target.type == "retrieval":
        from mmbench.core.errors import SubmissionError
        from mmbench.evaluation.retrieval_scoring import evaluate_embeddings

        if split_role != "test":
            raise SubmissionError(f"task {spec.name!r}: retrieval embeddings are scored on the test gallery only", path)
        return evaluate_embeddings(spec, path, name, data_dir, limits)
    selected = [c.name for c in select_conditions(spec, conditions)] if conditions else None
    labels = labels if labels is not None else load_test_labels(spec, data_dir, split_role)
    parsed = parse_predictions(path, spec, labels, selected, limits)
    if not allow_partial and not conditions:
        check_complete(spec, parsed.predictions, path)
    if out_of_range != "accept":
        parsed.predictions = check_range(spec, parsed.predictions, path, clip=out_of_range == "clip")
    per_condition = {c: score(spec, labels.targets, p) for c, p in parsed.predictions.items()}
    check_finite_metrics(per_condition, path)
    digest, files = submission_hash([path])
    task_conditions = [c.name for c in spec.conditions()]
    extra = {"format": parsed.fmt, "rows": parsed.rows, "values": parsed.value_kind, "submission_files": files,
             "conditions_not_evaluated": [c for c in task_conditions if c not in per_condition]}
    if out_of_range == "clip" and spec.target.type == "regression" and spec.target.range is not None:
        extra["clipped_to_range"] = list(spec.target.range)
    if split_role != "test":
        extra["split"] = split_role
    if "clean" in parsed.predictions:
        extra |= classification_extras(spec, labels.targets, parsed.predictions["clean"])
        extra |= item_record(spec, labels.ids, labels.targets, parsed.predictions["clean"])
    return make_result(
        task=spec.name, name=name, kind="predictions", primary_metric=spec.primary_metric,
        higher_is_better=spec.primary.higher_is_better, metrics=per_condition,
        confidence_intervals=clean_ci(spec, labels.targets, parsed.predictions, seed, n_resamples),
        robustness=robustness_summary(per_condition, spec.primary_metric, spec.primary.higher_is_better),
        efficiency=None, dataset_fingerprint=labels.fingerprint, submission_hash=digest, extra=extra,
        **testset_fields(labels.test_set),
    )
