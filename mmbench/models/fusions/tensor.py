from __future__ import annotations


import torch
from torch import Tensor, nn

from mmbench.models.fusions.base import Fusion, masked
from mmbench.core.registry import FUSIONS


@FUSIONS.register("tensor")
class TensorFusion(Fusion):
    """Tensor Fusion Network (Zadeh et al., 2017).

    Each modality's embedding is projected to `dim` features (Linear + tanh), a constant 1
    is prepended, ``z_m = [1, h_m]``, and the outer product ``z_1 (x) z_2 (x) ... (x) z_M``
    (over modalities in sorted order) is flattened and fed to an MLP. Because of the constant
    term the product holds every unimodal, bimodal, ... and M-modal interaction.

    Missing modalities: a missing modality contributes ``z_m = [1, 0, ..., 0]``, i.e. only
    its constant term. This is how TFN's formulation naturally degrades: every product
    involving the missing modality's features vanishes and what remains is exactly the
    tensor fusion of the present modalities (embedded in the same feature layout). The
    fusion therefore never reads a missing modality's fill value.

    The product has ``(dim + 1) ** M`` features; `max_features` guards against a blow-up.
    """

    def __init__(self, input_dims: dict[str, int], out_dim: int, dim: int = 16, hidden: int = 128,
                 dropout: float = 0.1, max_features: int = 1 << 18):
        super().__init__(input_dims, out_dim)
        size = (dim + 1) ** len(input_dims)
        if size > max_features:
            raise ValueError(f"tensor fusion: (dim + 1) ** modalities = {size} features exceeds max_features="
                             f"{max_features}; lower `dim` or use the `lowrank` fusion")
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, dim), nn.Tanh()) for m, d in sorted(input_dims.items())})
        self.mlp = nn.Sequential(nn.Linear(size, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor], sequences=None, masks=None) -> Tensor:
        fused = None
        for m in self.modalities:
            h = masked(self.proj[m](masked(embeddings[m], present[m])), present[m])
            z = torch.cat([torch.ones_like(h[:, :1]), h], dim=1)  # [B, dim + 1]
            fused = z if fused is None else (fused[:, :, None] * z[:, None, :]).flatten(1)
        return self.mlp(fused)
