from __future__ import annotations

import math

from torch import Tensor, nn

from mmbench.models.encoders.base import Encoded, Encoder
from mmbench.core.registry import ENCODERS


@ENCODERS.register("mlp")
class MLPEncoder(Encoder):
    """Fixed-shape array [B, *shape] -> flattened [B, prod(shape)] -> [B, out_dim] through `layers`
    Linear-GELU-LayerNorm blocks (a vector [B, F] is the common case)."""

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 128, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        dims = [math.prod(int(d) for d in sample_shape)] + [hidden] * (layers - 1) + [out_dim]
        blocks: list[nn.Module] = []
        for i in range(len(dims) - 1):
            blocks += [nn.Linear(dims[i], dims[i + 1]), nn.GELU(), nn.LayerNorm(dims[i + 1])]
            if i < len(dims) - 2 and dropout:
                blocks.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*blocks)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        return Encoded(self.net(x.flatten(1).float()))
