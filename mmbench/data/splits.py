"""Load the splits a task spec names, from its dataset loader, and apply a missing-modality
condition to a split."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mmbench.data.datasets.base import MultimodalDataset, load_dataset
from mmbench.core.errors import SpecError
from mmbench.data.tasks import TaskSpec

if TYPE_CHECKING:
    from mmbench.data.masks import Condition
    from mmbench.data.samples import Split


def with_dataset_options(spec: TaskSpec, options: dict | None) -> TaskSpec:
    """The spec with its dataset options overlaid by `options` (e.g. a smaller synthetic set)."""
    if not options:
        return spec
    return spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"options": spec.dataset.options | options})})


@contextmanager
def naming_the_spec(spec: TaskSpec) -> Iterator[None]:
    """A spec error raised without a file (a loader's option check) names the task's spec file."""
    try:
        yield
    except SpecError as exc:
        if exc.path is None and spec.source:
            raise SpecError(str(exc), spec.source) from None
        raise


def task_dataset(spec: TaskSpec, data_dir: str | Path | None = None) -> MultimodalDataset:
    from mmbench.core.registry import DATASETS

    with naming_the_spec(spec):
        options = DATASETS.get(spec.dataset.name).task_options(spec) | spec.dataset.options
        return load_dataset(spec.dataset.name, data_dir, **options)


def load_task_split(spec: TaskSpec, role: str, data_dir: str | Path | None = None,
                    dataset: MultimodalDataset | None = None) -> Split:
    """The split playing `role` (train, validation or test), restricted to the task's modalities."""
    from mmbench.data.samples import Split

    split_name = getattr(spec.splits, role)
    if split_name is None:
        raise SpecError(f"task {spec.name!r} has no {role} split", spec.source)
    dataset = dataset or task_dataset(spec, data_dir)
    with naming_the_spec(spec):
        split = dataset.load_split(split_name)
    missing = [m for m in spec.modalities if m not in split.modalities]
    if missing:
        raise SpecError(f"task {spec.name!r} uses modality {missing[0]!r} that dataset {spec.dataset.name!r} "
                        f"does not provide (it has {', '.join(split.modality_names)})", spec.source)
    keep = set(spec.modalities)
    return Split(split.name, split.ids, {k: v for k, v in split.modalities.items() if k in keep},
                 {k: v for k, v in split.present.items() if k in keep}, split.targets,
                 {k: v for k, v in split.lengths.items() if k in keep}, split.info)


def load_training_splits(spec: TaskSpec, data_dir: str | Path | None = None,
                         dataset: MultimodalDataset | None = None) -> dict[str, Split]:
    """The train, validation and test splits of a task, from one loaded dataset; the spec's
    ``missing.train`` condition (if any) applied to train and validation."""
    dataset = dataset or task_dataset(spec, data_dir)
    splits = {role: load_task_split(spec, role, data_dir, dataset) for role in ("train", "validation", "test")}
    splits["test"] = with_training_means(spec, splits["test"], train=splits["train"])
    if spec.missing.train:
        from mmbench.data.masks import parse_condition

        condition = parse_condition(spec.missing.train, spec.modalities)
        for role in ("train", "validation"):
            splits[role] = apply_condition(splits[role], condition, spec.missing.seed)
    return splits


TRAINING_MEANS = "training_means"


def with_training_means(spec: TaskSpec, split: Split, data_dir: str | Path | None = None,
                        dataset: MultimodalDataset | None = None, train: Split | None = None) -> Split:
    """`split` with ``info["training_means"]`` ({modality: mean of one time step}) for every
    modality a segment condition of the task cuts: the value its removed span is filled with
    (mmbench.data.segments). The training split is loaded when `train` is not given."""
    from dataclasses import replace

    from mmbench.data.segments import require_time_axis, training_mean

    cut = sorted({c.modalities[0] for c in spec.conditions() if c.kind == "segment"})
    if not cut:
        return split
    train = train if train is not None else load_task_split(spec, "train", data_dir, dataset)
    with naming_the_spec(spec):
        means = {m: training_mean(train, m, require_time_axis(train, m, f"segment:{m}")) for m in cut}
    return replace(split, info={**split.info, TRAINING_MEANS: means})


def apply_condition(split: Split, condition: Condition, seed: int) -> Split:
    """`split` with the presence masks of `condition` (reproducible from `seed` and the ids)."""
    import torch

    from mmbench.data.masks import condition_masks

    present = {m: split.present[m].cpu().numpy() for m in split.modality_names}
    masks = condition_masks(condition, split.ids, split.modality_names, seed=seed, split=split.name, present=present)
    return split.with_present({m: torch.from_numpy(v) for m, v in masks.items()})
