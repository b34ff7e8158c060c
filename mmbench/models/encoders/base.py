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


# The default image encoder (``cnn``, 3 pooling stages) halves each spatial side three times, so
# it needs sides of at least 2**3; a smaller array is not an image but a small feature table.
CNN_MIN_SIDE = 8


def default_encoder_for(sample_shape: tuple[int, ...], is_sequence: bool, tokens: bool = False) -> str:
    """Pick an encoder from a modality's per-sample shape (the rule docs/architecture.md states):

    - token ids (a sequence of integer ids, ``tokens``) -> ``embedding`` (learned embeddings of
      the tokenizer's vocabulary, then a GRU over the real tokens);
    - a sequence: of ``[C, H, W]`` frames -> ``video``, of anything else -> ``gru``;
    - a fixed-shape array whose last two sides are both at least :data:`CNN_MIN_SIDE`:
      ``[H, W]`` or ``[C, H, W]`` -> ``cnn``, ``[T, C, H, W]`` frame stacks -> ``video``;
    - any other fixed-shape array (vectors, and small arrays such as a ``[3, 2]`` table) ->
      ``mlp`` over its flattened values.
    """
    if tokens:
        return "embedding"
    if is_sequence:
        return "video" if len(sample_shape) == 3 and _image_sized(sample_shape) else "gru"
    if len(sample_shape) in (2, 3, 4) and _image_sized(sample_shape):
        return "video" if len(sample_shape) == 4 else "cnn"
    return "mlp"


def _image_sized(sample_shape: tuple[int, ...]) -> bool:
    return min(int(d) for d in sample_shape[-2:]) >= CNN_MIN_SIDE
