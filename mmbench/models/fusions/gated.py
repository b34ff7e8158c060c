from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.models.fusions.base import Fusion, masked, presence_matrix
from mmbench.core.registry import FUSIONS


@FUSIONS.register("gated")
class GatedFusion(Fusion):
    """Gated Multimodal Unit (Arevalo et al., 2017) generalised to N modalities.

    Each modality gives a candidate ``h_m = tanh(W_m x_m)`` of `dim` features. A gate
    network reads all (masked) embeddings plus the presence bits and gives per-feature
    logits for every modality; a softmax over the *present* modalities only turns them into
    weights ``z_m`` (for two modalities this is GMU's ``z`` and ``1 - z``), and
    ``h = sum_m z_m * h_m`` is projected to `out_dim`. A sample with no modality gets
    ``h = 0``.
    """

    def __init__(self, input_dims: dict[str, int], out_dim: int, dim: int = 128, dropout: float = 0.1):
        super().__init__(input_dims, out_dim)
        self.dim = dim
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in sorted(input_dims.items())})
        self.gate = nn.Linear(sum(input_dims.values()) + len(input_dims), dim * len(input_dims))
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, out_dim))

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor], sequences=None, masks=None) -> Tensor:
        xs = [masked(embeddings[m], present[m]) for m in self.modalities]
        keep = presence_matrix(present, self.modalities)  # [B, M]
        h = torch.stack([torch.tanh(self.proj[m](x)) for m, x in zip(self.modalities, xs)], dim=1)  # [B, M, dim]
        logits = self.gate(torch.cat(xs + [keep.to(xs[0].dtype)], dim=1)).view(-1, len(self.modalities), self.dim)
        keep3 = keep[:, :, None]
        logits = logits.masked_fill(~keep3, float("-inf"))
        # all-missing rows would be softmax(-inf, ..., -inf) = NaN: give them finite logits,
        # their weights are zeroed below anyway
        logits = torch.where(keep3.any(dim=1, keepdim=True), logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
        weights = torch.softmax(logits, dim=1) * keep3.to(logits.dtype)
        return self.out((weights * h).sum(dim=1))
