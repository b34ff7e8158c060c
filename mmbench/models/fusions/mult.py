from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmbench.models.fusions.base import Fusion, masked, presence_matrix
from mmbench.core.registry import FUSIONS


def _positions(steps: int, dim: int, like: Tensor) -> Tensor:
    """Sinusoidal position encodings [steps, dim] (no maximum length)."""
    pos = torch.arange(steps, device=like.device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=like.device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(steps, dim, device=like.device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe.to(like.dtype)


class _Block(nn.Module):
    """Pre-norm transformer block: `x` attends to `context` (itself when None), then a
    feed-forward. A learned null key is always attendable, so a query whose context is
    entirely masked (missing modality, all padding) gets a finite output, not NaN."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.null = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, context: Tensor | None, context_mask: Tensor) -> Tensor:
        q = self.norm_q(x)
        kv = q if context is None else self.norm_kv(context)
        b = x.shape[0]
        kv = torch.cat([self.null.expand(b, -1, -1), kv], dim=1)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), context_mask], dim=1)
        attended, _ = self.attn(q, kv, kv, key_padding_mask=~keep, need_weights=False)
        x = x + self.drop(attended)
        return x + self.drop(self.ff(self.norm_ff(x)))


@FUSIONS.register("mult")
class MulTFusion(Fusion):
    """MulT-style cross-modal transformer (Tsai et al., 2019) over per-step sequences.

    Every modality's sequence is projected to `dim` and given sinusoidal positions; a
    modality without a sequence (only a pooled vector) is a length-1 sequence. For each
    target modality t and each other modality s, `cross_layers` cross-modal blocks let t's
    steps attend to s's steps (queries from t, keys/values from s's unchanged low-level
    sequence, as in MulT); the outputs over sources are concatenated, projected back to
    `dim`, and `self_layers` self-attention blocks run over t. Each target is pooled by the
    masked mean over its real steps, and the pooled vectors of all modalities (plus the
    presence bits) are concatenated and projected to `out_dim`.

    Keys are padding-masked with ``masks[m] & present[m]`` and every attention has a learned
    null key, so a missing source or a fully padded sequence never yields NaN. A missing
    target pools to zero. Inputs are zeroed with `where` before any projection, so neither
    the fill of a missing modality nor that of padded steps reaches output or gradients.
    With a single modality only the self-attention blocks run.
    """

    uses_sequences = True

    def __init__(self, input_dims: dict[str, int], out_dim: int, dim: int = 32, heads: int = 4, cross_layers: int = 1,
                 self_layers: int = 1, dropout: float = 0.1):
        super().__init__(input_dims, out_dim)
        mods = self.modalities
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in sorted(input_dims.items())})
        self.cross = nn.ModuleDict({
            t: nn.ModuleDict({s: nn.ModuleList(_Block(dim, heads, dropout) for _ in range(cross_layers))
                              for s in mods if s != t})
            for t in mods
        })
        self.merge = nn.ModuleDict({t: nn.Linear(max(len(mods) - 1, 1) * dim, dim) for t in mods})
        self.self_attn = nn.ModuleDict({t: nn.ModuleList(_Block(dim, heads, dropout) for _ in range(self_layers)) for t in mods})
        self.norm = nn.ModuleDict({t: nn.LayerNorm(dim) for t in mods})
        self.out = nn.Linear(len(mods) * (dim + 1), out_dim)

    def _inputs(self, embeddings, present, sequences, masks) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Projected sequences [B, T_m, dim] and their real-step masks [B, T_m]."""
        xs, valid = {}, {}
        for m in self.modalities:
            if sequences is not None and m in sequences:
                seq = sequences[m]
                step = present[m][:, None] & (masks[m] if masks is not None and m in masks else True)
                step = step.expand(seq.shape[0], seq.shape[1])
                x = torch.where(step[..., None], seq, torch.zeros((), dtype=seq.dtype, device=seq.device))
            else:
                x = masked(embeddings[m], present[m])[:, None]
                step = present[m][:, None]
            h = self.proj[m](x)
            xs[m] = h + _positions(h.shape[1], h.shape[2], h)
            valid[m] = step
        return xs, valid

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor], sequences=None, masks=None) -> Tensor:
        xs, valid = self._inputs(embeddings, present, sequences, masks)
        pooled = []
        for t in self.modalities:
            sources = [s for s in self.modalities if s != t]
            if sources:
                outs = []
                for s in sources:
                    h = xs[t]
                    for block in self.cross[t][s]:
                        h = block(h, xs[s], valid[s])
                    outs.append(h)
                h = self.merge[t](torch.cat(outs, dim=-1))
            else:
                h = xs[t]
            for block in self.self_attn[t]:
                h = block(h, None, valid[t])
            h = self.norm[t](h)
            w = valid[t][..., None].to(h.dtype)
            pooled.append((h * w).sum(1) / w.sum(1).clamp(min=1.0))
        bits = presence_matrix(present, self.modalities).to(pooled[0].dtype)
        return self.out(torch.cat(pooled + [bits], dim=1))
