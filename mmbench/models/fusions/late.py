from __future__ import annotations

from torch import Tensor, nn

from mmbench.models.fusions.base import Fusion, masked, presence_matrix
from mmbench.core.registry import FUSIONS


@FUSIONS.register("late")
class LateFusion(Fusion):
    """Late fusion (decision-level): each modality has its own small MLP head producing task
    logits, and the logits are averaged over the modalities present in each sample.

    A sample with no modality gets all-zero logits. The model uses the output as logits
    directly (``late = True``: no shared head)."""

    late = True

    def __init__(self, input_dims: dict[str, int], out_dim: int, hidden: int = 64, dropout: float = 0.1):
        super().__init__(input_dims, out_dim)
        self.heads = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
            for m, d in sorted(input_dims.items())
        })

    def forward(self, embeddings: dict[str, Tensor], present: dict[str, Tensor], sequences=None, masks=None) -> Tensor:
        # mask the input too, so a NaN/inf fill never reaches a weight gradient (0 * NaN)
        total = sum(masked(self.heads[m](masked(embeddings[m], present[m])), present[m]) for m in self.modalities)
        count = presence_matrix(present, self.modalities).sum(1, keepdim=True).clamp(min=1)
        return total / count.to(total.dtype)
