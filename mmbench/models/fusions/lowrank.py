from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.models.fusions.base import Fusion, masked
from mmbench.core.registry import FUSIONS


@FUSIONS.register("lowrank")
class LowRankFusion(Fusion):
    """Low-rank Multimodal Fusion (Liu et al., 2018).

    The tensor-fusion weight is factorised into `rank` modality-specific factors, so the
    outer product is never formed: with ``z_m = [1, x_m]`` (the embedding with a constant 1
    prepended), ``out = sum_r w_r * prod_m (z_m @ W_m[r]) + b`` where ``W_m[r]`` is
    [D_m + 1, out_dim]. Cost is linear in the number of modalities.

    Missing modalities follow the TFN convention (see `tensor`): a missing modality's
    ``z_m`` is ``[1, 0, ..., 0]``, so its factor contributes only its constant row and the
    fill value is never read.
    """

    def __init__(self, input_dims: dict[str, int], out_dim: int, rank: int = 4):
        super().__init__(input_dims, out_dim)
        if rank < 1:
            raise ValueError(f"lowrank fusion: rank must be >= 1, got {rank}")
        self.rank = rank
        # std 1/sqrt(D + 1) keeps every factor's projection near unit variance, so the
        # product over modalities neither vanishes nor explodes at initialisation
        self.factors = nn.ParameterDict({
            m: nn.Parameter(torch.randn(rank, d + 1, out_dim) / (d + 1) ** 0.5) for m, d in sorted(input_dims.items())
        })
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor], sequences=None, masks=None) -> Tensor:
        fused = None
        for m in self.modalities:
            x = masked(embeddings[m], present[m])
            z = torch.cat([torch.ones_like(x[:, :1]), x], dim=1)  # [B, D + 1]
            f = torch.einsum("bd,rdo->bro", z, self.factors[m])  # [B, rank, out_dim]
            fused = f if fused is None else fused * f
        return torch.einsum("bro,r->bo", fused, self.rank_weights) + self.bias
