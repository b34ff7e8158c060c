"""Gaps inside a modality: ``segment:<modality>=<fraction>`` removes one contiguous span of time
steps per item (MuteBench's "within-modality missing", Zheng et al. 2026, arXiv 2605.15235: a
contiguous time segment lost while the rest of the modality is there).

Which modalities have a time axis. A sequence modality (padded, listed in ``Split.lengths``: the
clips dataset's audio) along its first axis, over each item's valid steps; a fixed-shape modality
when its loader names the axis in ``Split.info["time_axes"]`` ({modality: axis of one item's
array}: AV-MNIST's spectrogram frames, axis 2 of ``[1, mel, frames]``; the clips dataset's video
frames, axis 0 of ``[frames, 3, H, W]``). Vectors (the synthetic tasks, MOSI's utterance-level
features, frozen image and text embeddings) have none, and a segment condition on one is refused.

The span. An item with T valid steps loses ``L = floor(fraction * T + 0.5)`` consecutive steps
starting at ``floor(u * (T - L + 1))``, u = ``blake2b(seed, split, "segment:<modality>", id)``:
the same on every machine, independent of item order and batch size (:func:`segment_spans`).
An item without the modality loses nothing (start -1, length 0).

What a model receives (README "What a submitted model receives"). The masked steps hold the
modality's **training mean** at each feature (the mean over the training split's present items
and valid steps, :func:`training_mean`), not zeros, so a model that ignores the mask sees a
plausible, uninformative value; ``present`` stays True (the modality is there) and ``lengths`` is
unchanged; beside the input, ``steps`` ({modality: bool [B, T]}, True at an observed step) is
passed to a model whose ``forward`` takes a ``steps`` keyword (the built-in model does), so a model
may use it. ``mmbench data masks`` exports each item's span (``segment_start``, ``segment_length``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from mmbench.core.errors import SpecError
from mmbench.data.masks import uniform_hash

if TYPE_CHECKING:
    import torch

    from mmbench.data.samples import Split

TIME_AXES = "time_axes"


def time_axis(split: Split, modality: str) -> int | None:
    """The time axis of one item's array of `modality` (0 for a sequence modality), or None."""
    if modality in split.lengths:
        return 0
    axes = (split.info or {}).get(TIME_AXES) or {}
    return int(axes[modality]) if modality in axes else None


def require_time_axis(split: Split, modality: str, condition: str) -> int:
    axis = time_axis(split, modality)
    if axis is None:
        raise SpecError(f"condition {condition!r}: modality {modality!r} has no time axis in split {split.name!r} "
                        "(segment conditions apply to sequences and to arrays whose loader names a time axis, "
                        "e.g. AV-MNIST's spectrogram frames)")
    return axis


def valid_steps(split: Split, modality: str, axis: int) -> np.ndarray:
    """Each item's number of valid time steps of `modality` (0 where the item lacks it)."""
    present = split.present[modality].cpu().numpy().astype(bool)
    if modality in split.lengths:
        steps = split.lengths[modality].cpu().numpy().astype(np.int64)
    else:
        steps = np.full(len(split), split.modalities[modality].shape[1 + axis], dtype=np.int64)
    return np.where(present, steps, 0)


def segment_spans(ids: Sequence[str], steps: np.ndarray, fraction: float, seed: int, split: str,
                  modality: str) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) per item, in time steps (module docstring); start -1 where nothing is removed."""
    steps = np.asarray(steps, dtype=np.int64)
    length = np.floor(fraction * steps + 0.5 + 1e-9).astype(np.int64)
    length = np.minimum(length, steps)
    u = uniform_hash(seed, split, f"segment:{modality}", ids)
    start = np.floor(u * (steps - length + 1)).astype(np.int64)
    none = length == 0
    return np.where(none, -1, start), np.where(none, 0, length)


def training_mean(train: Split, modality: str, axis: int) -> torch.Tensor:
    """The mean of `modality` over the training split's present items and valid steps, one value
    per feature: the shape of one item's array without its time axis (float32)."""
    import torch

    x = train.modalities[modality].float()
    present = train.present[modality].to(torch.bool)
    t_axis = 1 + axis
    steps = x.shape[t_axis]
    valid = present[:, None].expand(-1, steps).clone()
    if modality in train.lengths:
        valid &= torch.arange(steps)[None, :] < train.lengths[modality][:, None]
    shape = [len(train)] + [1] * (x.dim() - 1)
    shape[t_axis] = steps
    w = valid.view(shape).to(x.dtype)
    total = (x * w).sum(dim=(0, t_axis))
    count = w.sum(dim=(0, t_axis)).clamp(min=1.0)
    return total / count


def span_mask(start: torch.Tensor, length: torch.Tensor, steps: int) -> torch.Tensor:
    """Bool [B, steps], True inside each row's removed span."""
    import torch

    t = torch.arange(steps, device=start.device)[None, :]
    return (t >= start[:, None]) & (t < (start + length)[:, None])


def fill_span(x: torch.Tensor, removed: torch.Tensor, axis: int, fill: torch.Tensor) -> torch.Tensor:
    """`x` [B, *item] with the steps `removed` ([B, T], along item axis `axis`) set to `fill`
    (one item's array without its time axis)."""
    import torch

    t_axis = 1 + axis
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[t_axis] = x.shape[t_axis]
    return torch.where(removed.view(shape), fill.to(x.device, x.dtype).unsqueeze(axis).unsqueeze(0), x)

