"""Shared pieces of the image-text classification loaders (MM-IMDb, UPMC Food-101, Hateful Memes).

Each sample has an ``image`` (a file; absent or undecodable = missing, masked and counted) and a
``text`` (None = missing). A loader reads its annotation files into :class:`Rows` (ids, image
files, texts, targets: no image is opened); from them :meth:`ImageTextDataset.load_split`
encodes the split, :meth:`~ImageTextDataset.load_labels` gives ids and targets alone (what
scoring a predictions file needs: no image decoded, no encoder loaded) and
:meth:`~ImageTextDataset.split_summary` the counts of ``mmbench data info``. Options common to
the three:

- ``image_encoder``: ``efficientnet`` (default; frozen EfficientNet-Lite0 pooled features
  ``[1280]``), ``pixels`` (normalised ``[3, S, S]``) or ``torchvision:<arch>`` (a frozen
  torchvision backbone from the torch hub cache, output ``image_output``: see
  :mod:`mmbench.models.encoders.backbones`); ``image_size`` (224);
- ``text_encoder``: ``minilm`` (default; frozen all-MiniLM-L6-v2 sentence embedding ``[384]``),
  ``tokens`` (MiniLM token ids with lengths) or a local transformers model folder (BERT ...),
  pooled as ``text_pooling`` says (``mean``, ``cls``, ``pooler``); ``max_tokens`` (64);
- ``cache_dir`` (default ``$MMBENCH_CACHE``), ``image_weights``, ``text_model``;
- ``val_fraction`` and ``split_seed`` where a protocol carves validation from the training
  file: that share of it becomes ``val``, chosen by a hash of ``split_seed`` and the sample id
  (:func:`mmbench.data.masks.uniform_hash`: the same on every machine, and a sample never
  changes side when others are added);
- ``text_only`` (default false): a split none of whose images is on disk (the images folder
  missing altogether) is refused, naming the folder, unless this is true (an explicit
  text-only run: every image is then a missing image).

Images and texts are encoded as the COCO loader does (:mod:`mmbench.data.datasets.coco_features`)
and cached the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mmbench.data.datasets.base import MultimodalDataset, check_image_encoder, check_text_encoder, encoder_options
from mmbench.core.errors import DataError, SpecError

if TYPE_CHECKING:  # torch is imported where a split is built: reading labels needs numpy only
    from mmbench.data.samples import Split


@dataclass
class Rows:
    """One split as read from the annotation files: ``files`` None where the image is not on
    disk; ``image_dir`` the folder images are looked for in (named when all are absent)."""

    ids: list[str]
    files: list[Path | None]
    texts: list[str | None]
    targets: np.ndarray  # int64 class labels, or float32 [N, C] multi-label
    image_dir: Path
    info: dict[str, Any] = field(default_factory=dict)


class ImageTextDataset(MultimodalDataset):
    modalities = ("image", "text")

    def __init__(self, data_dir=None, image_encoder: str = "efficientnet", image_size: int = 224,
                 text_encoder: str = "minilm", max_tokens: int = 64, cache_dir: str | None = None,
                 image_weights: str | None = None, text_model: str | None = None, val_fraction: float = 0.1,
                 split_seed: int = 0, text_only: bool = False, image_output: str | None = None,
                 text_pooling: str = "mean", **options: Any):
        check_image_encoder(image_encoder, self.name)
        check_text_encoder(text_encoder, self.name)
        options |= encoder_options(image_output=image_output, text_pooling=text_pooling)
        super().__init__(data_dir, image_encoder=image_encoder, image_size=image_size, text_encoder=text_encoder,
                         max_tokens=max_tokens, val_fraction=val_fraction, split_seed=split_seed, text_only=text_only,
                         **options)
        if not 0.0 < float(val_fraction) < 1.0:
            raise SpecError(f"{self.name}: val_fraction must be in (0, 1), got {val_fraction}")
        self.image_encoder, self.image_size = image_encoder, int(image_size)
        self.text_encoder, self.max_tokens = text_encoder, int(max_tokens)
        self.cache_dir, self.image_weights, self.text_model = cache_dir, image_weights, text_model
        self.val_fraction, self.split_seed, self.text_only = float(val_fraction), int(split_seed), bool(text_only)
        self.image_output, self.text_pooling = image_output, text_pooling

    def rows(self, split: str) -> Rows:
        """The split's ids, image files, texts and targets from the annotation files."""
        raise NotImplementedError

    def in_val(self, ids: Sequence[str]) -> np.ndarray:
        """Bool per id: carved into ``val`` from the training file (see the module docstring)."""
        from mmbench.data.masks import uniform_hash

        return uniform_hash(self.split_seed, self.name, "validation", list(ids)) < self.val_fraction

    def load_labels(self, split: str) -> tuple[list[str], np.ndarray]:
        """(ids, targets) of `split` from the annotation files alone (no image is opened)."""
        self.check_split(split)
        rows = self.rows(split)
        return rows.ids, rows.targets

    def split_summary(self, split: str) -> dict[str, Any]:
        """`Split.summary`'s counts from the annotation files and the file system (nothing encoded)."""
        self.check_split(split)
        rows = self.rows(split)
        out: dict[str, Any] = {"samples": len(rows.ids), "present": {
            "image": sum(f is not None for f in rows.files), "text": sum(t is not None for t in rows.texts)}}
        if rows.targets.dtype.kind == "i" and len(rows.ids):
            out["classes"] = {str(i): int(c) for i, c in enumerate(np.bincount(rows.targets).tolist())}
        return out

    def load_split(self, split: str) -> Split:
        self.check_split(split)
        rows = self.rows(split)
        if rows.ids and all(f is None for f in rows.files) and not self.text_only:
            where = "is missing" if not rows.image_dir.is_dir() else "holds none of them"
            raise DataError(f"none of the {len(rows.ids):,} images of split {split!r} is on disk: the images folder "
                            f"{where}{self.images_hint()} (unpack the images there, or set text_only: true for an "
                            "explicit text-only run)", rows.image_dir)
        return self.make_split(split, rows.ids, rows.files, rows.texts, rows.targets, rows.info)

    def images_hint(self) -> str:
        """More about absent images (e.g. an archive not unpacked), for the refusal above."""
        return ""

    def make_split(self, split: str, ids: list[str], files: list[Path | None], texts: list[str | None],
                   targets: np.ndarray, info: dict[str, Any]) -> Split:
        import torch

        from mmbench.data.datasets.coco_features import feature_cache, image_features, text_vocabulary
        from mmbench.data.datasets.hf import text_modality
        from mmbench.data.samples import Split

        cache = feature_cache(self.cache_dir)
        image, image_ok, image_info = image_features(files, self.image_encoder, self.image_size, cache,
                                                     self.image_weights, dataset=self.name,
                                                     image_output=self.image_output)
        text, text_ok, lengths = text_modality(texts, self.text_encoder, cache, self.text_model, self.max_tokens,
                                               self.text_pooling)
        info = info | {"protocol": self.protocol(), "absent_images": image_info["absent"],
                       "unreadable_images": image_info["unreadable"], "missing_texts": int((~text_ok).sum())} \
            | text_vocabulary("text", self.text_encoder, self.text_model)
        return Split(split, ids, {"image": image, "text": text}, {"image": image_ok, "text": text_ok},
                     torch.from_numpy(np.ascontiguousarray(targets)),
                     {"text": lengths} if lengths is not None else {}, info)


def existing(files: Sequence[Path]) -> list[Path | None]:
    """Each path, or None where no such file is on disk (each folder is listed once)."""
    from mmbench.core.io import DirIndex

    index = DirIndex()
    return [f if index.exists(f) else None for f in files]


def one_line(text: Any) -> str | None:
    """A text value as one stripped string; None for None / NaN."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    return " ".join(str(text).split())


def as_long(values: Sequence[int]) -> np.ndarray:
    return np.array(list(values), dtype=np.int64)
