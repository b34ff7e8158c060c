"""Shared pieces of the image-text classification loaders (MM-IMDb, UPMC Food-101, Hateful Memes).

Each sample has an ``image`` (a file; absent or undecodable = missing, masked and counted) and a
``text`` (None = missing). Options common to the three:

- ``image_encoder``: ``efficientnet`` (default; frozen EfficientNet-Lite0 pooled features
  ``[1280]``) or ``pixels`` (normalised ``[3, S, S]``); ``image_size`` (224);
- ``text_encoder``: ``minilm`` (default; frozen all-MiniLM-L6-v2 sentence embedding ``[384]``)
  or ``tokens`` (MiniLM token ids with lengths); ``max_tokens`` (64);
- ``cache_dir`` (default ``$MMBENCH_CACHE``), ``image_weights``, ``text_model``;
- ``val_fraction`` where the release has no validation split: that share of the training file
  becomes ``val``, chosen by ``blake2b`` of the sample id (the same on every machine, and a
  sample never changes side when others are added).

Images and texts are encoded as the COCO loader does (:mod:`mmbench.data.datasets.coco`) and cached
the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mmbench.data.samples import Split
from mmbench.data.datasets.base import MultimodalDataset
from mmbench.core.errors import SpecError


class ImageTextDataset(MultimodalDataset):
    modalities = ("image", "text")

    def __init__(self, data_dir=None, image_encoder: str = "efficientnet", image_size: int = 224,
                 text_encoder: str = "minilm", max_tokens: int = 64, cache_dir: str | None = None,
                 image_weights: str | None = None, text_model: str | None = None, val_fraction: float = 0.1,
                 **options: Any):
        super().__init__(data_dir, image_encoder=image_encoder, image_size=image_size, text_encoder=text_encoder,
                         max_tokens=max_tokens, val_fraction=val_fraction, **options)
        if not 0.0 < float(val_fraction) < 1.0:
            raise SpecError(f"{self.name}: val_fraction must be in (0, 1), got {val_fraction}")
        self.image_encoder, self.image_size = image_encoder, int(image_size)
        self.text_encoder, self.max_tokens = text_encoder, int(max_tokens)
        self.cache_dir, self.image_weights, self.text_model = cache_dir, image_weights, text_model
        self.val_fraction = float(val_fraction)

    def in_val(self, ids: Sequence[str]) -> np.ndarray:
        """Bool per id: carved into ``val`` from the training file (see the module docstring)."""
        from mmbench.data.masks import uniform_hash

        return uniform_hash(0, self.name, "validation", list(ids)) < self.val_fraction

    def make_split(self, split: str, ids: list[str], files: list[Path | None], texts: list[str | None],
                   targets: Tensor, info: dict[str, Any]) -> Split:
        from mmbench.data.datasets.coco import _cache, image_features, text_vocabulary
        from mmbench.data.datasets.hf import text_modality

        cache = _cache(self.cache_dir)
        image, image_ok, image_info = image_features(files, self.image_encoder, self.image_size, cache, self.image_weights)
        text, text_ok, lengths = text_modality(texts, self.text_encoder, cache, self.text_model, self.max_tokens)
        info = info | {"absent_images": image_info["absent"], "unreadable_images": image_info["unreadable"],
                       "missing_texts": int((~text_ok).sum())} | text_vocabulary("text", self.text_encoder, self.text_model)
        return Split(split, ids, {"image": image, "text": text}, {"image": image_ok, "text": text_ok}, targets,
                     {"text": lengths} if lengths is not None else {}, info)


def one_line(text: Any) -> str | None:
    """A text value as one stripped string; None for None / NaN."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    return " ".join(str(text).split())


def as_long(values: Sequence[int]) -> Tensor:
    return torch.tensor(list(values), dtype=torch.long)
