from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.models.encoders.base import Encoded, Encoder
from mmbench.registry import ENCODERS


def _mask(lengths: Tensor | None, batch: int, steps: int, device) -> Tensor:
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    return torch.arange(steps, device=device)[None, :] < lengths[:, None]


def _masked_mean(seq: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(seq.dtype)
    return (seq * m).sum(1) / m.sum(1).clamp(min=1.0)


@ENCODERS.register("gru")
class GRUEncoder(Encoder):
    """Sequence [B, T, F] (+ lengths) -> bidirectional GRU states projected to out_dim;
    pooled = masked mean over real steps (padding never enters the pooled vector)."""

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 64, layers: int = 1):
        super().__init__()
        self.inp = nn.Linear(int(sample_shape[-1]), hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        b, t = x.shape[:2]
        mask = _mask(lengths, b, t, x.device)
        h = self.inp(x.float()) * mask.unsqueeze(-1)
        if lengths is not None:
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.gru(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t)
        else:
            out, _ = self.gru(h)
        seq = self.out(out)
        return Encoded(_masked_mean(seq, mask), seq, mask)


@ENCODERS.register("transformer")
class TransformerEncoder(Encoder):
    """Sequence [B, T, F] -> pre-norm transformer with learned positions and a key-padding
    mask; pooled = masked mean over real steps."""

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, layers: int = 2, heads: int = 4, max_len: int = 1024):
        super().__init__()
        self.inp = nn.Linear(int(sample_shape[-1]), out_dim)
        self.pos = nn.Parameter(torch.zeros(1, max_len, out_dim))
        layer = nn.TransformerEncoderLayer(out_dim, heads, 2 * out_dim, dropout=0.1, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        b, t = x.shape[:2]
        mask = _mask(lengths, b, t, x.device)
        # a fully padded row (missing modality) would give NaN attention: let it see step 0
        safe = mask.clone()
        safe[:, 0] = True
        seq = self.body(self.inp(x.float()) + self.pos[:, :t], src_key_padding_mask=~safe)
        return Encoded(_masked_mean(seq, mask), seq, mask)
