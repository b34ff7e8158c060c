"""Small image-text datasets built with `datasets` itself, for the hf loader and the release-layout tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np


def png_bytes(seed: int, size: int = 12, fmt: str = "PNG") -> bytes:
    """A small RGB image with seeded content."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size, size + 3, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def image_text_columns(n: int, offset: int = 0, num_classes: int = 3) -> dict[str, list]:
    """Columns id, image (PNG bytes or None), caption (str or None), meta (2 floats or None), label."""
    from PIL import Image

    images, captions, meta = [], [], []
    for i in range(n):
        k = offset + i
        images.append(None if k % 5 == 3 else Image.open(io.BytesIO(png_bytes(k))))
        captions.append(None if k % 4 == 2 else f"sample number {k} of class {k % num_classes}")
        meta.append(None if k % 6 == 1 else [float(k), float(k % num_classes)])
    return {"uid": [f"u{offset + i}" for i in range(n)], "image": images, "caption": captions, "meta": meta,
            "label": [(offset + i) % num_classes for i in range(n)]}


def image_text_dict(n_train: int = 8, n_test: int = 6, num_classes: int = 3):
    """A DatasetDict (train, validation, test) with an Image column and a ClassLabel target."""
    import datasets

    features = datasets.Features({
        "uid": datasets.Value("string"), "image": datasets.Image(), "caption": datasets.Value("string"),
        "meta": datasets.List(datasets.Value("float32")),
        "label": datasets.ClassLabel(names=[f"c{i}" for i in range(num_classes)]),
    })
    return datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(image_text_columns(n_train, 0, num_classes), features=features),
        "validation": datasets.Dataset.from_dict(image_text_columns(n_test, 100, num_classes), features=features),
        "test": datasets.Dataset.from_dict(image_text_columns(n_test, 200, num_classes), features=features),
    })


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_image(path: Path, seed: int, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(seed, fmt=fmt))


def make_mmimdb(root: Path, counts=(8, 4, 4), layout: str = "labels") -> dict[str, list[str]]:
    """A miniature MM-IMDb: `labels` (images/ + labels/) or `dataset` (the original one-folder
    release). Genres cycle so every split has positives of several genres; movie 3 of each
    split has no poster, movie 2 an empty plot list; one genre outside the 23 is included."""
    genres = ["Drama", "Comedy", "Horror", "Sci-Fi", "Film-Noir"]
    base = root / "mmimdb"
    img_dir, meta_dir = (base / "images", base / "labels") if layout == "labels" else (base / "dataset",) * 2
    split, k = {}, 0
    for name, n in zip(("train", "dev", "test"), counts):
        split[name] = []
        for i in range(n):
            movie = f"{1000 + k:07d}"
            split[name].append(movie)
            meta = {"genres": [genres[k % 5], genres[(k + 2) % 5]] + (["Talk-Show"] if k % 3 == 0 else []),
                    "plot": [] if i == 2 else [f"a {genres[k % 5].lower()} story number {k}", "another summary"],
                    "title": f"movie {k}"}
            meta_dir.mkdir(parents=True, exist_ok=True)
            (meta_dir / f"{movie}.json").write_text(json.dumps(meta), encoding="utf-8")
            if i != 3:
                write_image(img_dir / f"{movie}.jpeg", k, fmt="JPEG")
            k += 1
    (base / "split.json").write_text(json.dumps(split), encoding="utf-8")
    return split


FOOD_CLASSES = ("apple_pie", "pizza", "sushi")


def make_food101(root: Path, per_class=(6, 2)) -> None:
    """A miniature UPMC Food-101 with three real classes; one photo missing, one empty title."""
    base = root / "food101"
    for part, n in zip(("train", "test"), per_class):
        lines = []
        for c, cls in enumerate(FOOD_CLASSES):
            for i in range(n):
                file = f"{cls}_{i}.jpg"
                if not (part == "train" and c == 0 and i == 1):
                    write_image(base / "images" / part / cls / file, 31 * c + i + (0 if part == "train" else 500), "JPEG")
                title = "" if (c == 1 and i == 0) else f"best {cls.replace('_', ' ')} recipe {i}"
                lines.append(f'{file},"{title}",{cls}')
        (base / "texts").mkdir(parents=True, exist_ok=True)
        (base / "texts" / f"{part}_titles.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_hateful_memes(root: Path, counts=(12, 6, 4), test_labels: bool = False) -> None:
    """A miniature Hateful Memes: img/*.png, train/dev/test.jsonl (test without labels by default)."""
    base = root / "hateful_memes"
    k = 0
    for part, n in zip(("train", "dev", "test"), counts):
        rows = []
        for i in range(n):
            meme = 10000 + k
            if i != 1:
                write_image(base / "img" / f"{meme}.png", k)
            row = {"id": meme, "img": f"img/{meme}.png", "text": "" if i == 2 else f"meme text {k} {'bad' if k % 2 else 'fine'}"}
            if part != "test" or test_labels:
                row["label"] = k % 2
            rows.append(row)
            k += 1
        write_jsonl(base / f"{part}.jsonl", rows)
