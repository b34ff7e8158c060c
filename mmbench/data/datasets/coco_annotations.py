"""COCO caption annotation readers: the official ``captions_<split><year>.json`` (through
``pycocotools``) and Karpathy's ``dataset_coco.json``, as (images, captions) tables. Pure: no
image is opened. See :mod:`mmbench.data.datasets.coco` for the task design."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmbench.core.errors import DataError
from mmbench.core.io import read_json

KARPATHY_SPLITS = ("train", "val", "test", "restval")


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


def sorted_tables(images: pd.DataFrame, captions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    return sorted_tables(images, captions)


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
    return sorted_tables(images, captions)
