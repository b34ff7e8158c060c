from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn


class Encoded(NamedTuple):
    """An encoder's output: one vector per sample, and for sequence encoders the per-step
    features with a bool mask (True = real step)."""

    pooled: Tensor  # [B, D]
    sequence: Tensor | None = None  # [B, T, D]
    mask: Tensor | None = None  # [B, T]


class Encoder(nn.Module):
    """Base class: `out_dim` is the size of `Encoded.pooled` (and of sequence steps)."""

    out_dim: int
    # True when forward takes `present` (bool [B]): encoders with batch statistics use it
    # so that missing samples' fill values stay out of them
    uses_present: bool = False

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:  # pragma: no cover
        raise NotImplementedError


def default_encoder_for(sample_shape: tuple[int, ...], is_sequence: bool) -> str:
    """Pick an encoder from a modality's per-sample shape: vectors -> mlp, [T, F] sequences
    -> gru, [C, H, W] or [H, W] images/spectrograms -> cnn, [T, C, H, W] frame stacks (or
    sequences of [C, H, W] frames) -> video."""
    if is_sequence:
        return "video" if len(sample_shape) == 3 else "gru"
    if len(sample_shape) == 1:
        return "mlp"
    return "video" if len(sample_shape) == 4 else "cnn"
