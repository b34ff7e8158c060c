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
movies in the release). Ids are the file stems (``"0000008"``). Target: the 23 genres the
missing-modality papers use (:data:`GENRES`, the MMBT / Arevalo list), a float32 ``[N, 23]``
0/1 matrix; other genres (``Adult``, ``News``, ``Reality-TV``, ``Talk-Show``) are ignored.
Text: the first plot summary of ``plot`` (a list; a string is accepted); a movie without a
plot has a missing text. A poster absent from disk or undecodable is a missing image (counted
in ``Split.info``). A metadata file that is not JSON, has no ``genres`` list, or an id of
``split.json`` without a metadata file, is a :class:`~mmbench.core.errors.DataError` naming the file.
Image and text options: :mod:`mmbench.data.datasets.imagetext`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench.data.samples import Split
from mmbench.data.datasets.imagetext import ImageTextDataset, one_line
from mmbench.core.errors import DataError
from mmbench.core.io import read_json
from mmbench.core.registry import DATASETS

GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
          "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation", "Musical",
          "Western", "Sport", "Short", "Film-Noir")
SPLIT_KEYS = {"train": "train", "val": "dev", "test": "test"}


@DATASETS.register("mmimdb")
class MMIMDbDataset(ImageTextDataset):
    """MM-IMDb in its release layouts; see the module docstring."""

    name = "mmimdb"
    download_note = "MM-IMDb is distributed by its authors (http://lisi1.unal.edu.co/mmimdb/); unpack it under mmimdb/"

    def __init__(self, data_dir=None, dir: str = "mmimdb", **options: Any):
        super().__init__(data_dir, dir=dir, **options)
        self.dir = self.root / dir

    def _folders(self) -> tuple[Path, Path]:
        if (self.dir / "labels").is_dir():
            return self.dir / "images", self.dir / "labels"
        if (self.dir / "dataset").is_dir():
            return self.dir / "dataset", self.dir / "dataset"
        raise DataError("MM-IMDb folder has neither labels/ (with images/) nor dataset/ (see docs/datasets.md)",
                        self.require(self.dir, "MM-IMDb folder"))

    def locate(self) -> dict[str, str]:
        images, labels = self._folders()
        return {"split": str(self.dir / "split.json"), "images": str(images), "labels": str(labels)}

    def load_split(self, split: str) -> Split:
        self.check_split(split)
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
        texts: list[str | None] = []
        files: list[Path | None] = []
        for i, movie in enumerate(ids):
            meta_path = labels / f"{movie}.json"
            if not meta_path.is_file():
                raise DataError(f"metadata of movie {movie!r} (listed in split.json {key!r}) not found", meta_path)
            meta = read_json(meta_path)
            genres = meta.get("genres") if isinstance(meta, dict) else None
            if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
                raise DataError("no 'genres' list of strings", meta_path)
            for g in genres:
                if g.strip() in column:
                    targets[i, column[g.strip()]] = 1.0
            plot = meta.get("plot")
            plot = plot[0] if isinstance(plot, list) and plot else plot if isinstance(plot, str) else None
            texts.append(one_line(plot) or None)
            image = images / f"{movie}.jpeg"
            files.append(image if image.is_file() else None)
        return self.make_split(split, ids, files, texts, torch.from_numpy(targets),
                               {"class_names": list(GENRES), "files": [str(path)]})
