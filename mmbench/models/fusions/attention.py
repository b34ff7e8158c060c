from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.models.fusions.base import Fusion, masked, presence_matrix
from mmbench.core.registry import FUSIONS


@FUSIONS.register("attention")
class AttentionFusion(Fusion):
    """Multi-head attention across modality tokens.

    Each modality's embedding is projected to a token and tagged with a learned modality
    embedding; `layers` transformer layers mix the tokens of present modalities (missing ones
    are key-padding-masked), then a learned query attends over them (``pool="query"``) or the
    output of a CLS token is used (``pool="cls"``). A learned null token is always present so
    a sample with no modality still has something to attend to.
    """

    def __init__(self, input_dims: dict[str, int], out_dim: int, dim: int = 64, heads: int = 4, layers: int = 1,
                 pool: str = "query", dropout: float = 0.1):
        super().__init__(input_dims, out_dim)
        if pool not in ("query", "cls"):
            raise ValueError(f"attention fusion: pool must be 'query' or 'cls', got {pool!r}")
        self.pool = pool
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in sorted(input_dims.items())})
        self.type_embed = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.null = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=dropout, batch_first=True, norm_first=True)
        self.mixer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim))

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor], sequences=None, masks=None) -> Tensor:
        # mask before projecting too, so a NaN/inf fill cannot reach the weight gradient (0 * NaN)
        tokens = torch.stack([masked(self.proj[m](masked(embeddings[m], present[m])), present[m])
                              for m in self.modalities], dim=1)
        tokens = tokens + self.type_embed[None]
        b = tokens.shape[0]
        lead = [self.null.expand(b, -1, -1)]
        if self.pool == "cls":
            lead.insert(0, self.query.expand(b, -1, -1))
        tokens = torch.cat(lead + [tokens], dim=1)
        keep = torch.cat([torch.ones(b, len(lead), dtype=torch.bool, device=tokens.device),
                          presence_matrix(present, self.modalities)], dim=1)
        if self.mixer is not None:
            tokens = self.mixer(tokens, src_key_padding_mask=~keep)
        if self.pool == "cls":
            return self.out(tokens[:, 0])
        pooled, _ = self.attn(self.query.expand(b, -1, -1), tokens, tokens, key_padding_mask=~keep, need_weights=False)
        return self.out(pooled[:, 0])
