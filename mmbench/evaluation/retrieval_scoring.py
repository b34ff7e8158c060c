"""Scoring retrieval embeddings: the task's test gallery, an embeddings `.npz` scored against
it, and the Result of checked embeddings (from an .npz, a model or a baseline).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmbench.data.tasks import TaskSpec
from mmbench.evaluation.results import Result, make_result
from mmbench.evaluation.summaries import check_finite_metrics, robustness_summary


def retrieval_gallery(spec: TaskSpec, data_dir: Any = None, dataset: Any = None) -> tuple[list[str], list[str], np.ndarray, str]:
    """(image ids, caption ids, caption -> image index, dataset fingerprint) of a retrieval
    task's test split, from the dataset loader's labels-only gallery reader."""
    import importlib

    from mmbench.core.errors import SpecError
    from mmbench.data.splits import task_dataset

    dataset = task_dataset(spec, data_dir) if dataset is None else dataset
    split = spec.splits.test
    method = getattr(dataset, "load_retrieval_gallery", None)
    if callable(method):
        gallery = method(split)
    else:
        fn = getattr(importlib.import_module(type(dataset).__module__), "load_retrieval_gallery", None)
        if fn is None:
            raise SpecError(f"task {spec.name!r}: dataset {spec.dataset.name!r} provides no retrieval gallery", spec.source)
        import inspect

        params = inspect.signature(fn).parameters
        options = {k: v for k, v in dataset.options.items() if k in params and k not in ("root", "split")}
        gallery = fn(dataset.root, split, **options)
    image_ids, caption_ids, caption_image_index = gallery
    return ([str(i) for i in image_ids], [str(i) for i in caption_ids], np.asarray(caption_image_index, dtype=np.int64),
            dataset.fingerprint())


def evaluate_embeddings(spec: TaskSpec, path: Any, name: str, data_dir: Any, limits: Any) -> Result:
    """Score a retrieval .npz of embeddings against the task's test gallery."""
    from pathlib import Path

    from mmbench.core.errors import SubmissionError
    from mmbench.data.splits import task_dataset
    from mmbench.data.testset import task_test_set, testset_fields
    from mmbench.evaluation.submissions.checks import submission_hash
    from mmbench.evaluation.submissions.retrieval import parse_retrieval

    dataset = task_dataset(spec, data_dir)
    image_ids, caption_ids, cap_index, fingerprint = retrieval_gallery(spec, data_dir, dataset)
    sub = parse_retrieval(path, image_ids, caption_ids, cap_index, limits)
    digest, files = submission_hash([Path(path)])
    result = retrieval_result(spec, name, "predictions", sub.image_embeddings, sub.caption_embeddings,
                              sub.caption_image_index, path, fingerprint, digest, efficiency=None,
                              extra={"format": "npz", "images": len(image_ids), "captions": len(caption_ids),
                                     "embedding_dim": sub.dim, "submission_files": files})
    result = result.model_copy(update=testset_fields(task_test_set(spec, data_dir, dataset)))
    if sub.claimed_test_set is not None and sub.claimed_test_set != result.test_set_fingerprint:
        raise SubmissionError(f"the embeddings claim test set {sub.claimed_test_set}, but task {spec.name!r} here has test "
                              f"set {result.test_set_fingerprint} (protocol {result.protocol}): other test items", path)
    return result


def retrieval_result(spec: TaskSpec, name: str, kind: str, image_embeddings: np.ndarray,
                     caption_embeddings: np.ndarray, caption_image_index: np.ndarray, source: Any,
                     fingerprint: str, digest: str, efficiency: Any, extra: dict[str, Any],
                     device: str | None = None) -> Result:
    """The Result of checked retrieval embeddings (from an .npz or a model): recall@k under the
    clean condition, the only one a retrieval gallery has."""
    from mmbench.evaluation.retrieval import retrieval_metrics

    allm = retrieval_metrics(torch.from_numpy(image_embeddings), torch.from_numpy(caption_embeddings),
                             torch.from_numpy(caption_image_index))
    per_condition = {"clean": {m.name: float(allm[m.name]) for m in spec.metrics}}
    check_finite_metrics(per_condition, source)
    return make_result(
        task=spec.name, name=name, kind=kind, primary_metric=spec.primary_metric,
        higher_is_better=spec.primary.higher_is_better, metrics=per_condition, confidence_intervals={},
        robustness=robustness_summary(per_condition, spec.primary_metric, spec.primary.higher_is_better),
        efficiency=efficiency, dataset_fingerprint=fingerprint, submission_hash=digest, device=device,
        extra={**extra, "conditions_not_evaluated": [c.name for c in spec.conditions() if c.name != "clean"]},
    )
