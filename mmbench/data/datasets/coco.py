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
- ``efficientnet`` (default): frozen ImageNet EfficientNet-Lite0 pooled features ``[1280]``.

Option ``text_encoder``: ``minilm`` (default; frozen all-MiniLM-L6-v2 sentence embedding
``[384]``, L2-normalised) or ``tokens`` (MiniLM WordPiece ids, a sequence modality with
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

**Retrieval splits** (:func:`retrieval_layout`), by the files present, first match wins:

1. *Karpathy* (option ``karpathy_file``, default ``coco/dataset_coco.json`` in this mode;
   ``""`` to never use one): ``train`` = train + restval (113,287 images), ``val`` and
   ``test`` (5,000 each) are Karpathy's.
2. *train2017 + val2017* (``train_captions_file``, default
   ``coco/annotations/captions_train2017.json``, and ``captions_file``): ``val`` =
   ``val_images`` (default 5,000) train2017 images, ``train`` = the other 113,287;
   ``test`` = the whole val2017 file (5,000 images, 25,014 captions).
3. *train2017 alone*: ``train`` and ``val`` as above; ``test`` is refused with one line
   saying that val2017's caption file is not there.
4. *val2017 alone*: with ``val2017_fractions`` (the coco-retrieval task sets ``[0.6, 0.2,
   0.2]``), train / val / test are those shares of val2017's images (3,000 / 1,000 / 1,000);
   without (the loader's default, ``null``), ``test`` is the whole file and train / val are
   refused (today's evaluation-only layout).

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

import contextlib
import hashlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mmbench.data.samples import Split
from mmbench.data.datasets.base import MultimodalDataset, data_root
from mmbench.core.errors import DataError, SpecError
from mmbench.core.io import read_json, safe_join
from mmbench.core.registry import DATASETS

__all__ = [
    "CAPTIONS_FILE",
    "KARPATHY_FILE",
    "CocoCaptionsDataset",
    "CocoDataWarning",
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

CAPTIONS_FILE = "coco/annotations/captions_val2017.json"
TRAIN_CAPTIONS_FILE = "coco/annotations/captions_train2017.json"
#: Without train2017, train / val / test are carved from val2017's images in these shares.
VAL2017_FRACTIONS = (0.6, 0.2, 0.2)  # what the coco-retrieval task sets (the loader's default: none)
KARPATHY_FILE = "coco/dataset_coco.json"
COCO_DIR = "coco"
IMAGE_ENCODERS = ("pixels", "efficientnet")
TEXT_ENCODERS = ("minilm", "tokens")
MODES = ("match", "retrieval")
KARPATHY_SPLITS = ("train", "val", "test", "restval")
#: Bump when the meaning of a cached tensor changes.
_PIXELS_RECIPE = "rgb-short-side-resize-center-crop-v1"
_ZERO_SHOT_PROMPT = "a photo of a {}."


class CocoDataWarning(UserWarning):
    """Some COCO images were absent or unreadable; their image modality was masked."""


# ------------------------------------------------------------------------------------------
# readers
# ------------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_items(items: Any, where: str, fields: dict[str, tuple[type, ...]], path: Path, hint: str) -> None:
    if not isinstance(items, list):
        raise DataError(f"{where!r} must be a list, got {type(items).__name__}{hint}", path)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{where}[{i}] must be an object, got {type(item).__name__}{hint}", path)
        for key, types in fields.items():
            if key not in item:
                raise DataError(f"{where}[{i}] has no {key!r}{hint}", path)
            value = item[key]
            ok = _is_int(value) if types == (int,) else isinstance(value, types)
            if not ok:
                want = "an integer" if types == (int,) else "a string" if types == (str,) else "/".join(t.__name__ for t in types)
                raise DataError(f"{where}[{i}].{key} must be {want}, got {value!r}"[:200], path)


def _first_duplicate(values: Sequence[Any]) -> Any:
    seen: set = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


def _tables(images: pd.DataFrame, captions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    images = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    captions = captions.sort_values(["image_id", "caption_id"], kind="stable").reset_index(drop=True)
    return images, captions


def read_coco_captions(json_path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The official ``captions_<split><year>.json`` -> (images, captions) tables.

    images: ``image_id, file_name, filepath ("" here), split (the file's split, e.g. val2017),
    height, width, license``; captions: ``caption_id, image_id, caption``. Both sorted by image
    id (then caption id). Raises DataError for malformed JSON or a wrong layout.
    """
    from pycocotools.coco import COCO

    path = Path(json_path)
    data = read_json(path)
    hint = " (expected the official COCO captions format: images, annotations)"
    if not isinstance(data, dict):
        raise DataError(f"top level must be an object, got {type(data).__name__}{hint}", path)
    for key in ("images", "annotations"):
        if key not in data:
            raise DataError(f"missing key {key!r}{hint}", path)
    _check_items(data["images"], "images", {"id": (int,), "file_name": (str,)}, path, hint)
    _check_items(data["annotations"], "annotations", {"id": (int,), "image_id": (int,), "caption": (str,)}, path, hint)
    dup = _first_duplicate([im["id"] for im in data["images"]])
    if dup is not None:
        raise DataError(f"image id {dup} appears twice in 'images'", path)
    dup = _first_duplicate([a["id"] for a in data["annotations"]])
    if dup is not None:
        raise DataError(f"annotation id {dup} appears twice in 'annotations'", path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    unknown = sorted(set(coco.imgToAnns) - set(coco.imgs))
    if unknown:
        raise DataError(f"{len(unknown)} caption image_id(s) are not in 'images' (first: {unknown[0]})", path)
    split = path.stem.split("_", 1)[1] if path.stem.startswith("captions_") and "_" in path.stem else ""
    imgs = [coco.imgs[i] for i in coco.getImgIds()]
    images = pd.DataFrame({
        "image_id": np.array([im["id"] for im in imgs], dtype=np.int64),
        "file_name": [im["file_name"] for im in imgs],
        "filepath": [""] * len(imgs),
        "split": [split] * len(imgs),
        "height": [im.get("height") for im in imgs],
        "width": [im.get("width") for im in imgs],
        "license": [im.get("license") for im in imgs],
    })
    anns = list(coco.anns.values())
    captions = pd.DataFrame({
        "caption_id": np.array([a["id"] for a in anns], dtype=np.int64),
        "image_id": np.array([a["image_id"] for a in anns], dtype=np.int64),
        "caption": [a["caption"] for a in anns],
    })
    return _tables(images, captions)


def read_karpathy(json_path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Karpathy's ``dataset_coco.json`` -> (images, captions) tables like :func:`read_coco_captions`.

    images: ``image_id`` (cocoid), ``file_name`` (filename), ``filepath`` (e.g. val2014),
    ``split`` (train / val / test / restval); captions: ``caption_id`` (sentid), ``image_id``,
    ``caption`` (the raw sentence).
    """
    path = Path(json_path)
    data = read_json(path)
    hint = " (expected Karpathy's dataset_coco.json: images with filepath, filename, cocoid, split, sentences)"
    if not isinstance(data, dict):
        raise DataError(f"top level must be an object, got {type(data).__name__}{hint}", path)
    if "images" not in data:
        raise DataError(f"missing key 'images'{hint}", path)
    _check_items(data["images"], "images", {"filename": (str,), "cocoid": (int,), "split": (str,), "sentences": (list,)},
                 path, hint)
    rows, caps = [], []
    for i, im in enumerate(data["images"]):
        if im["split"] not in KARPATHY_SPLITS:
            raise DataError(f"images[{i}].split is {im['split']!r}; expected one of {', '.join(KARPATHY_SPLITS)}", path)
        filepath = im.get("filepath", "")
        if not isinstance(filepath, str):
            raise DataError(f"images[{i}].filepath must be a string, got {filepath!r}", path)
        rows.append((im["cocoid"], im["filename"], filepath, im["split"]))
        _check_items(im["sentences"], f"images[{i}].sentences", {"raw": (str,), "sentid": (int,)}, path, hint)
        caps.extend((s["sentid"], im["cocoid"], s["raw"]) for s in im["sentences"])
    dup = _first_duplicate([r[0] for r in rows])
    if dup is not None:
        raise DataError(f"cocoid {dup} appears twice in 'images'", path)
    dup = _first_duplicate([c[0] for c in caps])
    if dup is not None:
        raise DataError(f"sentid {dup} appears twice", path)
    images = pd.DataFrame(rows, columns=["image_id", "file_name", "filepath", "split"]).astype({"image_id": np.int64})
    captions = pd.DataFrame(caps, columns=["caption_id", "image_id", "caption"]).astype(
        {"caption_id": np.int64, "image_id": np.int64})
    return _tables(images, captions)


# ------------------------------------------------------------------------------------------
# where the files are
# ------------------------------------------------------------------------------------------


@dataclass
class Source:
    """The caption file a split comes from and its (images, captions) tables."""

    kind: str  # "karpathy" | "official"
    path: Path
    images: pd.DataFrame
    captions: pd.DataFrame
    image_dir: Path | None  # where official file names are looked up
    coco_root: Path  # base of Karpathy filepaths and of the 2017 fallbacks
    note: str = ""  # how this split was made from the file (for `data info`)


def _under(root: Path, rel: str | os.PathLike | None) -> Path | None:
    if rel is None or str(rel) == "":
        return None
    p = Path(rel).expanduser()
    return p if p.is_absolute() else root / p


def _default_image_dir(captions_path: Path) -> Path:
    stem = captions_path.stem
    split = stem.split("_", 1)[1] if stem.startswith("captions_") and "_" in stem else "val2017"
    parent = captions_path.parent
    base = parent.parent if parent.name == "annotations" else parent
    return base / split


def _karpathy_path(root: Path, karpathy_file: str | os.PathLike | None) -> Path | None:
    p = _under(root, karpathy_file)
    return p if p is not None and p.is_file() else None


def _official_source(root: Path, cp: Path, image_dir: str | os.PathLike | None) -> Source:
    images, captions = read_coco_captions(cp)
    img_dir = _under(root, image_dir) or _default_image_dir(cp)
    return Source("official", cp, images, captions, img_dir, cp.parent.parent if cp.parent.name == "annotations" else cp.parent)


def _read_source(root: Path, captions_file: str | os.PathLike | None, karpathy_file: str | os.PathLike | None,
                 image_dir: str | os.PathLike | None, prefer_karpathy: bool = True) -> Source:
    kp = _karpathy_path(root, karpathy_file) if prefer_karpathy else None
    coco_root = root / COCO_DIR
    if kp is not None:
        images, captions = read_karpathy(kp)
        return Source("karpathy", kp, images, captions, _under(root, image_dir), coco_root)
    cp = _under(root, captions_file or CAPTIONS_FILE)
    assert cp is not None
    if not cp.is_file():
        where = f" or Karpathy file {_under(root, karpathy_file)}" if karpathy_file else ""
        raise DataError(f"COCO captions file not found{where} (data root {root}; see README 'Data layout')", cp)
    return _official_source(root, cp, image_dir)


def _restrict(src: Source, image_ids: Any, split: str, note: str) -> Source:
    """`src` cut to `image_ids` (images without a caption are left out, with a warning)."""
    images = src.images[src.images["image_id"].isin(set(int(i) for i in image_ids))]
    captions = src.captions[src.captions["image_id"].isin(set(images["image_id"].tolist()))]
    with_caps = images["image_id"].isin(set(captions["image_id"].tolist()))
    if not with_caps.all():
        warnings.warn(f"coco: {int((~with_caps).sum())} image(s) of split {split!r} have no caption and are left out of "
                      f"the retrieval gallery ({src.path.name})", CocoDataWarning, stacklevel=3)
        images = images[with_caps]
    if not len(images):
        raise DataError(f"retrieval split {split!r} has no images with captions", src.path)
    images, captions = _tables(images, captions)
    return Source(src.kind, src.path, images, captions, src.image_dir, src.coco_root, note)


def carve_images(image_ids: Sequence[int], sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Disjoint parts of `image_ids` of the given sizes (the last part takes the rest): a
    ``numpy.random.default_rng(seed)`` permutation of the ids sorted ascending, cut in order,
    so the carve depends only on the set of ids and the seed, never on which files are on disk."""
    ids = np.sort(np.asarray(image_ids, dtype=np.int64))
    perm = ids[np.random.default_rng(int(seed)).permutation(len(ids))]
    cuts = np.cumsum([int(k) for k in sizes[:-1]])
    return [np.sort(part) for part in np.split(perm, cuts)]


@dataclass
class RetrievalLayout:
    """Where each retrieval split comes from: ``kind`` is karpathy, train2017+val2017,
    train2017 or val2017; ``sources`` holds the split's images and captions, ``unavailable``
    why a split cannot be made from the files present."""

    kind: str
    sources: dict[str, Source]
    unavailable: dict[str, str]


def _layout_kind(root: Path, captions_file: Any, train_captions_file: Any, karpathy_file: Any) -> str:
    """The layout from which files exist (nothing is read)."""
    if _karpathy_path(root, karpathy_file) is not None:
        return "karpathy"
    has_val = (p := _under(root, captions_file)) is not None and p.is_file()
    has_train = (p := _under(root, train_captions_file)) is not None and p.is_file()
    if has_train:
        return "train2017+val2017" if has_val else "train2017"
    return "val2017"


def layout_splits(kind: str, val2017_fractions: Sequence[float] | None) -> tuple[str, ...]:
    """The retrieval splits a layout provides."""
    if kind == "train2017":
        return ("train", "val")
    if kind == "val2017" and val2017_fractions is None:
        return ("test",)
    return ("train", "val", "test")


def retrieval_layout(root: Path, captions_file: Any = CAPTIONS_FILE, train_captions_file: Any = TRAIN_CAPTIONS_FILE,
                     karpathy_file: Any = KARPATHY_FILE, image_dir: Any = None, val_images: int = 5000,
                     val2017_fractions: Sequence[float] | None = None, split_seed: int = 0) -> RetrievalLayout:
    """The retrieval splits of the files under `root` (module docstring, "Retrieval splits")."""
    kind = _layout_kind(root, captions_file, train_captions_file, karpathy_file)
    if kind == "karpathy":
        src = _read_source(root, captions_file, karpathy_file, image_dir)
        parts = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
        return RetrievalLayout(kind, {s: _restrict(src, src.images.loc[src.images["split"].isin(w), "image_id"], s,
                                                   f"Karpathy split {' + '.join(w)}") for s, w in parts.items()}, {})
    vp, tp = _under(root, captions_file or CAPTIONS_FILE), _under(root, train_captions_file)
    sources: dict[str, Source] = {}
    unavailable: dict[str, str] = {}
    if kind.startswith("train2017"):
        assert tp is not None
        train = _official_source(root, tp, None)
        ids = train.images["image_id"].to_numpy()
        if 0 < int(val_images) < len(ids):
            val_ids, train_ids = carve_images(ids, [int(val_images), len(ids) - int(val_images)], split_seed)
            sources["train"] = _restrict(train, train_ids, "train", f"all but the {int(val_images):,} images carved as "
                                                                   f"val (split_seed {split_seed})")
            sources["val"] = _restrict(train, val_ids, "val", f"{int(val_images):,} images carved with split_seed "
                                                             f"{split_seed}")
        else:  # the test split stays usable; train / val say why they are not
            for s in ("train", "val"):
                unavailable[s] = (f"option val_images must be between 1 and {len(ids) - 1:,} (the {len(ids):,} images of "
                                  f"{tp.name} less one) to carve the val split from it, got {val_images}")
        if kind == "train2017+val2017":
            test = _official_source(root, vp, image_dir)
            sources["test"] = _restrict(test, test.images["image_id"], "test", "the whole file")
        else:
            unavailable["test"] = (f"split 'test' is val2017, and its caption file {vp} is not there (train and val come "
                                   f"from {tp.name})")
        return RetrievalLayout(kind, sources, unavailable)
    if vp is None or not vp.is_file():
        tried = ", ".join(str(p) for p in (vp, tp, _under(root, karpathy_file)) if p is not None)
        raise DataError(f"no COCO captions file found (looked for {tried}; data root {root}; see README 'Data layout')",
                        vp or root)
    val = _official_source(root, vp, image_dir)
    if val2017_fractions is None:
        sources["test"] = _restrict(val, val.images["image_id"], "test", "the whole file")
        for s in ("train", "val"):
            unavailable[s] = (f"retrieval split {s!r} needs captions_train2017.json (option train_captions_file, default "
                              f"{TRAIN_CAPTIONS_FILE}), a Karpathy split file ({KARPATHY_FILE}) or val2017_fractions to "
                              "carve it from val2017; without them only 'test' (the whole official caption file) is available")
        return RetrievalLayout(kind, sources, unavailable)
    ids = val.images["image_id"].to_numpy()
    shares = [float(f) for f in val2017_fractions]
    n_train, n_val = (int(round(shares[0] * len(ids))), int(round(shares[1] * len(ids))))
    parts = carve_images(ids, [n_train, n_val, len(ids) - n_train - n_val], split_seed)
    for s, part, share in zip(("train", "val", "test"), parts, shares):
        sources[s] = _restrict(val, part, s, f"{share:.0%} of its images, carved with split_seed {split_seed}")
    return RetrievalLayout(kind, sources, unavailable)


def _split_source(layout: RetrievalLayout, split: str, path: Path | None) -> Source:
    if split in layout.sources:
        return layout.sources[split]
    if split in layout.unavailable:
        raise DataError(layout.unavailable[split], path)
    raise DataError(f"no retrieval split {split!r}; splits: {', '.join(layout.sources)}", path)


class _DirIndex:
    """File names per folder, listed once (fast existence checks for thousands of images)."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def exists(self, path: Path) -> bool:
        parent = path.parent
        if parent not in self._names:
            try:
                self._names[parent] = {e.name for e in os.scandir(parent) if e.is_file()}
            except OSError:
                self._names[parent] = set()
        return path.name in self._names[parent]


def resolve_image_files(images: pd.DataFrame, coco_root: str | os.PathLike,
                        image_dir: str | os.PathLike | None = None) -> list[Path | None]:
    """The file of each image row (None where absent): ``image_dir/file_name``, then
    ``coco_root/filepath/file_name``, then the 2017 names ``coco_root/{val,train}2017/{id:012d}.jpg``."""
    coco_root = Path(coco_root)
    index = _DirIndex()
    out: list[Path | None] = []
    for image_id, name, filepath in zip(images["image_id"], images["file_name"], images["filepath"]):
        candidates = []
        if image_dir is not None:
            candidates.append(safe_join(image_dir, name))
        if filepath:
            candidates.append(safe_join(coco_root, f"{filepath}/{name}"))
        candidates += [coco_root / "val2017" / f"{int(image_id):012d}.jpg", coco_root / "train2017" / f"{int(image_id):012d}.jpg"]
        out.append(next((c for c in candidates if index.exists(c)), None))
    return out


# ------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------


def decode_image_file(path: str | os.PathLike, image_size: int = 224) -> Tensor:
    """uint8 RGB ``[3, S, S]``: decoded with torchvision (grayscale -> 3 channels), shorter side
    resized to S (antialiased), centre crop. Raises (RuntimeError / OSError) on unreadable files."""
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2 import functional as F

    img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    img = F.resize(img, [int(image_size)], antialias=True)
    return F.center_crop(img, [int(image_size), int(image_size)]).contiguous()


def load_image_pixels(paths: Sequence[Path], image_size: int = 224) -> tuple[Tensor, Tensor, dict[str, str]]:
    """(uint8 ``[N, 3, S, S]``, ok bool ``[N]``, {file: error} for files that failed to decode)."""
    out = torch.zeros((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    ok = torch.zeros(len(paths), dtype=torch.bool)
    problems: dict[str, str] = {}
    for i, p in enumerate(paths):
        try:
            out[i] = decode_image_file(p, image_size)
            ok[i] = True
        except Exception as exc:  # noqa: BLE001 - corrupt / truncated / not an image: masked, reported
            problems[str(p)] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return out, ok, problems


def _files_fingerprint(paths: Sequence[Path], base: Path) -> str:
    """SHA-256 over (name relative to base, size, mtime_ns) in the given order."""
    h = hashlib.sha256(b"mmbench-coco-images-v1\0")
    for p in paths:
        st = p.stat()
        try:
            name = p.relative_to(base).as_posix()
        except ValueError:
            name = p.as_posix()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _weights_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}"


def _cache(cache: Any) -> Any:
    from mmbench.core.cache import FeatureCache

    if cache is None or isinstance(cache, (str, os.PathLike)):
        return FeatureCache(cache)
    return cache


def _problems_tensor(problems: dict[str, str]) -> Tensor:
    """{file: error} as JSON bytes in a uint8 tensor, so it rides along in a cache entry."""
    return torch.tensor(list(json.dumps(problems, sort_keys=True).encode()), dtype=torch.uint8)


def _problems_from(t: Tensor | None) -> dict[str, str]:
    if t is None or not t.numel():
        return {}
    try:
        return json.loads(bytes(t.tolist()).decode())
    except ValueError:
        return {}


def _warn_unreadable(problems: dict[str, str], total: int, show: int = 3) -> None:
    if not problems:
        return
    first = "; ".join(f"{name}: {why}" for name, why in list(problems.items())[:show])
    more = f"; and {len(problems) - show} more" if len(problems) > show else ""
    warnings.warn(f"coco: {len(problems)} of {total} image files could not be decoded; their image is masked "
                  f"({first}{more})", CocoDataWarning, stacklevel=3)


def image_features(files: Sequence[Path | None], image_encoder: str = "efficientnet", image_size: int = 224,
                   cache: Any = None, weights_path: str | None = None, base: Path | None = None
                   ) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The image modality for `files` (None = absent): (tensor ``[N, ...]``, zero where not ok;
    ok bool ``[N]``; info with ``absent`` and ``unreadable`` counts). ``pixels`` -> normalised
    float ``[N, 3, S, S]``; ``efficientnet`` -> ``[N, 1280]``. Cached (see the module
    docstring); files that cannot be decoded are masked and warned about on every load."""
    from mmbench.models.encoders import pretrained

    if image_encoder not in IMAGE_ENCODERS:
        raise SpecError(f"coco: image_encoder {image_encoder!r} is not one of {', '.join(IMAGE_ENCODERS)}")
    image_size = int(image_size)
    if image_size < 8:
        raise SpecError(f"coco: image_size must be at least 8, got {image_size}")
    rows = [i for i, f in enumerate(files) if f is not None]
    present = [Path(files[i]) for i in rows]  # type: ignore[arg-type]
    n = len(files)
    options: dict[str, Any] = {"image_size": image_size, "recipe": _PIXELS_RECIPE}
    if image_encoder == "pixels":
        namespace, dim = "coco-pixels", (3, image_size, image_size)

        def build() -> dict[str, Tensor]:
            px, ok, problems = load_image_pixels(present, image_size)
            return {"values": px, "ok": ok, "problems": _problems_tensor(problems)}
    else:
        weights = pretrained.efficientnet_weights_path(weights_path)
        namespace, dim = "coco-efficientnet-lite0", (pretrained.EFFICIENTNET_DIM,)
        options.update({"model": "efficientnet-lite0", "weights": _weights_fingerprint(weights), "pooling": "mean"})

        def build() -> dict[str, Tensor]:
            px, ok, problems = load_image_pixels(present, image_size)
            feats = torch.zeros((len(present), *dim), dtype=torch.float32)
            idx = torch.nonzero(ok).flatten()
            if len(idx):
                feats[idx] = pretrained.encode_images(px[idx], weights_path=weights)
            return {"values": feats, "ok": ok, "problems": _problems_tensor(problems)}

    hit = None
    if present:
        cache = _cache(cache)
        base = base or Path(os.path.commonpath([str(p.parent) for p in present]))
        got = cache.get_or_build(namespace, _files_fingerprint(present, base), options, build,
                                 meta={"n_images": str(len(present))})
        hit = bool(cache.last_hit)
        if got["ok"].shape[0] != len(present) or got["values"].shape[1:] != dim:
            raise DataError(f"image feature cache entry {cache.last_key} does not match the {len(present)} images", cache.root)
        values = got["values"]
        values = pretrained.normalize_pixels(values) if image_encoder == "pixels" else values.float()
        ok_present = got["ok"].to(torch.bool)
        problems = _problems_from(got.get("problems"))
    else:
        values, ok_present, problems = torch.zeros((0, *dim)), torch.zeros(0, dtype=torch.bool), {}
    out = torch.zeros((n, *dim), dtype=torch.float32)
    ok = torch.zeros(n, dtype=torch.bool)
    if rows:
        idx = torch.tensor(rows)
        ok[idx] = ok_present
        out[idx] = torch.where(ok_present.view((-1,) + (1,) * len(dim)), values, torch.zeros(()))
    _warn_unreadable(problems, len(present))
    info = {"images": n, "absent": n - len(present), "unreadable": len(present) - int(ok_present.sum()),
            "image_encoder": image_encoder, "image_cache": "none" if hit is None else "hit" if hit else "miss"}
    return out, ok, info


# ------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------


def minilm_embeddings(texts: Sequence[str], cache: Any = None, model_path: str | None = None,
                      batch_size: int = 64) -> tuple[Tensor, bool]:
    """(float32 ``[N, 384]`` L2-normalised MiniLM embeddings, cache hit?). Cached by
    :func:`mmbench.data.datasets.text.text_features` (the same entries as the sentiment loaders)."""
    from mmbench.data.datasets.text import text_features
    from mmbench.models.encoders import pretrained

    texts = [str(t) for t in texts]
    if not texts:
        return torch.zeros((0, pretrained.MINILM_DIM)), False
    path = pretrained.minilm_path(model_path, option="text_model")
    got = text_features(texts, path, _cache(cache), max_length=128, batch_size=batch_size)
    return torch.from_numpy(got["features"]), got["info"]["cache"] == "hit"


def text_features(texts: Sequence[str], text_encoder: str = "minilm", cache: Any = None,
                  model_path: str | None = None, max_tokens: int = 64) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
    """The text modality: (``[N, 384]`` embeddings or int64 token ids ``[N, T]``, lengths or
    None, info)."""
    from mmbench.models.encoders import pretrained

    if text_encoder not in TEXT_ENCODERS:
        raise SpecError(f"coco: text_encoder {text_encoder!r} is not one of {', '.join(TEXT_ENCODERS)}")
    if text_encoder == "tokens":
        ids, lengths = pretrained.tokenize_texts(list(texts), model_path, max_length=int(max_tokens))
        return ids, lengths, {"text_encoder": "tokens"}
    feats, hit = minilm_embeddings(texts, cache, model_path)
    return feats, None, {"text_encoder": "minilm", "text_cache": "hit" if hit else "miss"}


def text_vocabulary(modality: str, text_encoder: str, model_path: str | None = None) -> dict[str, Any]:
    """The ``Split.info`` entry naming the tokenizer of a `modality` loaded by
    :func:`text_features` (``vocab_size``, ``pad_id``); empty for embeddings."""
    from mmbench.data.samples import vocabulary_info
    from mmbench.models.encoders import pretrained

    if text_encoder != "tokens":
        return {}
    return vocabulary_info(modality, pretrained.tokenizer_info(model_path))


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
    ):
        super().__init__(data_dir, mode=mode, captions_file=captions_file, karpathy_file=karpathy_file, image_dir=image_dir,
                         image_size=image_size, image_encoder=image_encoder, text_encoder=text_encoder,
                         text_model=text_model, image_weights=image_weights, max_tokens=max_tokens, seed=seed,
                         negatives_per_image=negatives_per_image, hard_pool=hard_pool,
                         max_negative_similarity=max_negative_similarity, fractions=list(fractions),
                         include_missing_images=include_missing_images, train_captions_file=train_captions_file,
                         val_images=val_images, split_seed=split_seed,
                         val2017_fractions=None if val2017_fractions is None else list(val2017_fractions))
        if mode not in MODES:
            raise SpecError(f"coco-captions: mode {mode!r} is not one of {', '.join(MODES)}")
        if image_encoder not in IMAGE_ENCODERS:
            raise SpecError(f"coco-captions: image_encoder {image_encoder!r} is not one of {', '.join(IMAGE_ENCODERS)}")
        if text_encoder not in TEXT_ENCODERS:
            raise SpecError(f"coco-captions: text_encoder {text_encoder!r} is not one of {', '.join(TEXT_ENCODERS)}")
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
            self.split_names = layout_splits(self.layout_kind(), self.val2017_fractions)
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
        return _layout_kind(self.root, self.captions_file, self.train_captions_file, self._karpathy_option())

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
            self._source = _read_source(self.root, self.captions_file, self._karpathy_option(), self.image_dir)
        return self._source

    def _cache(self) -> Any:
        return _cache(self.cache_dir)

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
                                           base=src.coco_root)
        txt, lengths, txt_info = text_features(texts, self.text_encoder, cache, self.text_model, self.max_tokens)
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
        src = _split_source(self.retrieval_layout(), split, _under(self.root, self.captions_file))
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
                     "missing_images": info["absent"], "unreadable_images": info["unreadable"]})
        out = Split(split, ids, mods, present, torch.from_numpy(target), lengths, info)
        self._retrieval[split] = out
        return out

    # -- match -------------------------------------------------------------------------------

    def _match_source(self) -> tuple[Source, dict[int, str], list[Path | None]]:
        """(images and captions, split of each image id, file of each image row) for coco-match."""
        kind = _layout_kind(self.root, self.captions_file, self.train_captions_file, self._karpathy_option())
        if kind == "karpathy":
            src = self.source()
            split_of = {int(i): "train" if s == "restval" else s for i, s in zip(src.images["image_id"], src.images["split"])}
            return src, split_of, resolve_image_files(src.images, src.coco_root, src.image_dir)
        if kind == "train2017+val2017":  # train2017 -> train / val in the shares of fractions; val2017 -> test
            train = _official_source(self.root, _under(self.root, self.train_captions_file), None)
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
        src = self.source() if kind == "val2017" else _official_source(self.root, _under(self.root, self.train_captions_file),
                                                                      None)
        split_of = {int(i): match_split_of(i, self.fractions) for i in src.images["image_id"]}
        return src, split_of, resolve_image_files(src.images, src.coco_root, src.image_dir)

    def _build_match(self) -> dict[str, Split]:
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
            _split_source(self.retrieval_layout(), split, _under(self.root, self.captions_file))  # raises why
        super().check_split(split)

    def load_retrieval_gallery(self, split: str) -> tuple[list[int], list[int], np.ndarray]:
        """(image ids, caption ids, caption_image_index) of `split`, from this dataset's caption
        file (the same one :meth:`load_split` uses); reads no image."""
        self.check_split(split)
        return _gallery(_split_source(self.retrieval_layout(), split, _under(self.root, self.captions_file)))

    def split_summary(self, split: str) -> dict[str, Any]:
        """Counts from the caption file and the file system (no image or caption is encoded):
        images in the annotations, images on disk, captions. In retrieval mode, of `split`'s
        gallery; in match mode, of the whole caption file (pairs are mined from encoded features)."""
        self.check_split(split)
        if self.mode == "retrieval":
            src = _split_source(self.retrieval_layout(), split, _under(self.root, self.captions_file))
        else:
            src = self.source()
        on_disk = sum(f is not None for f in resolve_image_files(src.images, src.coco_root, src.image_dir))
        out: dict[str, Any] = {"images": len(src.images), "images_on_disk": on_disk, "captions": len(src.captions)}
        if self.mode == "match":
            out["scope"] = "whole caption file (match pairs are mined at load time)"
        return out

    def available_splits(self) -> list[str]:
        return list(self.split_names)

    def locate(self) -> dict[str, str]:
        kp_option = self._karpathy_option()
        kp = _karpathy_path(self.root, kp_option)
        cp = _under(self.root, self.captions_file)
        out = {"captions": str(cp) + ("" if cp and cp.is_file() else " (missing)")}
        out["karpathy"] = str(kp) if kp else (f"{_under(self.root, kp_option)} (absent)" if kp_option else "not used")
        out["images"] = str(_under(self.root, self.image_dir) or (_default_image_dir(cp) if cp else self.root / COCO_DIR))
        if self.mode == "retrieval":
            tp = _under(self.root, self.train_captions_file)
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
    return _split_source(layout, split, _under(root_path, captions_file or CAPTIONS_FILE))


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
    return minilm_embeddings(src.captions["caption"].tolist(), _cache(cache_dir), text_model)[0]


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
    cache = _cache(cache_dir)
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
