from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.models.fusions.base import Fusion, masked
from mmbench.core.registry import FUSIONS


@FUSIONS.register("unimodal")
class UnimodalFusion(Fusion):
    """Baseline that uses one modality only (option `modality`, required): its masked
    embedding and presence bit -> MLP. Every other modality is ignored, so running it once
    per modality gives the "each modality alone" rows of a benchmark table."""

    def __init__(self, input_dims: dict[str, int], out_dim: int, modality: str | None = None, hidden: int = 128,
                 dropout: float = 0.1):
        super().__init__(input_dims, out_dim)
        if modality is None:
            raise ValueError(f"unimodal fusion: option 'modality' is required (one of {', '.join(self.modalities)})")
        if modality not in input_dims:
            raise ValueError(f"unimodal fusion: modality {modality!r} is not one of {', '.join(self.modalities)}")
        self.modality = modality
        self.mlp = nn.Sequential(nn.Linear(input_dims[modality] + 1, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim))

    def used_modalities(self) -> list[str]:
        return [self.modality]

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor], sequences=None, masks=None) -> Tensor:
        m = self.modality
        x = masked(embeddings[m], present[m])
        return self.mlp(torch.cat([x, present[m][:, None].to(x.dtype)], dim=1))
