"""Hateful Memes (Kiela et al., 2020): is the meme (image + its overlaid text) hateful? Binary.

Layout under ``<data root>/hateful_memes`` (option ``dir``), as the challenge released it::

    hateful_memes/img/<id>.png
    hateful_memes/train.jsonl          {"id": 42953, "img": "img/42953.png", "label": 0, "text": "..."}
    hateful_memes/dev.jsonl            (or dev_seen.jsonl; option dev_file)
    hateful_memes/test.jsonl           (or test_seen.jsonl; option test_file)

Splits: ``train`` and ``val`` (``val_fraction`` of ``train.jsonl`` by a hash of the id, see
:mod:`mmbench.data.datasets.imagetext`), ``dev`` and ``test``. Labels 0 (not hateful) / 1
(hateful). The phase-1 ``test.jsonl`` has no labels: loading it is refused with a message
saying so (it cannot be evaluated on; use ``dev``); a test file with labels (``test_seen``,
released after the challenge) loads. Ids are the ``id`` values as strings. The image is
``img`` relative to the folder (a missing or undecodable file is a missing image); an empty
text is a missing text. A line that is not a JSON object, lacks ``id`` / ``img`` / ``text``,
has a label other than 0 / 1, or repeats an id is a :class:`~mmbench.core.errors.DataError` naming
the file and the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmbench.data.samples import Split
from mmbench.data.datasets.imagetext import ImageTextDataset, as_long, one_line
from mmbench.core.errors import DataError
from mmbench.core.registry import DATASETS


class UnlabeledSplitError(DataError):
    """A split file without labels (the phase-1 test set): it cannot be trained or evaluated on."""


def read_memes(path: Path) -> list[dict[str, Any]]:
    """Rows ``id, img, text, label (None when absent), line`` of one ``*.jsonl`` file."""
    rows, seen = [], {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
    for line, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"line {line}: invalid JSON ({exc.msg})", path) from None
        if not isinstance(row, dict):
            raise DataError(f"line {line}: expected a JSON object", path)
        missing = [k for k in ("id", "img", "text") if k not in row]
        if missing:
            raise DataError(f"line {line}: no {missing[0]!r} field", path)
        label = row.get("label")
        if label is not None and (isinstance(label, bool) or label not in (0, 1)):
            raise DataError(f"line {line}: label {label!r} is not 0 or 1", path)
        meme = str(row["id"])
        if meme in seen:
            raise DataError(f"line {line}: id {meme!r} repeats line {seen[meme]}", path)
        seen[meme] = line
        rows.append({"id": meme, "img": str(row["img"]), "text": one_line(row["text"]) or None, "label": label,
                     "line": line})
    return rows


@DATASETS.register("hateful-memes")
class HatefulMemesDataset(ImageTextDataset):
    """Hateful Memes in its release layout; see the module docstring."""

    name = "hateful-memes"
    split_names = ("train", "val", "dev", "test")
    download_note = "Hateful Memes is distributed under its own licence (hatefulmemeschallenge.com); unpack it under hateful_memes/"

    def __init__(self, data_dir=None, dir: str = "hateful_memes", dev_file: str | None = None,
                 test_file: str | None = None, **options: Any):
        super().__init__(data_dir, dir=dir, dev_file=dev_file, test_file=test_file, **options)
        self.dir = self.root / dir
        self.files = {"train": "train.jsonl", "dev": dev_file, "test": test_file}

    def _file(self, part: str) -> Path:
        name = self.files[part]
        if name is None:
            name = next((f for f in (f"{part}.jsonl", f"{part}_seen.jsonl") if (self.dir / f).is_file()), f"{part}.jsonl")
        return self.require(self.dir / name, f"Hateful Memes {part} file")

    def locate(self) -> dict[str, str]:
        return {part: str(self.dir / (self.files[part] or f"{part}.jsonl")) for part in ("train", "dev", "test")} | \
            {"images": str(self.dir / "img")}

    def prepare(self, download: bool = False, mirror: str | None = None) -> dict[str, str]:
        """Verify every split; an unlabelled test file is reported, not an error."""
        if download:
            return super().prepare(download, mirror)
        report = {}
        for split in self.split_names:
            try:
                report[split] = f"{len(self.load_split(split))} samples"
            except UnlabeledSplitError:
                report[split] = "no labels (cannot be evaluated on; the tasks test on dev)"
        return report

    def load_split(self, split: str) -> Split:
        self.check_split(split)
        part = "train" if split == "val" else split
        path = self._file(part)
        rows = read_memes(path)
        unlabeled = [r for r in rows if r["label"] is None]
        if unlabeled:
            raise UnlabeledSplitError(f"{len(unlabeled)} of {len(rows)} memes have no label (first: line {unlabeled[0]['line']}); "
                            f"the {part} split cannot be evaluated on without labels (the challenge kept the test "
                            "labels): evaluate on 'dev', or give a labelled file (test_file: test_seen.jsonl)", path)
        if part == "train":
            val = self.in_val([r["id"] for r in rows])
            rows = [r for r, v in zip(rows, val) if v == (split == "val")]
        files = [self.dir / r["img"] for r in rows]
        return self.make_split(split, [r["id"] for r in rows], [f if f.is_file() else None for f in files],
                               [r["text"] for r in rows], as_long(r["label"] for r in rows),
                               {"class_names": ["not-hateful", "hateful"], "files": [str(path)]})
