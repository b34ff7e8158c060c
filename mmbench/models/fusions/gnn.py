from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.models.fusions.base import Fusion, masked
from mmbench.core.registry import FUSIONS

# edge relations of the modality graph; each has its own message weights (R-GCN style)
SELF, CROSS, TEMPORAL, STEP_TO_SUMMARY, SUMMARY_TO_STEP = range(5)


@FUSIONS.register("gnn")
class GraphFusion(Fusion):
    """Modalities as nodes of a graph with learned, relation-typed message passing (pure torch).

    Every modality is a summary node connected to every other modality (cross-modal edges).
    When sequences are given and ``time_steps=True``, each real time step of a modality is a
    node too, linked to its neighbouring steps (temporal edges) and to its modality's summary
    node. Each relation has its own linear message; a node averages the messages of its
    present neighbours, adds them to itself through a gate, and repeats for `layers` rounds.
    Nodes of missing modalities (and padded steps) are removed with all their edges. The
    readout is the masked mean of the present summary nodes.
    """

    uses_sequences = True

    def __init__(self, input_dims: dict[str, int], out_dim: int, dim: int = 64, layers: int = 2,
                 time_steps: bool = True, max_steps: int = 64, dropout: float = 0.1):
        super().__init__(input_dims, out_dim)
        self.time_steps = time_steps
        self.max_steps = max_steps
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in sorted(input_dims.items())})
        self.type_embed = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.messages = nn.ModuleList(nn.Linear(dim, dim * 5) for _ in range(layers))
        self.gates = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dim, out_dim)
        self.dim = dim

    def _graph(self, embeddings, present, sequences, masks):
        """Node features [B, N, dim], node mask [B, N] and relation adjacency [B, R, N, N]."""
        feats, alive, owner, is_step, step_pos = [], [], [], [], []
        for i, m in enumerate(self.modalities):
            # mask before and after projecting: a NaN/inf fill must reach neither the output
            # nor (through 0 * NaN) the weight gradient
            feats.append(masked(self.proj[m](masked(embeddings[m], present[m])), present[m])[:, None] + self.type_embed[i])
            alive.append(present[m][:, None])
            owner.append(torch.full((1,), i))
            is_step.append(torch.zeros(1, dtype=torch.bool))
            step_pos.append(torch.full((1,), -1))
        if self.time_steps and sequences:
            for i, m in enumerate(self.modalities):
                if m not in sequences:
                    continue
                seq = sequences[m][:, : self.max_steps]
                step_mask = masks[m][:, : self.max_steps] & present[m][:, None]
                t = seq.shape[1]
                # `where`, not `* step_mask`: the fill of padded steps may be NaN (0 * NaN = NaN)
                real = step_mask[..., None]
                zero = torch.zeros((), dtype=seq.dtype, device=seq.device)
                feats.append(torch.where(real, self.proj[m](torch.where(real, seq, zero)), zero) + self.type_embed[i])
                alive.append(step_mask)
                owner.append(torch.full((t,), i))
                is_step.append(torch.ones(t, dtype=torch.bool))
                step_pos.append(torch.arange(t))
        h = torch.cat(feats, dim=1)
        node_mask = torch.cat(alive, dim=1)
        device = h.device
        owner_t, step_t, pos_t = (torch.cat(x).to(device) for x in (owner, is_step, step_pos))
        same = owner_t[:, None] == owner_t[None, :]
        summary = ~step_t
        rel = torch.stack([
            torch.eye(len(owner_t), dtype=torch.bool, device=device),
            summary[:, None] & summary[None, :] & ~same,
            step_t[:, None] & step_t[None, :] & same & ((pos_t[:, None] - pos_t[None, :]).abs() == 1),
            summary[:, None] & step_t[None, :] & same,   # dst summary <- src step
            step_t[:, None] & summary[None, :] & same,   # dst step <- src summary
        ])
        live = node_mask[:, None, :, None] & node_mask[:, None, None, :]
        adj = (rel[None] & live).to(h.dtype)
        return h, node_mask, adj, summary

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor], sequences=None, masks=None) -> Tensor:
        h, node_mask, adj, summary = self._graph(embeddings, present, sequences, masks)
        deg = adj.sum(dim=(1, 3)).clamp(min=1.0)  # [B, N] incoming edges over all relations
        keep = node_mask[..., None].to(h.dtype)
        for message, gate, norm in zip(self.messages, self.gates, self.norms):
            b, n, d = h.shape
            msgs = message(norm(h)).view(b, n, 5, d).transpose(1, 2)  # [B, R, N_src, d]
            agg = torch.einsum("brij,brjd->bid", adj, msgs) / deg[..., None]
            g = torch.sigmoid(gate(torch.cat([h, agg], dim=-1)))
            h = (h + self.drop(g * torch.tanh(agg))) * keep
        s = node_mask[:, : len(self.modalities)].to(h.dtype)
        pooled = (h[:, : len(self.modalities)] * s[..., None]).sum(1) / s.sum(1, keepdim=True).clamp(min=1.0)
        return self.out(pooled)
