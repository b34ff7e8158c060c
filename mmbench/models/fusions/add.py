from __future__ import annotations

from torch import Tensor, nn

from mmbench.models.fusions.base import Fusion, masked, presence_matrix
from mmbench.core.registry import FUSIONS


@FUSIONS.register("add")
class AddFusion(Fusion):
    """Project every modality to `out_dim` and average over the present ones
    (`reduce="sum"` sums instead). A sample with no modality gets the zero vector."""

    def __init__(self, input_dims: dict[str, int], out_dim: int, reduce: str = "mean"):
        super().__init__(input_dims, out_dim)
        if reduce not in ("mean", "sum"):
            raise ValueError(f"add fusion: reduce must be 'mean' or 'sum', got {reduce!r}")
        self.reduce = reduce
        self.proj = nn.ModuleDict({m: nn.Linear(d, out_dim) for m, d in sorted(input_dims.items())})

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor], sequences=None, masks=None) -> Tensor:
        # mask before projecting too: projecting a NaN/inf fill and masking afterwards keeps the
        # output clean but puts 0 * NaN = NaN into the weight gradient
        total = sum(masked(self.proj[m](masked(embeddings[m], present[m])), present[m]) for m in self.modalities)
        if self.reduce == "sum":
            return total
        count = presence_matrix(present, self.modalities).sum(1, keepdim=True).clamp(min=1)
        return total / count.to(total.dtype)
