"""UPMC Food-101 (Wang et al., 2015): recipe photos and the title of their web page, 101 classes.

Layout under ``<data root>/food101`` (option ``dir``), as released and as the missing-modality
papers use it::

    food101/images/train/<class>/<file>.jpg     e.g. images/train/apple_pie/apple_pie_0.jpg
    food101/images/test/<class>/<file>.jpg
    food101/texts/train_titles.csv              rows: file,title,class (no header; one is skipped)
    food101/texts/test_titles.csv

Classes: the 101 Food-101 classes, indexed in sorted order (:data:`CLASSES`). Splits: ``test``
is the release's test set; the release has no validation set, so ``val`` is ``val_fraction``
(10%) of the training rows by a hash of the file name and ``train`` the rest (see
:mod:`mmbench.data.datasets.imagetext`). Sample ids are the file names. A row whose class is not a
Food-101 class, or a file name listed twice, is a :class:`~mmbench.core.errors.DataError` naming
the CSV and the line; a photo absent from ``images/<split>/<class>/`` or undecodable is a
missing image; an empty title is a missing text.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.samples import Split
from mmbench.data.datasets.imagetext import ImageTextDataset, as_long, one_line
from mmbench.core.errors import DataError
from mmbench.core.registry import DATASETS

CLASSES = tuple(sorted("""
apple_pie baby_back_ribs baklava beef_carpaccio beef_tartare beet_salad beignets bibimbap bread_pudding
breakfast_burrito bruschetta caesar_salad cannoli caprese_salad carrot_cake ceviche cheese_plate cheesecake
chicken_curry chicken_quesadilla chicken_wings chocolate_cake chocolate_mousse churros clam_chowder club_sandwich
crab_cakes creme_brulee croque_madame cup_cakes deviled_eggs donuts dumplings edamame eggs_benedict escargots
falafel filet_mignon fish_and_chips foie_gras french_fries french_onion_soup french_toast fried_calamari fried_rice
frozen_yogurt garlic_bread gnocchi greek_salad grilled_cheese_sandwich grilled_salmon guacamole gyoza hamburger
hot_and_sour_soup hot_dog huevos_rancheros hummus ice_cream lasagna lobster_bisque lobster_roll_sandwich
macaroni_and_cheese macarons miso_soup mussels nachos omelette onion_rings oysters pad_thai paella pancakes
panna_cotta peking_duck pho pizza pork_chop poutine prime_rib pulled_pork_sandwich ramen ravioli red_velvet_cake
risotto samosa sashimi scallops seaweed_salad shrimp_and_grits spaghetti_bolognese spaghetti_carbonara
spring_rolls steak strawberry_shortcake sushi tacos takoyaki tiramisu tuna_tartare waffles
""".split()))
assert len(CLASSES) == 101


def read_titles(path: Path) -> list[tuple[str, str | None, str, int]]:
    """(file, title or None, class, line) per row of a ``*_titles.csv``."""
    rows = []
    with open(path, encoding="utf-8", errors="strict", newline="") as fh:
        try:
            for line, row in enumerate(csv.reader(fh), start=1):
                if not row or (line == 1 and row[-1].strip().lower() in ("class", "label")):
                    continue
                if len(row) < 3:
                    raise DataError(f"line {line}: expected file,title,class, got {len(row)} field(s)", path)
                rows.append((row[0].strip(), one_line(",".join(row[1:-1])) or None, row[-1].strip(), line))
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
        except csv.Error as exc:
            raise DataError(f"malformed CSV: {exc}", path) from None
    return rows


@DATASETS.register("food101")
class Food101Dataset(ImageTextDataset):
    """UPMC Food-101 in its release layout; see the module docstring."""

    name = "food101"
    download_note = "UPMC Food-101 is distributed by its authors (visiir.isir.upmc.fr); unpack it under food101/"

    def __init__(self, data_dir=None, dir: str = "food101", **options: Any):
        super().__init__(data_dir, dir=dir, **options)
        self.dir = self.root / dir

    def locate(self) -> dict[str, str]:
        return {"images": str(self.dir / "images"), "texts": str(self.dir / "texts")}

    def load_split(self, split: str) -> Split:
        self.check_split(split)
        part = "test" if split == "test" else "train"
        path = self.require(self.dir / "texts" / f"{part}_titles.csv", f"UPMC Food-101 {part}_titles.csv")
        rows = read_titles(path)
        index = {c: k for k, c in enumerate(CLASSES)}
        seen: dict[str, int] = {}
        for file, _, cls, line in rows:
            if cls not in index:
                raise DataError(f"line {line}: {cls!r} is not a Food-101 class", path)
            if file in seen:
                raise DataError(f"line {line}: file {file!r} is listed twice (first on line {seen[file]})", path)
            seen[file] = line
        if part == "train":
            val = self.in_val([r[0] for r in rows])
            rows = [r for r, v in zip(rows, val) if v == (split == "val")]
        images = self.dir / "images" / part
        files = [images / cls / file for file, _, cls, _ in rows]
        return self.make_split(split, [r[0] for r in rows], [f if f.is_file() else None for f in files],
                               [r[1] for r in rows], as_long(index[r[2]] for r in rows),
                               {"class_names": list(CLASSES), "files": [str(path)]})
