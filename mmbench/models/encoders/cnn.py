from __future__ import annotations

from torch import Tensor, nn

from mmbench.models.encoders.base import Encoded, Encoder
from mmbench.registry import ENCODERS


@ENCODERS.register("cnn")
class CNNEncoder(Encoder):
    """LeNet-style CNN for images and spectrograms ([B, C, H, W] or [B, H, W]).

    `blocks` conv(3x3)-GroupNorm-ReLU-maxpool stages doubling the channels, then global
    average pooling and a linear projection to `out_dim`.
    """

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, channels: int = 16, blocks: int = 3):
        super().__init__()
        in_ch = sample_shape[0] if len(sample_shape) == 3 else 1
        layers: list[nn.Module] = []
        ch = in_ch
        for i in range(blocks):
            out = channels * 2**i
            layers += [nn.Conv2d(ch, out, 3, padding=1), nn.GroupNorm(min(8, out), out), nn.ReLU(), nn.MaxPool2d(2)]
            ch = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Linear(ch, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return Encoded(self.proj(self.features(x.float())))
