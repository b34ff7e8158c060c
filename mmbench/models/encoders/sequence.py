from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from mmbench.models.encoders.base import Encoded, Encoder
from mmbench.core.registry import ENCODERS


def step_mask(lengths: Tensor | None, batch: int, steps: int, device) -> Tensor:
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    return torch.arange(steps, device=device)[None, :] < lengths[:, None]


def _step_size(sample_shape: tuple[int, ...]) -> int:
    """Features per step: a step of any fixed shape is read flattened."""
    return math.prod(int(d) for d in sample_shape)


def masked_mean(seq: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(seq.dtype)
    return (seq * m).sum(1) / m.sum(1).clamp(min=1.0)


# GRUEncoder hands cuDNN each direction's four weight tensors, not nn.GRU's flattened buffer, so
# cuDNN packs them on every call (a copy of 25k weights per direction at hidden 64) and says so
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk of memory")


def _reverse_index(lengths: Tensor | None, batch: int, steps: int, device) -> Tensor:
    """[B, T] gather index that reverses each row's first `lengths` steps and leaves its
    padding in place (an involution: applying it twice is the identity)."""
    t = torch.arange(steps, device=device).expand(batch, steps)
    if lengths is None:
        return t.flip(1)
    n = lengths.to(device).view(-1, 1)
    return torch.where(t < n, n - 1 - t, t)


def _take_steps(x: Tensor, index: Tensor) -> Tensor:
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def gru_steps(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU direction over [B, T, F] from zero state, step by step in plain ops (nn.GRU's
    equations, gates in the order r, z, n): what runs under ``torch.func.vmap``."""
    gates_in = nn.functional.linear(x, w_ih, b_ih)  # every step's input gates at once
    h = gates_in.new_zeros(x.shape[0], w_hh.shape[1])
    states = []
    for t in range(x.shape[1]):
        in_r, in_z, in_n = gates_in[:, t].chunk(3, dim=-1)
        h_r, h_z, h_n = nn.functional.linear(h, w_hh, b_hh).chunk(3, dim=-1)
        r, z = torch.sigmoid(in_r + h_r), torch.sigmoid(in_z + h_z)
        n = torch.tanh(in_n + r * h_n)
        h = n + z * (h - n)
        states.append(h)
    return torch.stack(states, dim=1)


@ENCODERS.register("gru")
class GRUEncoder(Encoder):
    """Sequence [B, T, F] (+ lengths; steps of more dims are flattened) -> bidirectional GRU states projected to out_dim;
    pooled = masked mean over real steps (padding never enters the pooled vector).

    Each direction runs as its own one-layer GRU over the padded batch; the backward one reads
    every row reversed within its length, so neither direction sees a padded step before a
    real one. That equals ``pack_padded_sequence`` (tests/test_sequence_encoders.py) without
    its host-side lengths, so the encoder exports with ``torch.export`` and runs under
    ``torch.compile`` and vmap. The parameters are nn.GRU's own (checkpoints unchanged)."""

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, hidden: int = 64, layers: int = 1):
        super().__init__()
        self.inp = nn.Linear(_step_size(sample_shape), hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, out_dim)
        self.out_dim = out_dim

    # set on the stacked models' template by mmbench.training.multiseed.StackedModels
    vectorised = False

    def _direction(self, x: Tensor, layer: int, suffix: str) -> Tensor:
        g = self.gru
        params = [getattr(g, f"{kind}_l{layer}{suffix}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if self.vectorised:  # aten::gru takes a list of weights, for which vmap has no batch rule
            return gru_steps(x, *params)
        h0 = x.new_zeros(1, x.shape[0], g.hidden_size)
        out, _ = torch.ops.aten.gru.input(x, h0, params, True, 1, 0.0, self.training, False, True)
        return out

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        b, t = x.shape[:2]
        mask = step_mask(lengths, b, t, x.device)
        keep = mask.unsqueeze(-1)
        h = self.inp(x.flatten(2).float()) * keep
        backward = _reverse_index(lengths, b, t, x.device)
        for layer in range(self.gru.num_layers):
            forward_states = self._direction(h, layer, "")
            backward_states = _take_steps(self._direction(_take_steps(h, backward), layer, "_reverse"), backward)
            h = torch.cat([forward_states, backward_states], dim=-1) * keep  # padded steps are 0, as when packed
        seq = self.out(h)
        return Encoded(masked_mean(seq, mask), seq, mask)


@ENCODERS.register("transformer")
class TransformerEncoder(Encoder):
    """Sequence [B, T, F] (steps of more dims flattened) -> pre-norm transformer with learned positions and a key-padding
    mask; pooled = masked mean over real steps."""

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, layers: int = 2, heads: int = 4, max_len: int = 1024):
        super().__init__()
        self.inp = nn.Linear(_step_size(sample_shape), out_dim)
        self.pos = nn.Parameter(torch.zeros(1, max_len, out_dim))
        layer = nn.TransformerEncoderLayer(out_dim, heads, 2 * out_dim, dropout=0.1, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        b, t = x.shape[:2]
        mask = step_mask(lengths, b, t, x.device)
        # a fully padded row (missing modality) would give NaN attention: let it see step 0
        safe = mask.clone()
        safe[:, 0] = True
        seq = self.body(self.inp(x.flatten(2).float()) + self.pos[:, :t], src_key_padding_mask=~safe)
        return Encoded(masked_mean(seq, mask), seq, mask)
