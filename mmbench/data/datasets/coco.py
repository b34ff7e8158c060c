"""MS-COCO captions: image-text retrieval and a caption-image match classification task.

Files (paths relative to the data root, overridable by options)::

    coco/annotations/captions_val2017.json   official captions (images, annotations, ...)
    coco/val2017/000000000139.jpg            images, file name = zero-padded image id
    coco/annotations/captions_train2017.json official train captions (118,287 images), optional
    coco/train2017/000000000009.jpg          their images
    coco/dataset_coco.json                   optional Karpathy split file (the standard 5k test)

**Readers** (pure, no images): :func:`read_coco_captions` parses the official JSON (through
``pycocotools.coco.COCO``) and :func:`read_karpathy` the Karpathy file (``images`` with
``filepath, filename, cocoid, split, sentences[raw, tokens, sentid]``); both return an
*images* table (``image_id, file_name, filepath, split``) and a *captions* table
(``caption_id, image_id, caption``), sorted by image id then caption id. Malformed JSON,
missing keys, wrong types, duplicate ids and captions of unknown images raise one
:class:`~mmbench.core.errors.DataError` naming the file and the problem.

**Images** are found by file name in ``image_dir`` (default: the folder named after the
caption file's split, ``captions_val2017.json`` -> ``coco/val2017``), by ``filepath/filename``
under ``coco/`` (Karpathy, 2014 names), and by the 2017 name ``{id:012d}.jpg`` in
``coco/val2017`` or ``coco/train2017`` (the 2017 images are the 2014 images renamed), so a
Karpathy file works with 2017 image folders. They decode with ``torchvision.io.decode_image``
in RGB mode (grayscale and CMYK become 3 channels), are resized so the shorter side is
``image_size`` (default 224, antialiased) and centre-cropped to a square. An image listed in
the JSON but absent from disk is a *missing image modality*: its slot is zero-filled,
``present["image"]`` is False, and the count is reported (a :class:`CocoDataWarning` and
``Split.info``). A file that exists but cannot be decoded (corrupt JPEG) is masked the same
way, with one warning giving the count and the first files and errors.

Option ``image_encoder``:

- ``pixels``: the normalised image ``[3, S, S]`` float32, ``(x - 127) / 128`` on the 0..255
  scale (the normalisation of EfficientNet-Lite, so the trainable ``efficientnet-lite0``
  encoder takes it as is);
- ``efficientnet`` (default): frozen ImageNet EfficientNet-Lite0 pooled features ``[1280]``;
- ``torchvision:<arch>``: a frozen torchvision classifier from the torch hub cache (or
  ``image_weights``), its output ``image_output``, its weights' own preprocessing
  (:mod:`mmbench.models.encoders.backbones`).

Option ``text_encoder``: ``minilm`` (default; frozen all-MiniLM-L6-v2 sentence embedding
``[384]``, L2-normalised), a local transformers model folder (pooled as ``text_pooling``
says: ``mean``, ``cls``, ``pooler``) or ``tokens`` (MiniLM WordPiece ids, a sequence modality with
lengths, for the trainable ``minilm`` encoder). Encoders live in
:mod:`mmbench.models.encoders.pretrained`. Resized pixels (uint8), EfficientNet features and
MiniLM embeddings are stored in :class:`~mmbench.core.cache.FeatureCache` (root: option
``cache_dir``, else ``$MMBENCH_CACHE``), keyed by a fingerprint of the image files (relative
name, size, mtime, in order) or of the exact caption strings, plus the model's identity and
the options; a second load reads the cache and never runs a model.

**Dataset** ``coco-captions`` (modalities ``image`` and ``text``), option ``mode``:

- ``retrieval``: one sample per caption, target = the row of its image in the split's gallery
  (int64). The evaluator reads the gallery with :func:`load_retrieval_gallery` (captions JSON
  only, no images); :func:`zero_shot_embeddings` gives a simple zero-shot baseline (below).

**Retrieval splits** (:func:`retrieval_layout`). The test set is fixed by the task, never by
which other files are on disk: Karpathy's 5k test split when ``dataset_coco.json`` is given,
otherwise val2017's 5,000 images and 25,014 captions. Train and val, first match wins:

0. *val2017 carve*, only when asked for (option ``val2017_fractions``, the task
   ``coco-retrieval-val2017-carve`` sets ``[0.6, 0.2, 0.2]``): train / val / test are those
   shares of val2017's images (3,000 / 1,000 / 1,000), whatever else is on disk. Its test set
   is a part of val2017, a different protocol (``coco-val2017-carve-60-20-20-seed0``) with its
   own test-set fingerprint, so it is never ranked with the standard one.
1. *Karpathy* (option ``karpathy_file``, default ``coco/dataset_coco.json`` in this mode;
   ``""`` to never use one): ``train`` = train + restval (113,287 images), ``val`` and
   ``test`` (5,000 each) are Karpathy's (protocol ``coco-karpathy-5k``).
2. *train2017 + val2017* (``train_captions_file``, default
   ``coco/annotations/captions_train2017.json``, and ``captions_file``): ``val`` =
   ``val_images`` (default 5,000) train2017 images, ``train`` = the other 113,287;
   ``test`` = the whole val2017 file (protocol ``coco-val2017-5k``).
3. *train2017 alone*: ``train`` and ``val`` as above; ``test`` is refused with one line
   saying that val2017's caption file is not there.
4. *val2017 alone*: ``test`` is the whole file (the same ``coco-val2017-5k`` test set as in
   2); ``train`` / ``val`` (so ``mmbench train coco-retrieval``) stop with one line saying
   that training needs train2017.

Every carve (:func:`carve_images`) cuts a ``numpy.random.default_rng(split_seed)``
permutation (default seed 0) of the sorted image ids, so it depends on the ids and the seed
alone, never on which image files are on disk; an image and all its captions land in one
split. ``Split.info`` and ``locate()`` (``mmbench data info``) name each split's source file
and how it was cut; the dataset fingerprint includes the layout. Missing images stay in the
gallery, masked, as in every layout. Large layouts: train2017's split holds one row per
caption (591,753) with its image's features, about 3 GB of float32 with EfficientNet.
- ``match`` (default; the ``coco-match`` task): binary, does the caption describe the image?

**coco-match design.** Images: those of the caption files (a Karpathy file only when
``karpathy_file`` is given: then its train + restval / val / test are the splits; with
train2017 and val2017 both present, val2017 is test and train2017 is hashed into train / val
in the ratio of ``fractions``' first two shares) whose file is on disk (val2017 here: 159 images, 795 captions;
the absent ones are left out and counted in ``Split.info["absent_images_excluded"]``; with
``include_missing_images: true`` they are kept with their image masked). Each
image goes to train / val / test (``fractions``, default 70/15/15) by a hash of its id alone
(blake2b, not the seed), so no image crosses splits and the split of an image never changes
when images are added. Positives: every caption of the image (5-7). Negatives: captions of
*other images of the same split* (so every caption text lives in exactly one split), mined as
hard negatives by MiniLM similarity: candidates are ranked by cosine similarity to the mean of
the image's own (normalised) caption embeddings; candidates above ``max_negative_similarity``
(default 0.75) are dropped: on val2017 an image's own captions score 0.79 (lower quartile) to
0.84 (median) against that mean, so a caption of another image scoring above 0.75 is as close
as a real caption and very likely describes this image too (a false negative, e.g. two
skiing photos); from the ``hard_pool`` (default 20) most similar remaining ones, ``negatives_per_image``
(default: as many as the image has captions, so classes are balanced) are drawn at most one
per other image, with ``numpy.random.default_rng([seed, image_id])``: deterministic for a seed
and independent of the order images are processed in (mining always uses MiniLM, whatever
``text_encoder`` is). Sample ids are ``coco-{image_id}-{caption_id}``; targets 1 (match) / 0
(mined negative). Every image occurs with both labels and every caption once as a positive
(and zero or more times as a negative), so neither modality alone predicts the label: the
task measures image-text interaction, i.e. fusion.

**Zero-shot retrieval baseline.** Captions: MiniLM embeddings. Images: EfficientNet-Lite0's
ImageNet class distribution (softmax) averaged over the MiniLM embeddings of the prompts
``"a photo of a {class name}."``, which puts images in the text space without training
(:func:`load_caption_embeddings`, :func:`load_image_embeddings`). Images absent from disk get
zero vectors and ``present`` False.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mmbench.data.samples import Split
from mmbench.data.datasets.base import (MultimodalDataset, check_image_encoder, check_text_encoder, data_root,
                                        encoder_options)
from mmbench.core.errors import DataError, SpecError
from mmbench.core.registry import DATASETS
from mmbench.data.datasets.coco_annotations import read_coco_captions, read_karpathy
from mmbench.data.datasets.coco_features import (IMAGE_ENCODERS, TEXT_ENCODERS, CocoDataWarning, decode_image_file,
                                                 feature_cache, image_features, load_image_pixels, minilm_embeddings,
                                                 text_features, text_vocabulary)
from mmbench.data.datasets.coco_layout import (CAPTIONS_FILE, COCO_DIR, KARPATHY_FILE, TRAIN_CAPTIONS_FILE,
                                               RetrievalLayout, Source, carve_images, default_image_dir,
                                               karpathy_path, layout_kind_of, layout_splits, official_source,
                                               retrieval_protocol,
                                               read_source, resolve_image_files, retrieval_layout, split_source, under)

__all__ = [
    "CAPTIONS_FILE",
    "KARPATHY_FILE",
    "CocoCaptionsDataset",
    "CocoDataWarning",
    "carve_images",
    "decode_image_file",
    "image_features",
    "load_caption_embeddings",
    "load_image_embeddings",
    "load_image_pixels",
    "load_retrieval_gallery",
    "match_pairs",
    "match_split_of",
    "minilm_embeddings",
    "read_coco_captions",
    "read_karpathy",
    "resolve_image_files",
    "retrieval_image_presence",
    "text_features",
    "zero_shot_embeddings",
]

MODES = ("match", "retrieval")
_ZERO_SHOT_PROMPT = "a photo of a {}."


# ------------------------------------------------------------------------------------------
# coco-match pairs
# ------------------------------------------------------------------------------------------


def match_split_of(image_id: int, fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> str:
    """train / val / test for an image, from a hash of its id alone."""
    digest = hashlib.blake2b(f"mmbench-coco-match:{int(image_id)}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def match_pairs(captions: pd.DataFrame, embeddings: Tensor, image_split: dict[int, str], seed: int = 0,
                negatives_per_image: int | None = None, hard_pool: int = 20,
                max_negative_similarity: float = 0.75) -> pd.DataFrame:
    """The coco-match pairs: columns ``split, image_id, caption_row`` (row of `captions`),
    ``target`` (1 own caption, 0 mined negative), ``similarity`` (negatives: to the image's
    caption centroid; positives: NaN). `embeddings` are the L2-normalised caption embeddings,
    row-aligned with `captions`; only images in `image_split` are used."""
    emb = torch.nn.functional.normalize(embeddings.float(), dim=1).numpy()
    cap_img = captions["image_id"].to_numpy(np.int64)
    cap_ids = captions["caption_id"].to_numpy(np.int64)
    out: list[tuple[str, int, int, int, float]] = []
    for split in ("train", "val", "test"):
        img_ids = sorted(i for i, s in image_split.items() if s == split)
        if not img_ids:
            continue
        rows = np.flatnonzero(np.isin(cap_img, img_ids))
        # ties broken by caption id: rows sorted by (image_id, caption_id) already, use a stable sort
        pool_emb, pool_img = emb[rows], cap_img[rows]
        for image_id in img_ids:
            own = rows[pool_img == image_id]
            out.extend((split, image_id, int(r), 1, float("nan")) for r in own)
            if not len(own):
                continue
            centroid = emb[own].mean(0)
            centroid /= max(np.linalg.norm(centroid), 1e-12)
            sims = pool_emb @ centroid
            cand = np.flatnonzero((pool_img != image_id) & (sims <= max_negative_similarity))
            cand = cand[np.lexsort((cap_ids[rows[cand]], -sims[cand]))][: max(int(hard_pool), 0)]
            want = len(own) if negatives_per_image is None else int(negatives_per_image)
            rng = np.random.default_rng([int(seed), int(image_id)])
            used: set[int] = set()
            picked = 0
            for j in rng.permutation(len(cand)):
                if picked >= want:
                    break
                other = int(pool_img[cand[j]])
                if other in used:
                    continue
                used.add(other)
                out.append((split, image_id, int(rows[cand[j]]), 0, float(sims[cand[j]])))
                picked += 1
    return pd.DataFrame(out, columns=["split", "image_id", "caption_row", "target", "similarity"])


# ------------------------------------------------------------------------------------------
# the dataset
# ------------------------------------------------------------------------------------------


@DATASETS.register("coco-captions")
class CocoCaptionsDataset(MultimodalDataset):
    """MS-COCO captions with images; ``mode: match`` (coco-match) or ``retrieval`` (coco-retrieval).
    See the module docstring for files, options and the task design."""

    name = "coco-captions"
    modalities = ("image", "text")
    split_names = ("train", "val", "test")
    # The official 2017 archives (hashes from tensorflow_datasets' checksums; docs/datasets.md
    # "Downloads"): only the caption files and the val2017 images are kept.
    downloads = (
        {"url": "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
         "path": "coco/annotations_trainval2017.zip",
         "sha256": "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
         "extract": "coco", "members": ["annotations/captions_*2017.json"]},
        {"url": "http://images.cocodataset.org/zips/val2017.zip",
         "path": "coco/val2017.zip",
         "sha256": "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
         "extract": "coco", "members": ["val2017/*.jpg"]},
    )

    def __init__(
        self,
        data_dir=None,
        mode: str = "match",
        captions_file: str = CAPTIONS_FILE,
        karpathy_file: str | None = None,
        image_dir: str | None = None,
        image_size: int = 224,
        image_encoder: str = "efficientnet",
        text_encoder: str = "minilm",
        text_model: str | None = None,
        image_weights: str | None = None,
        max_tokens: int = 64,
        seed: int = 0,
        negatives_per_image: int | None = None,
        hard_pool: int = 20,
        max_negative_similarity: float = 0.75,
        fractions: Sequence[float] = (0.7, 0.15, 0.15),
        include_missing_images: bool = False,
        cache_dir: str | None = None,
        train_captions_file: str = TRAIN_CAPTIONS_FILE,
        val_images: int = 5000,
        val2017_fractions: Sequence[float] | None = None,
        split_seed: int = 0,
        image_output: str | None = None,
        text_pooling: str = "mean",
    ):
        super().__init__(data_dir, **encoder_options(image_output=image_output, text_pooling=text_pooling),
                         mode=mode, captions_file=captions_file, karpathy_file=karpathy_file, image_dir=image_dir,
                         image_size=image_size, image_encoder=image_encoder, text_encoder=text_encoder,
                         text_model=text_model, image_weights=image_weights, max_tokens=max_tokens, seed=seed,
                         negatives_per_image=negatives_per_image, hard_pool=hard_pool,
                         max_negative_similarity=max_negative_similarity, fractions=list(fractions),
                         include_missing_images=include_missing_images, train_captions_file=train_captions_file,
                         val_images=val_images, split_seed=split_seed,
                         val2017_fractions=None if val2017_fractions is None else list(val2017_fractions))
        if mode not in MODES:
            raise SpecError(f"coco-captions: mode {mode!r} is not one of {', '.join(MODES)}")
        check_image_encoder(image_encoder, "coco-captions")
        check_text_encoder(text_encoder, "coco-captions")
        self.image_output, self.text_pooling = image_output, text_pooling
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise SpecError("coco-captions: fractions must be three non-negative numbers summing to 1")
        if val2017_fractions is not None and (len(val2017_fractions) != 3 or min(val2017_fractions) < 0
                                              or min(val2017_fractions[:2]) <= 0
                                              or abs(sum(val2017_fractions) - 1.0) > 1e-6):
            raise SpecError("coco-captions: val2017_fractions must be three shares (train, val, test) summing to 1, "
                            "train and val above 0 (or null: val2017 is the test split only)")
        if negatives_per_image is not None and int(negatives_per_image) < 0:
            raise SpecError("coco-captions: negatives_per_image must be >= 0 (or null: as many as positives)")
        self.mode = mode
        self.captions_file, self.karpathy_file, self.image_dir = captions_file, karpathy_file, image_dir
        self.image_size, self.image_encoder, self.text_encoder = int(image_size), image_encoder, text_encoder
        self.text_model, self.image_weights, self.max_tokens = text_model, image_weights, int(max_tokens)
        self.seed, self.negatives_per_image, self.hard_pool = int(seed), negatives_per_image, int(hard_pool)
        self.max_negative_similarity = float(max_negative_similarity)
        self.fractions = tuple(float(f) for f in fractions)
        self.include_missing_images = bool(include_missing_images)
        self.cache_dir = cache_dir
        self.train_captions_file, self.val_images, self.split_seed = train_captions_file, int(val_images), int(split_seed)
        self.val2017_fractions = None if val2017_fractions is None else tuple(float(f) for f in val2017_fractions)
        if mode == "retrieval":
            self.split_names = layout_splits(self.layout_kind())
        self._source: Source | None = None
        self._layout: RetrievalLayout | None = None
        self._match: dict[str, Split] | None = None
        self._retrieval: dict[str, Split] = {}

    # -- shared ------------------------------------------------------------------------------

    def _karpathy_option(self) -> str | None:
        """None: the default file in retrieval mode, none in match mode; "": never."""
        if self.karpathy_file is None:
            return KARPATHY_FILE if self.mode == "retrieval" else None
        return self.karpathy_file

    def layout_kind(self) -> str:
        """karpathy, train2017+val2017, train2017 or val2017 (which caption files exist)."""
        return layout_kind_of(self.root, self.captions_file, self.train_captions_file, self._karpathy_option(),
                              self.val2017_fractions if self.mode == "retrieval" else None)

    def protocol(self) -> str:
        """The test set's name (module docstring, "Retrieval splits"); coco-match's is its layout."""
        if self.mode == "retrieval":
            return retrieval_protocol(self.layout_kind(), self.val2017_fractions, self.split_seed)
        return f"coco-match-{self.layout_kind()}"

    def fingerprint(self) -> str:
        import hashlib

        # the same options on another layout are other data
        return hashlib.sha256(f"{super().fingerprint()}:{self.layout_kind()}".encode()).hexdigest()[:16]

    def retrieval_layout(self) -> RetrievalLayout:
        if self._layout is None:
            self._layout = retrieval_layout(self.root, self.captions_file, self.train_captions_file,
                                            self._karpathy_option(), self.image_dir, self.val_images,
                                            self.val2017_fractions, self.split_seed)
        return self._layout

    def source(self) -> Source:
        if self._source is None:
            self._source = read_source(self.root, self.captions_file, self._karpathy_option(), self.image_dir)
        return self._source

    def _cache(self) -> Any:
        return feature_cache(self.cache_dir)

    def _check_pixels_memory(self, rows: int) -> None:
        if self.image_encoder == "pixels":
            need = rows * 3 * self.image_size**2 * 4
            if need > 8 * 2**30:
                raise SpecError(f"coco-captions: pixels for {rows:,} samples at image_size {self.image_size} need "
                                f"{need / 2**30:.1f} GiB; use image_encoder: efficientnet or a smaller image_size")

    def _modalities(self, files: list[Path | None], texts: list[str], image_rows: np.ndarray, text_rows: np.ndarray,
                    src: Source, what: str) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:
        self._check_pixels_memory(len(image_rows))
        cache = self._cache()
        img, ok, img_info = image_features(files, self.image_encoder, self.image_size, cache, self.image_weights,
                                           base=src.coco_root, image_output=self.image_output)
        txt, lengths, txt_info = text_features(texts, self.text_encoder, cache, self.text_model, self.max_tokens,
                                               self.text_pooling)
        ii, tt = torch.from_numpy(image_rows.astype(np.int64)), torch.from_numpy(text_rows.astype(np.int64))
        modalities = {"image": img.index_select(0, ii), "text": txt.index_select(0, tt)}
        present = {"image": ok.index_select(0, ii), "text": torch.ones(len(tt), dtype=torch.bool)}
        seq = {"text": lengths.index_select(0, tt)} if lengths is not None else {}
        if img_info["absent"] and what:
            warnings.warn(f"coco: {img_info['absent']:,} of {len(files):,} images {what} are not on disk; their image "
                          f"modality is masked ({src.path.name})", CocoDataWarning, stacklevel=4)
        return modalities, present, seq, {**img_info, **txt_info, **text_vocabulary("text", self.text_encoder, self.text_model)}

    # -- retrieval ---------------------------------------------------------------------------

    def _load_retrieval(self, split: str) -> Split:
        if split in self._retrieval:
            return self._retrieval[split]
        src = split_source(self.retrieval_layout(), split, under(self.root, self.captions_file))
        files = resolve_image_files(src.images, src.coco_root, src.image_dir)
        row_of = {int(i): r for r, i in enumerate(src.images["image_id"])}
        target = np.array([row_of[int(i)] for i in src.captions["image_id"]], dtype=np.int64)
        mods, present, lengths, info = self._modalities(files, src.captions["caption"].tolist(), target,
                                                        np.arange(len(src.captions)), src,
                                                        f"of retrieval split {split!r}")
        ids = [f"coco-{int(c)}" for c in src.captions["caption_id"]]
        info.update({"mode": "retrieval", "source": str(src.path), "source_kind": src.kind, "source_note": src.note,
                     "layout": self.layout_kind(),
                     "gallery_images": len(src.images), "captions": len(src.captions),
                     "missing_images": info["absent"], "unreadable_images": info["unreadable"],
                     "gallery_image_ids": [str(int(i)) for i in src.images["image_id"]],
                     "gallery_caption_ids": [str(int(c)) for c in src.captions["caption_id"]]})
        out = Split(split, ids, mods, present, torch.from_numpy(target), lengths, info)
        self._retrieval[split] = out
        return out

    # -- match -------------------------------------------------------------------------------

    def _match_source(self) -> tuple[Source, dict[int, str], list[Path | None]]:
        """(images and captions, split of each image id, file of each image row) for coco-match."""
        kind = layout_kind_of(self.root, self.captions_file, self.train_captions_file, self._karpathy_option())
        if kind == "karpathy":
            src = self.source()
            split_of = {int(i): "train" if s == "restval" else s for i, s in zip(src.images["image_id"], src.images["split"])}
            return src, split_of, resolve_image_files(src.images, src.coco_root, src.image_dir)
        if kind == "train2017+val2017":  # train2017 -> train / val in the shares of fractions; val2017 -> test
            train = official_source(self.root, under(self.root, self.train_captions_file), None)
            test = self.source()
            f_train, f_val = self.fractions[0], self.fractions[1]
            shares = (f_train / (f_train + f_val), f_val / (f_train + f_val), 0.0)
            split_of = {int(i): match_split_of(i, shares) for i in train.images["image_id"]}
            split_of |= {int(i): "test" for i in test.images["image_id"]}
            # rows: train2017's then val2017's (each sorted), so each split's rows stay in id order
            both = Source("official", test.path, pd.concat([train.images, test.images], ignore_index=True),
                          pd.concat([train.captions, test.captions], ignore_index=True), test.image_dir, test.coco_root,
                          f"{train.path.name} (train, val) + {test.path.name} (test)")
            files = (resolve_image_files(train.images, train.coco_root, train.image_dir)
                     + resolve_image_files(test.images, test.coco_root, test.image_dir))
            return both, split_of, files
        src = self.source() if kind == "val2017" else official_source(self.root, under(self.root, self.train_captions_file),
                                                                      None)
        split_of = {int(i): match_split_of(i, self.fractions) for i in src.images["image_id"]}
        return src, split_of, resolve_image_files(src.images, src.coco_root, src.image_dir)

    def _mined_pairs(self) -> tuple[Source, list[Path | None], list[Path | None], list[int], pd.DataFrame, list[str],
                                    pd.DataFrame]:
        """(source, its image files, the kept images' files, their ids, their captions, the
        caption texts, the mined pairs): coco-match's pairs need the captions' embeddings only,
        no image is decoded."""
        src, split_of, files_all = self._match_source()
        keep = [i for i, f in enumerate(files_all) if f is not None or self.include_missing_images]
        if not keep:
            raise DataError(f"coco-match: none of the {len(files_all):,} images of {src.path.name} is on disk "
                            f"(looked in {src.image_dir or src.coco_root})", src.path)
        images = src.images.iloc[keep].reset_index(drop=True)
        files = [files_all[i] for i in keep]
        image_ids = images["image_id"].astype(int).tolist()
        captions = src.captions[src.captions["image_id"].isin(set(image_ids))].reset_index(drop=True)
        texts = captions["caption"].tolist()
        emb, _ = minilm_embeddings(texts, self._cache(), self.text_model)
        image_split = {i: split_of[i] for i in image_ids}
        pairs = match_pairs(captions, emb, image_split, self.seed, self.negatives_per_image, self.hard_pool,
                            self.max_negative_similarity)
        return src, files_all, files, image_ids, captions, texts, pairs

    def load_labels(self, split: str) -> tuple[list[str], np.ndarray]:
        """coco-match's (ids, targets) of `split` without its image features (the labels-only
        path of mmbench.data.testset: `data info`, predictions files); retrieval mode loads the split."""
        self.check_split(split)
        if self.mode == "retrieval":
            s = self.load_split(split)
            return list(s.ids), s.targets.numpy()
        _, _, _, _, captions, _, pairs = self._mined_pairs()
        sel = np.flatnonzero(pairs["split"].to_numpy() == split)
        cap_ids = captions["caption_id"].to_numpy(np.int64)
        rows = pairs["caption_row"].to_numpy(np.int64)[sel]
        ids = [f"coco-{int(i)}-{int(cap_ids[r])}" for i, r in zip(pairs["image_id"].to_numpy()[sel], rows)]
        return ids, pairs["target"].to_numpy(np.int64)[sel]

    def _build_match(self) -> dict[str, Split]:
        src, files_all, files, image_ids, captions, texts, pairs = self._mined_pairs()
        row_of = {i: r for r, i in enumerate(image_ids)}
        image_rows = np.array([row_of[int(i)] for i in pairs["image_id"]], dtype=np.int64)
        text_rows = pairs["caption_row"].to_numpy(np.int64)
        mods, present, lengths, info = self._modalities(files, texts, image_rows, text_rows, src,
                                                        "used by coco-match" if self.include_missing_images else "")
        cap_ids = captions["caption_id"].to_numpy(np.int64)
        ids = np.array([f"coco-{int(i)}-{int(cap_ids[r])}" for i, r in zip(pairs["image_id"], text_rows)])
        targets = torch.tensor(pairs["target"].to_numpy(np.int64))
        absent_excluded = sum(f is None for f in files_all) if not self.include_missing_images else 0
        out: dict[str, Split] = {}
        for split in self.split_names:
            sel = np.flatnonzero(pairs["split"].to_numpy() == split)
            idx = torch.from_numpy(sel.astype(np.int64))
            split_images = sorted({int(i) for i in pairs["image_id"].to_numpy()[sel]})
            masked = {int(i) for i, p in zip(pairs["image_id"].to_numpy()[sel], present["image"][idx].tolist()) if not p}
            split_info = {**info, "mode": "match", "source": str(src.path), "images": len(split_images),
                          "positives": int(targets[idx].sum()), "negatives": int(len(sel) - targets[idx].sum()),
                          "missing_images": len(masked), "absent_images_excluded": absent_excluded, "seed": self.seed}
            out[split] = Split(split, ids[sel].tolist(), {k: v.index_select(0, idx) for k, v in mods.items()},
                               {k: v.index_select(0, idx) for k, v in present.items()}, targets.index_select(0, idx),
                               {k: v.index_select(0, idx) for k, v in lengths.items()}, split_info)
        return out

    # -- API ---------------------------------------------------------------------------------

    def load_split(self, split: str) -> Split:
        self.check_split(split)
        if self.mode == "retrieval":
            return self._load_retrieval(split)
        if self._match is None:
            self._match = self._build_match()
        return self._match[split]

    def check_split(self, split: str) -> None:
        if split not in self.split_names and self.mode == "retrieval" and split in ("train", "val", "test"):
            split_source(self.retrieval_layout(), split, under(self.root, self.captions_file))  # raises why
        super().check_split(split)

    def load_retrieval_gallery(self, split: str) -> tuple[list[int], list[int], np.ndarray]:
        """(image ids, caption ids, caption_image_index) of `split`, from this dataset's caption
        file (the same one :meth:`load_split` uses); reads no image."""
        self.check_split(split)
        return _gallery(split_source(self.retrieval_layout(), split, under(self.root, self.captions_file)))

    def retrieval_presence(self, split: str) -> dict[str, np.ndarray]:
        """Per gallery image (``image``, in gallery order) whether its file is on disk, and per
        caption (``text``) whether it has its text (always); reads no image."""
        self.check_split(split)
        src = split_source(self.retrieval_layout(), split, under(self.root, self.captions_file))
        files = resolve_image_files(src.images, src.coco_root, src.image_dir)
        return {"image": np.array([f is not None for f in files], dtype=bool), "text": np.ones(len(src.captions), dtype=bool)}

    def split_summary(self, split: str) -> dict[str, Any]:
        """Counts from the caption file and the file system (no image or caption is encoded):
        images in the annotations, images on disk, captions. In retrieval mode, of `split`'s
        gallery; in match mode, of the images `split` takes (those it pairs: on disk unless
        ``include_missing_images``) and their own captions, its positive pairs (the negatives
        are mined from encoded captions when the split loads)."""
        self.check_split(split)
        if self.mode == "retrieval":
            src = split_source(self.retrieval_layout(), split, under(self.root, self.captions_file))
            on_disk = sum(f is not None for f in resolve_image_files(src.images, src.coco_root, src.image_dir))
            return {"images": len(src.images), "images_on_disk": on_disk, "captions": len(src.captions)}
        src, split_of, files = self._match_source()
        ids = src.images["image_id"].astype(int).to_numpy()
        in_split = np.array([split_of.get(int(i)) == split for i in ids], dtype=bool)
        on_disk = np.array([f is not None for f in files], dtype=bool)
        used = in_split & (on_disk | bool(self.include_missing_images))
        captions = int(src.captions["image_id"].astype(int).isin(set(ids[used].tolist())).sum())
        return {"images": int(in_split.sum()), "images_on_disk": int((in_split & on_disk).sum()), "captions": captions,
                "scope": f"{int(used.sum()):,} images paired, each with its own captions and mined negatives"}

    def split_presence(self, split: str) -> tuple[list[str], dict[str, Any]]:
        """Retrieval mode: the caption rows of `split` and their presence, from the caption file
        and the file system (an image is present when its file is on disk; nothing is decoded or
        encoded). Match mode loads the split (its pairs are mined from encoded captions)."""
        if self.mode != "retrieval":
            return super().split_presence(split)
        self.check_split(split)
        src = split_source(self.retrieval_layout(), split, under(self.root, self.captions_file))
        files = resolve_image_files(src.images, src.coco_root, src.image_dir)
        row_of = {int(i): r for r, i in enumerate(src.images["image_id"])}
        image_present = np.array([files[row_of[int(i)]] is not None for i in src.captions["image_id"]], dtype=bool)
        ids = [f"coco-{int(c)}" for c in src.captions["caption_id"]]
        return ids, {"image": image_present, "text": np.ones(len(ids), dtype=bool)}

    def available_splits(self) -> list[str]:
        return list(self.split_names)

    def locate(self) -> dict[str, str]:
        kp_option = self._karpathy_option()
        kp = karpathy_path(self.root, kp_option)
        cp = under(self.root, self.captions_file)
        out = {"captions": str(cp) + ("" if cp and cp.is_file() else " (missing)")}
        out["karpathy"] = str(kp) if kp else (f"{under(self.root, kp_option)} (absent)" if kp_option else "not used")
        out["images"] = str(under(self.root, self.image_dir) or (default_image_dir(cp) if cp else self.root / COCO_DIR))
        if self.mode == "retrieval":
            tp = under(self.root, self.train_captions_file)
            out["train_captions"] = str(tp) + ("" if tp and tp.is_file() else " (missing)")
            out["layout"] = self.layout_kind()
            try:
                layout = self.retrieval_layout()
            except DataError as exc:
                out["splits"] = str(exc)
                return out
            for split, src in layout.sources.items():
                out[f"split {split}"] = f"{src.path} ({src.note}: {len(src.images):,} images, {len(src.captions):,} captions)"
            for split, why in layout.unavailable.items():
                out[f"split {split}"] = f"unavailable: {why}"
        return out


# ------------------------------------------------------------------------------------------
# retrieval data access for the evaluator and the zero-shot baseline
# ------------------------------------------------------------------------------------------


def _retrieval_source(root: str | os.PathLike | None, split: str, captions_file: str | None,
                      karpathy_file: str | None, image_dir: str | None = None) -> Source:
    root_path = data_root(root)
    if karpathy_file is None:
        karpathy_file = KARPATHY_FILE
    layout = retrieval_layout(root_path, captions_file or CAPTIONS_FILE, TRAIN_CAPTIONS_FILE, karpathy_file, image_dir)
    return split_source(layout, split, under(root_path, captions_file or CAPTIONS_FILE))


def load_retrieval_gallery(root: str | os.PathLike | None, split: str = "test", captions_file: str | None = None,
                           karpathy_file: str | None = None) -> tuple[list[int], list[int], np.ndarray]:
    """(image ids, caption ids, caption_image_index int64) of a retrieval split, read from the
    captions JSON only (no image is opened). `root` is the data root (None: ``$MMBENCH_DATA``);
    the Karpathy file (default ``coco/dataset_coco.json``) is used when present, else the
    official caption file (default ``coco/annotations/captions_val2017.json``, split test only).
    Images are sorted by id, captions by (image, caption id); ``caption_image_index[j]`` is the
    row of caption j's image."""
    return _gallery(_retrieval_source(root, split, captions_file, karpathy_file))


def _gallery(src: Source) -> tuple[list[int], list[int], np.ndarray]:
    image_ids = src.images["image_id"].astype(int).tolist()
    row_of = {i: r for r, i in enumerate(image_ids)}
    index = np.array([row_of[int(i)] for i in src.captions["image_id"]], dtype=np.int64)
    return image_ids, src.captions["caption_id"].astype(int).tolist(), index


def retrieval_image_presence(root: str | os.PathLike | None, split: str = "test", captions_file: str | None = None,
                             karpathy_file: str | None = None, image_dir: str | None = None) -> np.ndarray:
    """bool per gallery image (same order as :func:`load_retrieval_gallery`): is its file on disk?"""
    src = _retrieval_source(root, split, captions_file, karpathy_file, image_dir)
    return np.array([f is not None for f in resolve_image_files(src.images, src.coco_root, src.image_dir)], dtype=bool)


def load_caption_embeddings(root: str | os.PathLike | None, split: str = "test", captions_file: str | None = None,
                            karpathy_file: str | None = None, text_model: str | None = None,
                            cache_dir: str | None = None) -> Tensor:
    """float32 ``[n_captions, 384]`` MiniLM embeddings in gallery caption order (cached)."""
    src = _retrieval_source(root, split, captions_file, karpathy_file)
    return minilm_embeddings(src.captions["caption"].tolist(), feature_cache(cache_dir), text_model)[0]


def _class_text_embeddings(cache: Any, text_model: str | None) -> Tensor:
    from mmbench.models.encoders import pretrained

    prompts = [_ZERO_SHOT_PROMPT.format(name) for name in pretrained.imagenet_class_names()]
    return minilm_embeddings(prompts, cache, text_model)[0]


def load_image_embeddings(root: str | os.PathLike | None, split: str = "test", kind: str = "zeroshot",
                          captions_file: str | None = None, karpathy_file: str | None = None,
                          image_dir: str | None = None, image_size: int = 224, temperature: float = 1.0,
                          text_model: str | None = None, image_weights: str | None = None,
                          cache_dir: str | None = None) -> tuple[Tensor, Tensor]:
    """(embeddings ``[n_images, D]`` in gallery order, present bool ``[n_images]``).

    ``kind="efficientnet"``: EfficientNet-Lite0 pooled features (D = 1280). ``kind="zeroshot"``:
    the ImageNet class distribution ``softmax(logits / temperature)`` times the MiniLM
    embeddings of ``"a photo of a {class}."``, L2-normalised (D = 384, the caption space).
    Absent or unreadable images: zero rows, present False."""
    from mmbench.models.encoders import pretrained

    if kind not in ("zeroshot", "efficientnet"):
        raise SpecError(f"coco: image embedding kind {kind!r} is not one of zeroshot, efficientnet")
    src = _retrieval_source(root, split, captions_file, karpathy_file, image_dir)
    cache = feature_cache(cache_dir)
    files = resolve_image_files(src.images, src.coco_root, src.image_dir)
    feats, ok, _ = image_features(files, "efficientnet", image_size, cache, image_weights, base=src.coco_root)
    if kind == "efficientnet":
        return feats, ok
    classes = _class_text_embeddings(cache, text_model)
    out = torch.zeros((len(files), classes.shape[1]), dtype=torch.float32)
    idx = torch.nonzero(ok).flatten()
    if len(idx):
        probs = torch.softmax(pretrained.imagenet_logits(feats[idx], image_weights) / float(temperature), dim=1)
        out[idx] = torch.nn.functional.normalize(probs @ classes, dim=1)
    return out, ok


def zero_shot_embeddings(root: str | os.PathLike | None, split: str = "test", **options: Any) -> dict[str, Any]:
    """Everything the zero-shot baseline needs: ``image`` ``[n_images, 384]``, ``image_present``,
    ``text`` ``[n_captions, 384]``, ``image_ids``, ``caption_ids``, ``caption_image_index``.
    Options: those of :func:`load_image_embeddings` (captions_file, karpathy_file, cache_dir, ...)."""
    gallery_opts = {k: options[k] for k in ("captions_file", "karpathy_file") if k in options}
    text_opts = {k: options[k] for k in ("text_model", "cache_dir") if k in options}
    image_ids, caption_ids, index = load_retrieval_gallery(root, split, **gallery_opts)
    image, present = load_image_embeddings(root, split, "zeroshot", **options)
    text = load_caption_embeddings(root, split, **gallery_opts, **text_opts)
    return {"image": image, "image_present": present, "text": text, "image_ids": image_ids,
            "caption_ids": caption_ids, "caption_image_index": index}
