"""Where COCO's files are and how the retrieval splits are cut from them: the caption file a
split comes from (:class:`Source`), the retrieval layout by the files present
(:func:`retrieval_layout`, see the "Retrieval splits" of :mod:`mmbench.data.datasets.coco`) and
the image file of each annotation row (:func:`resolve_image_files`). Reads annotation files and
lists folders; never opens an image."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmbench.core.errors import DataError
from mmbench.core.io import DirIndex, safe_join
from mmbench.data.datasets.coco_annotations import read_coco_captions, read_karpathy, sorted_tables
from mmbench.data.datasets.coco_features import CocoDataWarning

CAPTIONS_FILE = "coco/annotations/captions_val2017.json"
TRAIN_CAPTIONS_FILE = "coco/annotations/captions_train2017.json"
KARPATHY_FILE = "coco/dataset_coco.json"
COCO_DIR = "coco"


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


def under(root: Path, rel: str | os.PathLike | None) -> Path | None:
    if rel is None or str(rel) == "":
        return None
    p = Path(rel).expanduser()
    return p if p.is_absolute() else root / p


def default_image_dir(captions_path: Path) -> Path:
    stem = captions_path.stem
    split = stem.split("_", 1)[1] if stem.startswith("captions_") and "_" in stem else "val2017"
    parent = captions_path.parent
    base = parent.parent if parent.name == "annotations" else parent
    return base / split


def karpathy_path(root: Path, karpathy_file: str | os.PathLike | None) -> Path | None:
    p = under(root, karpathy_file)
    return p if p is not None and p.is_file() else None


def official_source(root: Path, cp: Path, image_dir: str | os.PathLike | None) -> Source:
    images, captions = read_coco_captions(cp)
    img_dir = under(root, image_dir) or default_image_dir(cp)
    return Source("official", cp, images, captions, img_dir, cp.parent.parent if cp.parent.name == "annotations" else cp.parent)


def read_source(root: Path, captions_file: str | os.PathLike | None, karpathy_file: str | os.PathLike | None,
                 image_dir: str | os.PathLike | None, prefer_karpathy: bool = True) -> Source:
    kp = karpathy_path(root, karpathy_file) if prefer_karpathy else None
    coco_root = root / COCO_DIR
    if kp is not None:
        images, captions = read_karpathy(kp)
        return Source("karpathy", kp, images, captions, under(root, image_dir), coco_root)
    cp = under(root, captions_file or CAPTIONS_FILE)
    assert cp is not None
    if not cp.is_file():
        where = f" or Karpathy file {under(root, karpathy_file)}" if karpathy_file else ""
        raise DataError(f"COCO captions file not found{where} (data root {root}; see README 'Data layout')", cp)
    return official_source(root, cp, image_dir)


def restrict(src: Source, image_ids: Any, split: str, note: str) -> Source:
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
    images, captions = sorted_tables(images, captions)
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


def layout_kind_of(root: Path, captions_file: Any, train_captions_file: Any, karpathy_file: Any,
                   val2017_fractions: Sequence[float] | None = None) -> str:
    """The layout from which files exist (nothing is read). An explicit val2017 carve
    (`val2017_fractions`) is its own layout whatever else is on disk."""
    if val2017_fractions is not None:
        return "val2017-carve"
    if karpathy_path(root, karpathy_file) is not None:
        return "karpathy"
    has_val = (p := under(root, captions_file)) is not None and p.is_file()
    has_train = (p := under(root, train_captions_file)) is not None and p.is_file()
    if has_train:
        return "train2017+val2017" if has_val else "train2017"
    return "val2017"


def layout_splits(kind: str) -> tuple[str, ...]:
    """The retrieval splits a layout provides."""
    if kind == "train2017":
        return ("train", "val")
    if kind == "val2017":
        return ("test",)
    return ("train", "val", "test")


def retrieval_protocol(kind: str, val2017_fractions: Sequence[float] | None = None, split_seed: int = 0) -> str:
    """The name of the test set a layout scores on: ``coco-karpathy-5k`` (Karpathy's test
    split), ``coco-val2017-5k`` (the whole val2017 caption file, whether or not train2017 is on
    disk) or ``coco-val2017-carve-<train>-<val>-<test>-seed<k>`` (an explicit carve of val2017,
    whose test set is a part of it: never the same test set as the standard one)."""
    if kind == "karpathy":
        return "coco-karpathy-5k"
    if kind == "val2017-carve":
        shares = "-".join(f"{round(100 * float(f)):g}" for f in (val2017_fractions or ()))
        return f"coco-val2017-carve-{shares}-seed{int(split_seed)}"
    return "coco-val2017-5k"


def retrieval_layout(root: Path, captions_file: Any = CAPTIONS_FILE, train_captions_file: Any = TRAIN_CAPTIONS_FILE,
                     karpathy_file: Any = KARPATHY_FILE, image_dir: Any = None, val_images: int = 5000,
                     val2017_fractions: Sequence[float] | None = None, split_seed: int = 0) -> RetrievalLayout:
    """The retrieval splits of the files under `root` (module docstring, "Retrieval splits")."""
    kind = layout_kind_of(root, captions_file, train_captions_file, karpathy_file, val2017_fractions)
    if kind == "karpathy":
        src = read_source(root, captions_file, karpathy_file, image_dir)
        parts = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
        return RetrievalLayout(kind, {s: restrict(src, src.images.loc[src.images["split"].isin(w), "image_id"], s,
                                                   f"Karpathy split {' + '.join(w)}") for s, w in parts.items()}, {})
    vp, tp = under(root, captions_file or CAPTIONS_FILE), under(root, train_captions_file)
    sources: dict[str, Source] = {}
    unavailable: dict[str, str] = {}
    if kind.startswith("train2017"):
        assert tp is not None
        train = official_source(root, tp, None)
        ids = train.images["image_id"].to_numpy()
        if 0 < int(val_images) < len(ids):
            val_ids, train_ids = carve_images(ids, [int(val_images), len(ids) - int(val_images)], split_seed)
            sources["train"] = restrict(train, train_ids, "train", f"all but the {int(val_images):,} images carved as "
                                                                   f"val (split_seed {split_seed})")
            sources["val"] = restrict(train, val_ids, "val", f"{int(val_images):,} images carved with split_seed "
                                                             f"{split_seed}")
        else:  # the test split stays usable; train / val say why they are not
            for s in ("train", "val"):
                unavailable[s] = (f"option val_images must be between 1 and {len(ids) - 1:,} (the {len(ids):,} images of "
                                  f"{tp.name} less one) to carve the val split from it, got {val_images}")
        if kind == "train2017+val2017":
            test = official_source(root, vp, image_dir)
            sources["test"] = restrict(test, test.images["image_id"], "test", "the whole file")
        else:
            unavailable["test"] = (f"split 'test' is val2017, and its caption file {vp} is not there (train and val come "
                                   f"from {tp.name})")
        return RetrievalLayout(kind, sources, unavailable)
    if vp is None or not vp.is_file():
        tried = ", ".join(str(p) for p in (vp, tp, under(root, karpathy_file)) if p is not None)
        raise DataError(f"no COCO captions file found (looked for {tried}; data root {root}; see README 'Data layout')",
                        vp or root)
    val = official_source(root, vp, image_dir)
    if val2017_fractions is None:
        sources["test"] = restrict(val, val.images["image_id"], "test", "the whole file")
        for s in ("train", "val"):
            unavailable[s] = (f"training coco-retrieval needs train2017 ({under(root, train_captions_file or TRAIN_CAPTIONS_FILE)}, "
                              f"with its images) or Karpathy's {KARPATHY_FILE}; val2017 here is the test set only. To train "
                              "on a carve of val2017 instead, use the task coco-retrieval-val2017-carve (option "
                              "val2017_fractions), whose test set is a different, separately fingerprinted split")
        return RetrievalLayout(kind, sources, unavailable)
    ids = val.images["image_id"].to_numpy()
    shares = [float(f) for f in val2017_fractions]
    n_train, n_val = (int(round(shares[0] * len(ids))), int(round(shares[1] * len(ids))))
    parts = carve_images(ids, [n_train, n_val, len(ids) - n_train - n_val], split_seed)
    for s, part, share in zip(("train", "val", "test"), parts, shares):
        sources[s] = restrict(val, part, s, f"{share:.0%} of its images, carved with split_seed {split_seed}")
    return RetrievalLayout(kind, sources, unavailable)


def split_source(layout: RetrievalLayout, split: str, path: Path | None) -> Source:
    if split in layout.sources:
        return layout.sources[split]
    if split in layout.unavailable:
        raise DataError(layout.unavailable[split], path)
    raise DataError(f"no retrieval split {split!r}; splits: {', '.join(layout.sources)}", path)


def resolve_image_files(images: pd.DataFrame, coco_root: str | os.PathLike,
                        image_dir: str | os.PathLike | None = None) -> list[Path | None]:
    """The file of each image row (None where absent): ``image_dir/file_name``, then
    ``coco_root/filepath/file_name``, then the 2017 names ``coco_root/{val,train}2017/{id:012d}.jpg``."""
    coco_root = Path(coco_root)
    index = DirIndex()
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
