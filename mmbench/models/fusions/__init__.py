"""Fusion methods, one module each, registered with `@FUSIONS.register(name)`.

Every fusion is an `nn.Module` built as ``Fusion(input_dims, out_dim, **options)`` with
``input_dims = {modality: embedding size}`` and called as
``fusion(embeddings, present, sequences=None, masks=None) -> Tensor [B, out_dim]`` where
``embeddings[m]`` is [B, D_m], ``present[m]`` is bool [B], and for sequence-aware fusions
``sequences[m]`` is [B, T_m, D_m] with ``masks[m]`` bool [B, T_m]. Modalities are always
visited in sorted order. A missing modality's embedding must not influence the output
(tests feed it different garbage and compare). No device handling inside.
"""

from mmbench.models.fusions.base import Fusion

__all__ = ["Fusion"]
