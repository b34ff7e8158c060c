from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.models.encoders.base import Encoded, Encoder
from mmbench.registry import ENCODERS


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics (and running-statistic updates) count only the
    samples marked present, so the fill value of a missing sample cannot reach the others.

    Without a mask it is plain BatchNorm2d. Static shapes throughout (no indexing by the
    mask), so it works under ``torch.compile`` and ``torch.func.vmap``; a batch with fewer
    than two present samples normalises with the running statistics and leaves them as
    they are.
    """

    def forward(self, x: Tensor, present: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if present is None or not self.training:
            return super().forward(x)
        keep = present.to(torch.bool).view(-1, 1, 1, 1)
        xz = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        count = keep.sum().to(x.dtype) * x.shape[2] * x.shape[3]
        enough = count > x.shape[2] * x.shape[3]  # at least two samples
        denom = count.clamp_min(1)
        mean = xz.sum((0, 2, 3)) / denom
        centred = torch.where(keep, x - mean.view(1, -1, 1, 1), torch.zeros((), dtype=x.dtype, device=x.device))
        var = (centred * centred).sum((0, 2, 3)) / denom
        mean = torch.where(enough, mean, self.running_mean.to(x.dtype))
        var = torch.where(enough, var, self.running_var.to(x.dtype))
        with torch.no_grad():
            m = self.momentum * enough.to(self.running_mean.dtype)
            unbiased = var.detach() * (count / (count - 1).clamp_min(1))
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * unbiased)
            self.num_batches_tracked.add_(enough.to(self.num_batches_tracked.dtype))
        y = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@ENCODERS.register("cnn")
class CNNEncoder(Encoder):
    """LeNet-style CNN for images and spectrograms ([B, C, H, W] or [B, H, W]).

    `blocks` conv(3x3)-norm-ReLU-maxpool stages doubling the channels, then global average
    pooling and a linear projection to `out_dim`. ``norm="group"`` (GroupNorm, per sample)
    or ``"batch"`` (:class:`MaskedBatchNorm2d`, statistics over the present samples of the
    batch). Per-sample normalisation followed by global pooling keeps little of what tells
    samples apart when the input is weak (degraded AV-MNIST: fusion models sat at chance for
    many epochs); batch statistics keep it (docs/datasets.md, "AV-MNIST").
    """

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, channels: int = 16, blocks: int = 3,
                 norm: str = "group"):
        super().__init__()
        if norm not in ("group", "batch"):
            from mmbench.errors import SpecError

            raise SpecError(f"cnn encoder: norm must be 'group' or 'batch', got {norm!r}")
        in_ch = sample_shape[0] if len(sample_shape) == 3 else 1
        layers: list[nn.Module] = []
        ch = in_ch
        for i in range(blocks):
            out = channels * 2**i
            layer_norm = nn.GroupNorm(min(8, out), out) if norm == "group" else MaskedBatchNorm2d(out)
            layers += [nn.Conv2d(ch, out, 3, padding=1), layer_norm, nn.ReLU(), nn.MaxPool2d(2)]
            ch = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Linear(ch, out_dim)
        self.out_dim = out_dim
        self.uses_present = norm == "batch"

    def forward(self, x: Tensor, lengths: Tensor | None = None, present: Tensor | None = None) -> Encoded:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x = x.float()
        for layer in self.features:
            x = layer(x, present) if isinstance(layer, MaskedBatchNorm2d) else layer(x)
        return Encoded(self.proj(x))
