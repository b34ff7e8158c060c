"""Video encoder: the image CNN applied to every frame, then a temporal aggregation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.core.errors import SpecError
from mmbench.models.encoders.base import Encoded, Encoder
from mmbench.models.encoders.cnn import CNNEncoder
from mmbench.models.encoders.sequence import GRUEncoder, step_mask, masked_mean
from mmbench.core.registry import ENCODERS

TEMPORAL = ("mean", "conv", "gru")


@ENCODERS.register("video")
class VideoEncoder(Encoder):
    """Frame stacks ``[B, T, C, H, W]`` (+ optional lengths) -> ``[B, out_dim]``.

    The per-sample shape is ``[T, C, H, W]`` (a fixed frame count, as the ``clips`` loader
    gives) or, for a sequence modality with lengths, ``[C, H, W]`` per frame. Every frame goes
    through the image CNN (:class:`CNNEncoder`: `blocks` conv-norm-pool-ReLU stages from
    `channels` channels) in one pass, frames folded into the batch; `temporal` then combines
    the per-frame features over the real frames:

    - ``mean``: masked mean over frames (order-free, as in TSN);
    - ``conv``: `temporal_layers` residual pre-norm 1-D convolutions over time (odd `kernel`),
      then the masked mean;
    - ``gru``: a bidirectional GRU over the real frames (:class:`GRUEncoder`), masked mean of
      its states.

    ``sequence`` is the per-frame features after the temporal stage and ``mask`` the real
    frames, so sequence fusions (mult, gnn) see frames as time steps. Frames past a sample's
    length are zeroed before the CNN and excluded after it: they affect neither the output
    nor the gradients, and a padded clip encodes exactly as the same clip cut to its length.
    """

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, channels: int = 16, blocks: int = 3,
                 temporal: str = "mean", kernel: int = 3, temporal_layers: int = 1, hidden: int | None = None):
        super().__init__()
        if len(sample_shape) not in (3, 4):
            raise SpecError(f"encoder video needs frame stacks [T, C, H, W] (or a sequence modality of [C, H, W] frames), "
                            f"got per-sample shape {tuple(sample_shape)}")
        if temporal not in TEMPORAL:
            raise SpecError(f"encoder video: temporal must be one of {', '.join(TEMPORAL)}, not {temporal!r}")
        if kernel < 1 or kernel % 2 == 0 or temporal_layers < 1:
            raise SpecError(f"encoder video: kernel must be odd and >= 1, temporal_layers >= 1 (got {kernel}, {temporal_layers})")
        self.frame = CNNEncoder(tuple(sample_shape[-3:]), out_dim=out_dim, channels=channels, blocks=blocks)
        self.temporal = temporal
        if temporal == "conv":
            self.norms = nn.ModuleList(nn.LayerNorm(out_dim) for _ in range(temporal_layers))
            self.convs = nn.ModuleList(nn.Conv1d(out_dim, out_dim, kernel, padding=kernel // 2) for _ in range(temporal_layers))
        elif temporal == "gru":
            self.gru = GRUEncoder((out_dim,), out_dim=out_dim, hidden=hidden or out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        if x.dim() != 5:
            raise ValueError(f"encoder video expects [B, T, C, H, W] frame stacks, got shape {tuple(x.shape)}")
        b, t = x.shape[:2]
        mask = step_mask(lengths, b, t, x.device)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        if lengths is not None:
            # `where`, not multiply: a NaN fill in padded frames must not reach the CNN
            x = torch.where(mask[:, :, None, None, None], x, zero)
        feats = self.frame(x.reshape(b * t, *x.shape[2:])).pooled.reshape(b, t, -1)
        if self.temporal == "gru":
            return self.gru(feats, lengths)
        real = mask.unsqueeze(-1)
        fzero = torch.zeros((), dtype=feats.dtype, device=feats.device)
        h = torch.where(real, feats, fzero)
        if self.temporal == "conv":
            for norm, conv in zip(self.norms, self.convs):
                # zero padded steps after the norm too (LayerNorm maps 0 to its bias), so a
                # convolution at the last real frame sees the same zeros as at a clip's end
                z = torch.where(real, norm(h), fzero)
                h = torch.where(real, h + nn.functional.gelu(conv(z.transpose(1, 2)).transpose(1, 2)), fzero)
        return Encoded(masked_mean(h, mask), h, mask)
