"""A task's test set and its fingerprint: what makes two results comparable.

The **test-set fingerprint** is a SHA-256 (first 16 hex digits, prefixed ``ts1-``) over, in
order:

- the protocol name (the loader's :meth:`~mmbench.data.datasets.base.MultimodalDataset.protocol`,
  e.g. ``coco-val2017-5k``, ``hateful-memes-phase2-seen``) and the test split's name;
- the ordered test ids and their targets (class labels as int64, real or multi-label targets
  as float64, little-endian); for retrieval, the caption ids, the gallery's image ids and the
  caption-to-image map;
- the task's missing-modality seed and, per condition in the task's order, its name and the
  keep-mask of every modality as the masks protocol (:data:`mmbench.data.masks.MASKS_PROTOCOL`)
  draws it for complete data (the data's own presence then decides which modality an affected
  item loses, :mod:`mmbench.data.masks`). A result made under an earlier protocol stores the
  fingerprint of that protocol's masks; ``leaderboard verify`` recomputes it so.

It is computed from the annotation files alone (a loader's labels-only path: ``load_labels``
or the retrieval gallery), never from images or features, so ``mmbench data info TASK``
prints it in a second and two machines holding the same test set print the same value. The
fingerprint of a result says which test set it was scored on; the board ranks only entries of
one fingerprint together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from mmbench.data.datasets.base import MultimodalDataset
    from mmbench.data.tasks import TaskSpec

FINGERPRINT_PREFIX = "ts1-"


@dataclass
class TestSet:
    """The test items of a task (labels only). For retrieval, ``ids`` are the caption ids,
    ``targets`` the row of each caption's image in ``gallery`` (the image ids)."""

    __test__ = False  # not a pytest test class

    protocol: str
    split: str
    ids: list[str]
    targets: np.ndarray
    fingerprint: str
    gallery: list[str] | None = None
    # {modality: bool [N]}, the data's own presence per test item, known when the split was loaded
    # (None for retrieval and a labels-only read): which conditions coincide and which items
    # have nothing present (mmbench.evaluation.presence)
    present: dict[str, np.ndarray] | None = None


def _target_bytes(targets: np.ndarray) -> bytes:
    arr = np.asarray(targets)
    if arr.dtype.kind in "iub":
        return np.ascontiguousarray(arr.astype("<i8")).tobytes()
    return np.ascontiguousarray(arr.astype("<f8")).tobytes()


def fingerprint_of(protocol: str, split: str, ids: Sequence[str], targets: np.ndarray, masks: Sequence[tuple[str, dict]],
                   seed: int, gallery: Sequence[str] | None = None) -> str:
    """The fingerprint of one test set (module docstring); `masks`: (condition name,
    {modality: bool keep-mask}) in the task's order."""
    h = hashlib.sha256(b"mmbench-test-set-v1\0")
    h.update(json.dumps({"protocol": protocol, "split": split, "n": len(ids), "seed": int(seed),
                         "gallery": None if gallery is None else len(gallery),
                         "target_shape": list(np.asarray(targets).shape)}, sort_keys=True).encode())
    h.update(b"\0ids\0" + "\n".join(str(i) for i in ids).encode())
    if gallery is not None:
        h.update(b"\0gallery\0" + "\n".join(str(i) for i in gallery).encode())
    h.update(b"\0targets\0" + _target_bytes(targets))
    for name, by_modality in masks:
        h.update(f"\0condition\0{name}".encode())
        for modality in sorted(by_modality):
            h.update(f"\0{modality}\0".encode() + np.packbits(np.asarray(by_modality[modality], dtype=bool)).tobytes())
    return FINGERPRINT_PREFIX + h.hexdigest()[:16]


def split_labels(dataset: MultimodalDataset, split: str) -> tuple[list[str], np.ndarray]:
    """(ids, targets) of `split` from the loader's labels-only path (``load_labels``) when it
    has one, else from the loaded split."""
    labels_fn = getattr(dataset, "load_labels", None)
    if callable(labels_fn):
        ids, targets = labels_fn(split)
        return [str(i) for i in ids], np.asarray(targets.cpu().numpy() if hasattr(targets, "cpu") else targets)
    return loaded_labels(dataset.load_split(split))


def loaded_labels(loaded: Any) -> tuple[list[str], np.ndarray]:
    """(ids, targets) of a loaded :class:`~mmbench.data.samples.Split`."""
    return [str(i) for i in loaded.ids], loaded.targets.cpu().numpy()


def task_test_set(spec: TaskSpec, data_dir: str | Path | None = None, dataset: MultimodalDataset | None = None,
                  loaded: Any = None, masks_protocol: int | None = None,
                  condition_names: Sequence[str] | None = None) -> TestSet:
    """The task's test set and its fingerprint, from the annotation files (no image is decoded,
    nothing is encoded); `loaded`, the test split already loaded, gives its ids and targets.
    `masks_protocol` and `condition_names` (default: the current protocol and the task's
    conditions) recompute the fingerprint a result made under an earlier protocol stored."""
    from mmbench.data.masks import MASKS_PROTOCOL, parse_condition, protocol_masks
    from mmbench.data.splits import task_dataset

    dataset = dataset or task_dataset(spec, data_dir)
    split = spec.splits.test
    gallery: list[str] | None = None
    if spec.target.type == "retrieval":
        image_ids, caption_ids, index = dataset.load_retrieval_gallery(split)  # type: ignore[attr-defined]
        ids, targets, gallery = [str(c) for c in caption_ids], np.asarray(index, dtype=np.int64), [str(i) for i in image_ids]
    elif loaded is not None:
        ids, targets = loaded_labels(loaded)
    elif callable(getattr(dataset, "load_labels", None)):
        ids, targets = split_labels(dataset, split)
    else:  # the loader has no labels-only path: the split is loaded once, its presence kept
        loaded = dataset.load_split(split)
        ids, targets = loaded_labels(loaded)
    mask_ids = ids if gallery is None else gallery  # retrieval masks the gallery's images
    version = MASKS_PROTOCOL if masks_protocol is None else int(masks_protocol)
    conditions = spec.conditions() if condition_names is None else [parse_condition(c, spec.modalities)
                                                                     for c in condition_names]
    masks = [(c.name, protocol_masks(c, mask_ids, spec.modalities, spec.missing.seed, split, version))
             for c in conditions]
    protocol = dataset.protocol()
    present = None if gallery is not None or loaded is None else loaded_presence(loaded, spec.modalities)
    return TestSet(protocol, split, ids, targets, fingerprint_of(protocol, split, ids, targets, masks,
                                                                 spec.missing.seed, gallery), gallery, present)


def loaded_presence(loaded: Any, modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """The data's own presence of each modality per item of a loaded split."""
    n = len(loaded.ids)
    return {m: loaded.present[m].cpu().numpy().astype(bool) if m in loaded.present else np.ones(n, dtype=bool)
            for m in modalities}


def presence_from_counts(counts: dict[str, int], modalities: Sequence[str], n: int) -> dict[str, np.ndarray] | None:
    """Per-item presence from per-modality counts (``split_summary``) when each modality is in
    every item or in none; else None (the counts do not say which items)."""
    if not all(counts.get(m, n) in (0, n) for m in modalities):
        return None
    return {m: np.full(n, counts.get(m, n) == n) for m in modalities}


def testset_fields(test_set: TestSet | None) -> dict[str, Any]:
    """The fields a result stores about its test set (nothing when unknown)."""
    if test_set is None:
        return {}
    return {"test_set_fingerprint": test_set.fingerprint, "protocol": test_set.protocol}
