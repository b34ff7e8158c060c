from __future__ import annotations

import torch
from torch import Tensor, nn


class Fusion(nn.Module):
    """Base class. `late = True` marks fusions that output task logits themselves
    (the model then skips its head and builds the fusion with out_dim = number of outputs)."""

    late: bool = False
    uses_sequences: bool = False

    def __init__(self, input_dims: dict[str, int], out_dim: int):
        super().__init__()
        self.modalities = sorted(input_dims)
        self.input_dims = dict(input_dims)
        self.out_dim = out_dim

    def used_modalities(self) -> list[str]:
        """The modalities whose embeddings the output depends on (all, unless a fusion ignores
        some): the model runs, and counts the parameters of, only their encoders."""
        return list(self.modalities)


def masked(x: Tensor, present: Tensor) -> Tensor:
    """Zero rows of x [B, ...] whose present [B] is False; `where`, not multiply, so a NaN or
    inf fill cannot leak through 0 * x."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(present.view(shape), x, torch.zeros((), dtype=x.dtype, device=x.device))


def presence_matrix(present: dict[str, Tensor], order: list[str]) -> Tensor:
    """Bool [B, M] in the given modality order."""
    return torch.stack([present[m] for m in order], dim=1)
