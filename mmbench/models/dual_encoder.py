"""A dual encoder for image-text retrieval: one tower per modality into a shared space.

Each tower is a trained projection head (Linear -> GELU -> Dropout -> Linear) over the
frozen features the task's dataset already produces (coco-retrieval: EfficientNet-Lite0
pooled image features [1280], MiniLM caption embeddings [384]); outputs are L2-normalised,
and the similarity of caption j and image i is ``scale * text_j . image_i`` with a learned
temperature (CLIP's ``logit_scale``: ``scale = exp(logit_scale)``, clamped to at most 100).

A missing image (``present`` False) has no features to project: its embedding is one unit
vector for every missing image (the buffer ``missing_image``, saved with the weights). It
starts as a direction drawn from the run's seed; the trainer sets it, before every
evaluation, opposite the mean embedding of the training captions
(:meth:`place_missing_image`), so a missing image ranks below the present ones for nearly
every caption: the baseline claims no match it cannot see (under the evaluator's tie rule, a
caption of a missing image that prefers this shared vector is found at k with probability
k / the number of missing images: what a random order of the copies gives). Missing
images never enter the loss (:func:`contrastive_loss`).

Built from a plain config dict (stored in the checkpoint's metadata), like
:class:`~mmbench.models.model.MultimodalModel`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

ARCHITECTURE = "dual-encoder"
MAX_LOGIT_SCALE = math.log(100.0)


def _tower(in_dim: int, hidden_dim: int, embed_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, embed_dim))


class DualEncoder(nn.Module):
    """``encode_image(x, present)`` and ``encode_text(x, present)`` -> unit vectors ``[B, embed_dim]``."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        inputs = config["inputs"]
        for m in ("image", "text"):
            if m not in inputs or inputs[m].get("sequence") or len(inputs[m]["shape"]) != 1:
                raise ValueError(f"dual encoder: modality {m!r} must be a feature vector, got {inputs.get(m)}")
        embed, hidden, dropout = int(config["embed_dim"]), int(config["hidden_dim"]), float(config["dropout"])
        self.image_tower = _tower(int(inputs["image"]["shape"][0]), hidden, embed, dropout)
        self.text_tower = _tower(int(inputs["text"]["shape"][0]), hidden, embed, dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / float(config.get("init_temperature", 0.07)))))
        gen = torch.Generator().manual_seed(int(config.get("seed", 0)))
        self.register_buffer("missing_image", nn.functional.normalize(torch.randn(embed, generator=gen), dim=0))

    @torch.no_grad()
    def place_missing_image(self, caption_features: Tensor, batch_size: int = 4096) -> None:
        """``missing_image`` := the unit vector opposite the mean embedding of these captions."""
        total = torch.zeros_like(self.missing_image)
        for i in range(0, len(caption_features), batch_size):
            total += self.encode_text(caption_features[i:i + batch_size]).sum(0)
        if bool(total.norm() > 0):
            self.missing_image.copy_(-nn.functional.normalize(total, dim=0))

    def scale(self) -> Tensor:
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def encode_image(self, x: Tensor, present: Tensor | None = None) -> Tensor:
        z = nn.functional.normalize(self.image_tower(x.float()), dim=-1)
        if present is None:
            return z
        return torch.where(present.view(-1, 1), z, self.missing_image.to(z.dtype).expand_as(z))

    def encode_text(self, x: Tensor, present: Tensor | None = None) -> Tensor:
        return nn.functional.normalize(self.text_tower(x.float()), dim=-1)


def contrastive_loss(model: DualEncoder, image: Tensor, image_present: Tensor, text: Tensor, image_row: Tensor) -> Tensor:
    """Symmetric InfoNCE over a batch of (caption, its image) rows.

    Captions whose image is missing are dropped (never matched against a blank). Several
    captions of one image may share a batch: the batch's distinct images are the candidates
    (``image_row`` says which rows show the same image), caption -> image is a cross entropy
    over them, and image -> caption counts every own caption of the image as a positive
    (``-log(sum_own exp s / sum_all exp s)``). The loss is the mean of the two directions;
    zero (with a graph) when no row has its image."""
    keep = image_present
    if not bool(keep.any()):
        return model.logit_scale * 0.0
    image, text, image_row = image[keep], text[keep], image_row[keep]
    rows, inverse = torch.unique(image_row, return_inverse=True)
    n = len(inverse)
    first = torch.full((len(rows),), n, dtype=torch.long, device=image.device).scatter_reduce_(
        0, inverse, torch.arange(n, device=image.device), reduce="amin")  # a row showing each distinct image
    img = model.encode_image(image.index_select(0, first))
    txt = model.encode_text(text)
    logits = model.scale() * txt @ img.T  # [captions, images]
    t2i = nn.functional.cross_entropy(logits, inverse)
    own = inverse.view(1, -1) == torch.arange(len(rows), device=image.device).view(-1, 1)  # [images, captions]
    by_image = logits.T
    i2t = (torch.logsumexp(by_image, dim=1) - torch.logsumexp(by_image.masked_fill(~own, -math.inf), dim=1)).mean()
    return 0.5 * (t2i + i2t)
