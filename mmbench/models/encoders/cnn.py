from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.models.encoders.base import Encoded, Encoder
from mmbench.core.registry import ENCODERS


def _eager_cpu(*tensors: Tensor) -> bool:
    """True where reading a tensor's values on the host is free and shapes may depend on them:
    plain eager CPU tensors (not under torch.compile, not vmapped)."""
    if torch.compiler.is_compiling():
        return False
    return all(t.device.type == "cpu" and not torch._C._functorch.is_batchedtensor(t) for t in tensors)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics (and running-statistic updates) count only the
    samples marked present, so the fill value of a missing sample cannot reach the others.

    Missing samples are normalised with the present samples' statistics taken as constants:
    no gradient flows from a missing sample's output into the statistics (with a mask-aware
    fusion that gradient is zero anyway). A batch with fewer than two present samples
    normalises with the running statistics and leaves them as they are.

    Three routes to the same values: without a mask, or with every sample present, it is
    plain BatchNorm2d (ATen's fused kernel); on eager CPU tensors with missing samples,
    that kernel runs on the present samples alone; elsewhere (torch.compile, torch.func.vmap,
    CUDA, where reading the mask on the host would sync or is not allowed) it uses masked
    reductions with static shapes. A caller that knows every row is present passes no mask
    (``MultimodalModel``'s ``complete``; the trainer does when a modality is never missing).
    """

    def forward(self, x: Tensor, present: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if present is None or not self.training:
            return super().forward(x)
        if _eager_cpu(x, present):
            keep = present.to(torch.bool)
            if bool(keep.all()):
                return super().forward(x)
            return self._present_subset(x, keep)
        return self._static(x, present)

    def _present_subset(self, x: Tensor, keep: Tensor) -> Tensor:
        idx, miss = keep.nonzero().squeeze(1), (~keep).nonzero().squeeze(1)
        if idx.numel() < 2:  # too few rows for batch statistics: the running ones, left as they are
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False,
                                            0.0, self.eps)
        self.num_batches_tracked.add_(1)
        y_present, mean, invstd = torch.native_batch_norm(
            x.index_select(0, idx), self.weight, self.bias, self.running_mean, self.running_var, True,
            self.momentum, self.eps)
        scale = (invstd.detach() * self.weight).view(1, -1, 1, 1)
        shift = self.bias.view(1, -1, 1, 1) - mean.detach().view(1, -1, 1, 1) * scale
        y_missing = x.index_select(0, miss) * scale + shift
        y = torch.empty_like(x, dtype=y_present.dtype)
        y.index_copy_(0, idx, y_present)
        y.index_copy_(0, miss, y_missing.to(y.dtype))
        return y

    def _static(self, x: Tensor, present: Tensor) -> Tensor:
        """No indexing by the mask and no host reads: works under torch.compile and vmap."""
        y, (mean, var, count) = self.static_step(x, present)
        with torch.no_grad():
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
            self.num_batches_tracked.copy_(count)
        return y

    def static_step(self, x: Tensor, present: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """The static route without side effects: (output, (new running_mean, running_var,
        num_batches_tracked)); the module's buffers are only read
        (:func:`mmbench.models.functional_norm.batch_norm_step` hands these back under vmap)."""
        keep = present.to(torch.bool).view(-1, 1, 1, 1)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        xz = torch.where(keep, x, zero)
        count = keep.sum().to(x.dtype) * x.shape[2] * x.shape[3]
        enough = count > x.shape[2] * x.shape[3]  # at least two samples
        denom = count.clamp_min(1)
        mean = xz.sum((0, 2, 3)) / denom
        centred = torch.where(keep, x - mean.view(1, -1, 1, 1), zero)
        var = (centred * centred).sum((0, 2, 3)) / denom
        mean = torch.where(enough, mean, self.running_mean.to(x.dtype))
        var = torch.where(enough, var, self.running_var.to(x.dtype))
        with torch.no_grad():
            m = self.momentum * enough.to(self.running_mean.dtype)
            unbiased = var.detach() * (count / (count - 1).clamp_min(1))
            new_mean = self.running_mean * (1 - m) + m * mean.detach()
            new_var = self.running_var * (1 - m) + m * unbiased
            new_count = self.num_batches_tracked + enough.to(self.num_batches_tracked.dtype)
        # per-sample [B, C, 1, 1] statistics: the missing samples' copies are constants
        mean = torch.where(keep, mean.view(1, -1, 1, 1), mean.detach().view(1, -1, 1, 1))
        invstd = torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        invstd = torch.where(keep, invstd, invstd.detach())
        return (x - mean) * invstd * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1), \
            (new_mean, new_var, new_count)


@ENCODERS.register("cnn")
class CNNEncoder(Encoder):
    """LeNet-style CNN for images and spectrograms ([B, C, H, W] or [B, H, W]).

    `blocks` conv(3x3)-norm-maxpool-ReLU stages doubling the channels, then global average
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
            from mmbench.core.errors import SpecError

            raise SpecError(f"cnn encoder: norm must be 'group' or 'batch', got {norm!r}")
        if len(sample_shape) not in (2, 3) or min(int(d) for d in sample_shape[-2:]) < 2**blocks:
            from mmbench.core.errors import SpecError

            raise SpecError(f"cnn encoder: per-sample shape {tuple(sample_shape)} is not an [H, W] or [C, H, W] image "
                            f"with sides of at least {2**blocks} ({blocks} pooling stages); use the mlp encoder for "
                            "small arrays, or fewer blocks")
        in_ch = sample_shape[0] if len(sample_shape) == 3 else 1
        layers: list[nn.Module] = []
        ch = in_ch
        for i in range(blocks):
            out = channels * 2**i
            layer_norm = nn.GroupNorm(min(8, out), out) if norm == "group" else MaskedBatchNorm2d(out)
            # pooling before the ReLU gives the same values and gradients (ReLU is monotone and
            # both pick the first maximum) at a quarter of the ReLU's cost
            # no conv bias before batch norm: the batch mean removes it, so its gradient is pure
            # rounding noise, which AdamW turns into lr-sized steps (docs/baselines.md, "AV-MNIST")
            layers += [nn.Conv2d(ch, out, 3, padding=1, bias=norm != "batch"), layer_norm, nn.MaxPool2d(2), nn.ReLU()]
            ch = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Linear(ch, out_dim)
        self.out_dim = out_dim
        self.uses_present = norm == "batch"
        # Memory order of the activations, a runtime choice (the trainer's `memory_format`), not
        # part of the model: channels-last pays on the CPU when every layer has a fast kernel
        # for it, which GroupNorm's backward lacks.
        self.channels_last = False
        self.channels_last_pays_on_cpu = norm == "batch"

    def forward(self, x: Tensor, lengths: Tensor | None = None, present: Tensor | None = None) -> Encoded:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x = x.float()
        if self.channels_last:
            x = _channels_last(x)
        for layer in self.features:
            x = layer(x, present) if isinstance(layer, MaskedBatchNorm2d) else layer(x)
        return Encoded(self.proj(x))


def _channels_last(x: Tensor) -> Tensor:
    """[B, C, H, W] in channels-last memory order, which the layers after it keep. With one
    channel both orders are the same memory, so the strides are set by hand for the
    convolution to pick its channels-last kernel."""
    if x.shape[1] != 1:
        return x.contiguous(memory_format=torch.channels_last)
    b, _, h, w = x.shape
    return x.contiguous().as_strided(x.shape, (h * w, 1, w, 1))
