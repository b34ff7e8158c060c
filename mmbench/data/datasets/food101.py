"""UPMC Food-101 (Wang et al., 2015): recipe photos and the title of their web page, 101 classes.

Layout under ``<data root>/food101`` (option ``dir``), as released and as the missing-modality
papers use it::

    food101/images/train/<class>/<file>.jpg     e.g. images/train/apple_pie/apple_pie_0.jpg
    food101/images/test/<class>/<file>.jpg
    food101/texts/train_titles.csv              rows: file,title,class (no header; one is skipped)
    food101/texts/test_titles.csv

With the missing-modality papers' files (``missing_aware_prompts``' DATA.md) beside them::

    food101/split.json       {"train": [file names], "val": [...], "test": [...]}
    food101/class_idx.json   {"apple_pie": 0, ...}

their splits and class order are used (protocol ``food101-papers``; 61,142 / 6,846 / 22,716
samples in their files): each file name's class is its name up to the last ``_``, its photo
``images/train/<class>/<file>`` (``images/test/...`` for test) and its title the row of that
file in ``texts/<part>_titles.csv``. Otherwise (protocol ``food101-hash-val``, documented
carve): classes are the 101 Food-101 classes in sorted order (:data:`CLASSES`), ``test`` is the
release's test set, and ``val`` is ``val_fraction`` (10%) of the training rows by a seeded hash
of the file name (``split_seed``), ``train`` the rest (see
:mod:`mmbench.data.datasets.imagetext`). Sample ids are the file names. A CSV row whose class is
not a Food-101 class, a file name listed twice, or a ``class_idx.json`` that is not the 101
classes indexed 0..100 is a :class:`~mmbench.core.errors.DataError` naming the file and, for a CSV, the line; a photo
absent or undecodable is a missing image; an empty title is a missing text. A file of
``split.json`` without a title row is left out, as the papers' preparation skips samples
without a text, with one warning giving the count and the first file.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


from mmbench.data.datasets.imagetext import ImageTextDataset, Rows, as_long, existing, one_line
from mmbench.core.errors import DataError
from mmbench.core.io import read_json
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


class Food101Warning(UserWarning):
    """Files of the papers' split.json without a title row (left out, as the papers do)."""


def read_titles(path: Path) -> list[tuple[str, str | None, str, int]]:
    """(file, title or None, class, line) per row of a ``*_titles.csv``."""
    rows = []
    with open(path, encoding="utf-8", errors="strict", newline="") as fh:
        reader = csv.reader(fh)
        try:
            for line, row in enumerate(reader, start=1):
                if not row or (line == 1 and row[-1].strip().lower() in ("class", "label")):
                    continue
                if len(row) < 3:
                    raise DataError(f"line {line}: expected file,title,class, got {len(row)} field(s)", path)
                rows.append((row[0].strip(), one_line(",".join(row[1:-1])) or None, row[-1].strip(), line))
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
        except csv.Error as exc:
            raise DataError(f"line {reader.line_num}: malformed CSV ({exc})", path) from None
    return rows


@DATASETS.register("food101")
class Food101Dataset(ImageTextDataset):
    """UPMC Food-101 in its release layout; see the module docstring."""

    name = "food101"
    download_note = "UPMC Food-101 is distributed by its authors (visiir.isir.upmc.fr); unpack it under food101/"

    def __init__(self, data_dir=None, dir: str = "food101", **options: Any):
        super().__init__(data_dir, dir=dir, **options)
        self.dir = self.root / dir

    def papers_files(self) -> bool:
        """Are the papers' split.json and class_idx.json there?"""
        return (self.dir / "split.json").is_file() and (self.dir / "class_idx.json").is_file()

    def protocol(self) -> str:
        return "food101-papers" if self.papers_files() else "food101-hash-val"

    def locate(self) -> dict[str, str]:
        out = {"protocol": self.protocol(), "images": str(self.dir / "images"), "texts": str(self.dir / "texts")}
        if self.papers_files():
            out |= {"split": str(self.dir / "split.json"), "class_idx": str(self.dir / "class_idx.json")}
        return out

    def class_index(self) -> dict[str, int]:
        """Class -> index: class_idx.json's with the papers' files, else sorted order."""
        if not self.papers_files():
            return {c: k for k, c in enumerate(CLASSES)}
        path = self.dir / "class_idx.json"
        table = read_json(path)
        if not isinstance(table, dict) or sorted(table) != sorted(CLASSES) or \
                sorted(v for v in table.values() if isinstance(v, int) and not isinstance(v, bool)) != list(range(101)):
            raise DataError("expected the 101 Food-101 classes, each mapped to a distinct index 0..100", path)
        return dict(table)

    def _titles(self, part: str) -> tuple[Path, list[tuple[str, str | None, str, int]]]:
        path = self.require(self.dir / "texts" / f"{part}_titles.csv", f"UPMC Food-101 {part}_titles.csv")
        rows = read_titles(path)
        seen: dict[str, int] = {}
        for file, _, cls, line in rows:
            if cls not in CLASSES:
                raise DataError(f"line {line}: {cls!r} is not a Food-101 class", path)
            if file in seen:
                raise DataError(f"line {line}: file {file!r} is listed twice (first on line {seen[file]})", path)
            seen[file] = line
        return path, rows

    def rows(self, split: str) -> Rows:
        part = "test" if split == "test" else "train"
        path, rows = self._titles(part)
        index = self.class_index()
        files_read = [str(path)]
        if self.papers_files():
            split_path = self.dir / "split.json"
            table = read_json(split_path)
            if not isinstance(table, dict) or not isinstance(table.get(split), list) or \
                    not all(isinstance(f, str) for f in table[split]):
                raise DataError(f"no {split!r} list of file names", split_path)
            by_file = {r[0]: r for r in rows}
            missing = [f for f in table[split] if f not in by_file]
            if missing:  # the papers' make_arrow skips samples without a text ("ignore no text data")
                import warnings

                warnings.warn(f"food101: {len(missing)} of {len(table[split])} files of split {split!r} in {split_path} "
                              f"have no row in {path.name} and are left out, as the papers' preparation does (first: "
                              f"{missing[0]!r})", Food101Warning, stacklevel=3)
            rows = [by_file[f] for f in table[split] if f in by_file]
            for file, _, cls, _ in rows:
                if file[:file.rfind("_")] != cls:
                    raise DataError(f"file {file!r} of split {split!r} is not named after its class {cls!r}", split_path)
            files_read.append(str(split_path))
        elif part == "train":
            val = self.in_val([r[0] for r in rows])
            rows = [r for r, v in zip(rows, val) if v == (split == "val")]
        images = self.dir / "images" / part
        files = existing([images / cls / file for file, _, cls, _ in rows])
        names = sorted(index, key=index.get)
        return Rows([r[0] for r in rows], files, [r[1] for r in rows], as_long(index[r[2]] for r in rows), images,
                    {"class_names": names, "files": files_read, "protocol": self.protocol()})
