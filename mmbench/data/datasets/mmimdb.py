"""MM-IMDb (Arevalo et al., 2017): movie genres (multi-label) from the poster and the plot.

Layouts accepted under ``<data root>/mmimdb`` (option ``dir``):

- the layout the missing-modality papers use (Lee et al. 2023, ``missing_aware_prompts``'s
  DATA.md)::

      mmimdb/images/<id>.jpeg     poster
      mmimdb/labels/<id>.json     {"genres": [...], "plot": [...], ...}
      mmimdb/split.json           {"train": [ids], "dev": [ids], "test": [ids]}

- the original release (``mmimdb.tar.gz``), where poster and metadata share one folder::

      mmimdb/dataset/<id>.jpeg, mmimdb/dataset/<id>.json, mmimdb/split.json

Splits ``train`` / ``val`` (``dev``) / ``test`` from ``split.json`` (15,552 / 2,608 / 7,799
movies in the release). Ids are the file stems (``"0000008"``, leading zeros kept). Target: the
23 genres the missing-modality papers use (:data:`GENRES`, the MMBT / Arevalo list), a float32
``[N, 23]`` 0/1 matrix; other genres (``Adult``, ``News``, ``Reality-TV``, ``Talk-Show``) are
ignored. Genre names are case-sensitive: a genre that matches one of the 23 only in another
case (``drama``) is an error naming the file, and movies none of whose genres is among the 23
(all-zero targets) are counted in one warning naming the first file.

Text (option ``plot``, recorded in the protocol name ``mmimdb-plot-<plot>``): ``first`` (the
default, as MMP and the missing-modality papers: the first summary of the ``plot`` list),
``longest`` (the longest summary, as GMU and MMBT), or ``all`` (every summary joined by a
space). A plain string is one summary. A movie without a plot has a missing text; a ``plot``
that is neither a string nor a list of strings is an error naming the file. A poster absent
from disk or undecodable is a missing image (counted in ``Split.info``). A metadata file that
is not JSON, has no ``genres`` list, or an id of ``split.json`` without a metadata file, is a
:class:`~mmbench.core.errors.DataError` naming the file. Image and text options:
:mod:`mmbench.data.datasets.imagetext`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.datasets.imagetext import ImageTextDataset, Rows, existing, one_line
from mmbench.core.errors import DataError, SpecError
from mmbench.core.io import read_json
from mmbench.core.registry import DATASETS

GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
          "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation", "Musical",
          "Western", "Sport", "Short", "Film-Noir")
SPLIT_KEYS = {"train": "train", "val": "dev", "test": "test"}
PLOTS = ("first", "longest", "all")


class MMIMDbWarning(UserWarning):
    """Movies whose genres are none of the 23 (all-zero targets)."""


def plot_text(plot: Any, choice: str, path: Path) -> str | None:
    """The text of a ``plot`` value under the ``plot`` option (None: no plot)."""
    if plot is None:
        return None
    if isinstance(plot, str):
        return one_line(plot) or None
    if not isinstance(plot, list) or not all(isinstance(p, str) for p in plot):
        raise DataError(f"'plot' must be a string or a list of strings, got {type(plot).__name__}"
                        + (" with a non-string item" if isinstance(plot, list) else ""), path)
    texts = [one_line(p) for p in plot if one_line(p)]
    if not texts:
        return None
    if choice == "first":
        return texts[0]
    if choice == "longest":
        return max(texts, key=len)  # the first of equally long ones
    return " ".join(texts)


@DATASETS.register("mmimdb")
class MMIMDbDataset(ImageTextDataset):
    """MM-IMDb in its release layouts; see the module docstring."""

    name = "mmimdb"
    download_note = "MM-IMDb is distributed by its authors (http://lisi1.unal.edu.co/mmimdb/); unpack it under mmimdb/"

    def __init__(self, data_dir=None, dir: str = "mmimdb", plot: str = "first", **options: Any):
        super().__init__(data_dir, dir=dir, plot=plot, **options)
        if plot not in PLOTS:
            raise SpecError(f"mmimdb: plot {plot!r} is not one of {', '.join(PLOTS)}")
        self.dir = self.root / dir
        self.plot = plot

    def protocol(self) -> str:
        return f"mmimdb-plot-{self.plot}"

    def _folders(self) -> tuple[Path, Path]:
        if (self.dir / "labels").is_dir():
            return self.dir / "images", self.dir / "labels"
        if (self.dir / "dataset").is_dir():
            return self.dir / "dataset", self.dir / "dataset"
        raise DataError("MM-IMDb folder has neither labels/ (with images/) nor dataset/ (see docs/datasets.md)",
                        self.require(self.dir, "MM-IMDb folder"))

    def locate(self) -> dict[str, str]:
        images, labels = self._folders()
        return {"protocol": self.protocol(), "split": str(self.dir / "split.json"),
                "images": str(images) if images.is_dir() else f"{images} (missing)", "labels": str(labels)}

    def rows(self, split: str) -> Rows:
        path = self.require(self.dir / "split.json", "MM-IMDb split.json")
        table = read_json(path)
        key = SPLIT_KEYS[split]
        if not isinstance(table, dict) or not isinstance(table.get(key), list):
            raise DataError(f"split.json has no {key!r} list of ids", path)
        ids = [str(i) for i in table[key]]
        if len(set(ids)) != len(ids):
            raise DataError(f"split.json: the {key!r} list holds an id twice", path)
        images, labels = self._folders()
        targets = np.zeros((len(ids), len(GENRES)), dtype=np.float32)
        column = {g: k for k, g in enumerate(GENRES)}
        folded = {g.casefold(): g for g in GENRES}
        texts: list[str | None] = []
        no_genre: list[Path] = []
        for i, movie in enumerate(ids):
            meta_path = labels / f"{movie}.json"
            if not meta_path.is_file():
                raise DataError(f"metadata of movie {movie!r} (listed in split.json {key!r}) not found", meta_path)
            meta = read_json(meta_path)
            genres = meta.get("genres") if isinstance(meta, dict) else None
            if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
                raise DataError("no 'genres' list of strings", meta_path)
            for g in genres:
                name = g.strip()
                if name in column:
                    targets[i, column[name]] = 1.0
                elif name.casefold() in folded:
                    raise DataError(f"genre {g!r} is not one of the 23 MM-IMDb genres, which are case-sensitive "
                                    f"(did you mean {folded[name.casefold()]!r}?)", meta_path)
            if not targets[i].any():
                no_genre.append(meta_path)
            texts.append(plot_text(meta.get("plot"), self.plot, meta_path))
        if no_genre:
            warnings.warn(f"mmimdb: {len(no_genre)} of {len(ids)} movies of split {split!r} have none of the 23 genres "
                          f"(all-zero targets; first: {no_genre[0]})", MMIMDbWarning, stacklevel=3)
        files = existing([images / f"{movie}.jpeg" for movie in ids])
        return Rows(ids, files, texts, targets, images, {"class_names": list(GENRES), "files": [str(path)],
                                                         "protocol": self.protocol()})
