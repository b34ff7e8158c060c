"""Scoring retrieval embeddings: the task's test gallery, an embeddings `.npz` scored against
it, and the Result of checked embeddings (from an .npz, a model or a baseline).

A retrieval result stores, besides recall@k (:mod:`mmbench.evaluation.retrieval`, ties broken
uniformly at random in expectation):

- ``extra["test_queries"]`` (:func:`query_records`): per direction (``t2i``: one query per
  caption; ``i2t``: one per image) the query ids, each query's cluster (the id of the image it
  belongs to: a caption's own image, an image itself) and the counts recall@k needs for any k
  (``above``, ``tied``, ``relevant``). The board's paired test resamples images with their
  captions from these (:func:`mmbench.evaluation.resampling.retrieval_cluster_arrays`);
  `leaderboard verify` recomputes them.
- ``extra["missing"]``: how many gallery images and captions have their modality missing (the
  data's own presence: COCO images not on disk). They stay in the metric (a placeholder vector
  shared by many earns what a random order of its copies gives);
  ``extra["present_only"]`` holds recall@k over the queries whose own item is present as well
  (text-to-image: captions whose image is present; image-to-text: present images), labelled
  so wherever it is shown.
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
                                     "embedding_dim": sub.dim, "submission_files": files},
                              gallery=(image_ids, caption_ids), presence=gallery_presence(spec, dataset))
    result = result.model_copy(update=testset_fields(task_test_set(spec, data_dir, dataset)))
    if sub.claimed_test_set is not None and sub.claimed_test_set != result.test_set_fingerprint:
        raise SubmissionError(f"the embeddings claim test set {sub.claimed_test_set}, but task {spec.name!r} here has test "
                              f"set {result.test_set_fingerprint} (protocol {result.protocol}): other test items", path)
    return result


def gallery_presence(spec: TaskSpec, dataset: Any) -> dict[str, np.ndarray] | None:
    """Per gallery image (``image``) and caption (``text``) whether the data give that modality,
    from the loader's ``retrieval_presence`` (None where the loader has none)."""
    method = getattr(dataset, "retrieval_presence", None)
    return method(spec.splits.test) if callable(method) else None


def query_records(t2i: dict[str, np.ndarray], i2t: dict[str, np.ndarray], image_ids: list[str], caption_ids: list[str],
                  caption_image_index: np.ndarray) -> dict[str, Any]:
    """``extra["test_queries"]``: per direction the query ids, their clusters (image ids) and
    the per-query counts of :func:`mmbench.evaluation.retrieval.retrieval_counts`."""
    from mmbench.evaluation.retrieval import COUNT_KEYS

    images = [str(i) for i in image_ids]
    out: dict[str, Any] = {"cluster_by": "image"}
    for direction, ids, clusters, counts in (("t2i", [str(c) for c in caption_ids],
                                              [images[i] for i in np.asarray(caption_image_index)], t2i),
                                             ("i2t", images, images, i2t)):
        out[direction] = {"ids": ids, "cluster": clusters} | {k: np.asarray(counts[k]).astype(int).tolist() for k in COUNT_KEYS}
    return out


def query_record_differences(stored: dict[str, Any] | None, recomputed: dict[str, Any] | None) -> str | None:
    """How an entry's stored per-query records differ from the recomputed ones (None: they
    agree; a missing stored record is not a difference)."""
    from mmbench.evaluation.retrieval import COUNT_KEYS

    if stored is None:
        return None
    if recomputed is None:
        return "the entry has per-query records, its stored embeddings give none"
    for direction in ("t2i", "i2t"):
        a, b = stored.get(direction) or {}, recomputed[direction]
        for key in ("ids", "cluster", *COUNT_KEYS):
            if a.get(key) != b[key]:
                bad = next((n for n, (x, y) in enumerate(zip(a.get(key) or [], b[key])) if x != y), None)
                where = f" (first: query {b['ids'][bad]!r}, stored {a[key][bad]!r}, recomputed {b[key][bad]!r})" \
                    if bad is not None else f" ({len(a.get(key) or [])} stored, {len(b[key])} recomputed)"
                return f"{direction} {key} differ{where}"
    return None


def _present_only(t2i: dict[str, np.ndarray], i2t: dict[str, np.ndarray], caption_image_index: np.ndarray,
                  presence: dict[str, np.ndarray], names: list[str]) -> dict[str, Any]:
    """Recall@k over the queries whose own item is present (text-to-image: captions with their
    text whose image is present; image-to-text: present images), with the query counts."""
    from mmbench.evaluation.retrieval import COUNT_KEYS, recalls_from_counts

    image = np.asarray(presence["image"], dtype=bool)
    text = np.asarray(presence["text"], dtype=bool)
    caps = text & image[caption_image_index]
    out: dict[str, Any] = {"captions": int(caps.sum()), "images": int(image.sum())}
    if caps.any() and image.any():
        values = recalls_from_counts({k: t2i[k][caps] for k in COUNT_KEYS}, {k: i2t[k][image] for k in COUNT_KEYS})
        out["metrics"] = {n: values[n] for n in names if n in values}
    return out


def retrieval_result(spec: TaskSpec, name: str, kind: str, image_embeddings: np.ndarray,
                     caption_embeddings: np.ndarray, caption_image_index: np.ndarray, source: Any,
                     fingerprint: str, digest: str, efficiency: Any, extra: dict[str, Any],
                     device: str | None = None, gallery: tuple[list[str], list[str]] | None = None,
                     presence: dict[str, np.ndarray] | None = None) -> Result:
    """The Result of checked retrieval embeddings (from an .npz or a model): recall@k under the
    clean condition, the only one a retrieval gallery has. With `gallery` (image ids, caption
    ids) the per-query records; with `presence` the missing counts and the recalls over the
    queries whose own item is present (module docstring)."""
    from mmbench.evaluation.retrieval import recalls_from_counts, retrieval_counts

    index = np.asarray(caption_image_index, dtype=np.int64)
    t2i, i2t = retrieval_counts(torch.from_numpy(image_embeddings), torch.from_numpy(caption_embeddings),
                                torch.from_numpy(index))
    allm = recalls_from_counts(t2i, i2t)
    per_condition = {"clean": {m.name: float(allm[m.name]) for m in spec.metrics}}
    check_finite_metrics(per_condition, source)
    extra = dict(extra)
    if gallery is not None:
        extra["test_queries"] = query_records(t2i, i2t, gallery[0], gallery[1], index)
    if presence is not None:
        extra["missing"] = {"images": int((~np.asarray(presence["image"], dtype=bool)).sum()),
                            "captions": int((~np.asarray(presence["text"], dtype=bool)).sum())}
        extra["missing_images"] = extra["missing"]["images"]
        extra["present_only"] = _present_only(t2i, i2t, index, presence, [m.name for m in spec.metrics])
    return make_result(
        task=spec.name, name=name, kind=kind, primary_metric=spec.primary_metric,
        higher_is_better=spec.primary.higher_is_better, metrics=per_condition, confidence_intervals={},
        robustness=robustness_summary(per_condition, spec.primary_metric, spec.primary.higher_is_better),
        efficiency=efficiency, dataset_fingerprint=fingerprint, submission_hash=digest, device=device,
        extra={**extra, "conditions_not_evaluated": [c.name for c in spec.conditions() if c.name != "clean"]},
    )
