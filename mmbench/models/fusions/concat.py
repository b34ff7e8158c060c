from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.models.fusions.base import Fusion, masked, presence_matrix
from mmbench.core.registry import FUSIONS


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Early fusion: concatenate the (masked-to-zero) embeddings and the presence bits, then
    an MLP. The presence bits let the MLP tell a real zero from a missing modality."""

    def __init__(self, input_dims: dict[str, int], out_dim: int, hidden: int = 128, dropout: float = 0.1):
        super().__init__(input_dims, out_dim)
        total = sum(input_dims.values()) + len(input_dims)
        self.mlp = nn.Sequential(nn.Linear(total, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor], sequences=None, masks=None) -> Tensor:
        parts = [masked(embeddings[m], present[m]) for m in self.modalities]
        bits = presence_matrix(present, self.modalities).to(parts[0].dtype)
        return self.mlp(torch.cat(parts + [bits], dim=1))
