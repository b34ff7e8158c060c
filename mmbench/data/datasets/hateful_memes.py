"""Hateful Memes (Kiela et al., 2020): is the meme (image + its overlaid text) hateful? Binary.

Folder ``<data root>/hateful_memes`` (option ``dir``). The released zip unpacks to a ``data/``
folder: the annotation files are looked for in ``hateful_memes/`` and then in
``hateful_memes/data/``; images (``img/<id>.png``, the ``img`` field of each line, as
``img.tar.gz`` unpacks) beside the annotation files, then in ``hateful_memes/``::

    hateful_memes[/data]/img/42953.png
    hateful_memes[/data]/train.jsonl   {"id": 42953, "img": "img/42953.png", "label": 0, "text": "..."}
    ...

**Protocols** (option ``protocol``; ``auto``, the default, picks the first whose files are there):

- ``phase2-seen``: the phase-2 release (``dev_seen``, ``test_seen`` labelled, ``dev_unseen``,
  ``test_unseen``): train = ``train.jsonl``, val = ``dev_seen.jsonl``, test =
  ``test_seen.jsonl``, as the missing-modality papers (MMP, CVPR 2023) evaluate;
- ``phase2-unseen``: the same release, val = ``dev_unseen``, test = ``test_unseen`` (never
  chosen by ``auto``: the task ``hateful-memes-unseen`` names it);
- ``papers``: the papers' prepared layout (their DATA.md renames ``test_seen`` to a labelled
  ``test.jsonl``): train, val = ``dev.jsonl``, test = ``test.jsonl``;
- ``phase1``: the phase-1 release, whose ``test.jsonl`` has no labels: test = ``dev.jsonl``,
  val = a seeded ``val_fraction`` (10%) of ``train.jsonl`` (``split_seed``, see
  :mod:`mmbench.data.datasets.imagetext`), train = the rest.

The protocol's name (``hateful-memes-phase2-seen``, ...) is :meth:`protocol`, shown by ``data
info`` and part of the test-set fingerprint. Labels 0 (not hateful) / 1 (hateful). Ids are the
``id`` values as strings. A missing or undecodable image is a missing image; an empty text a
missing text. A line that is not a JSON object, lacks ``id`` / ``img`` / ``text``, has a text
that is not a string, a label other than 0 / 1, or repeats an id is a
:class:`~mmbench.core.errors.DataError` naming the file and the line; a split file of the
protocol without labels is refused the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmbench.data.datasets.imagetext import ImageTextDataset, Rows, as_long, existing, one_line
from mmbench.core.errors import DataError, SpecError
from mmbench.core.registry import DATASETS

PROTOCOLS = {  # name -> (val file or None for a carve of train, test file)
    "phase2-seen": ("dev_seen.jsonl", "test_seen.jsonl"),
    "phase2-unseen": ("dev_unseen.jsonl", "test_unseen.jsonl"),
    "papers": ("dev.jsonl", "test.jsonl"),
    "phase1": (None, "dev.jsonl"),
}


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
        if row["text"] is not None and not isinstance(row["text"], str):
            raise DataError(f"line {line}: text must be a string, got {type(row['text']).__name__}", path)
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


def has_labels(path: Path) -> bool:
    """Does the first meme of the file carry a label (phase 1's test.jsonl does not)?"""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError:
                    return True  # read_memes names the line
                return isinstance(row, dict) and row.get("label") is not None
    return False


@DATASETS.register("hateful-memes")
class HatefulMemesDataset(ImageTextDataset):
    """Hateful Memes in its release layouts and protocols; see the module docstring."""

    name = "hateful-memes"
    split_names = ("train", "val", "test")
    download_note = "Hateful Memes is distributed under its own licence (hatefulmemeschallenge.com); unpack it under hateful_memes/"

    def __init__(self, data_dir=None, dir: str = "hateful_memes", protocol: str = "auto", **options: Any):
        super().__init__(data_dir, dir=dir, protocol=protocol, **options)
        if protocol != "auto" and protocol not in PROTOCOLS:
            raise SpecError(f"hateful-memes: protocol {protocol!r} is not one of auto, {', '.join(PROTOCOLS)}")
        self.dir = self.root / dir
        self.requested = protocol
        self._chosen: str | None = None

    @property
    def base(self) -> Path:
        """The folder holding the annotation files: ``dir`` or the release zip's ``dir/data``."""
        for cand in (self.dir, self.dir / "data"):
            if (cand / "train.jsonl").is_file():
                return cand
        return self.dir

    def chosen(self) -> str:
        """The protocol in use (``auto`` resolved from the files present)."""
        if self._chosen is None:
            if self.requested != "auto":
                self._chosen = self.requested
            else:
                base = self.base
                if (base / "test_seen.jsonl").is_file():
                    self._chosen = "phase2-seen"
                elif (base / "test.jsonl").is_file() and has_labels(base / "test.jsonl"):
                    self._chosen = "papers"
                elif (base / "dev.jsonl").is_file():
                    self._chosen = "phase1"
                else:
                    self.require(base / "train.jsonl", "Hateful Memes train.jsonl")
                    raise DataError("no protocol's files found: expected test_seen.jsonl (phase 2), a labelled "
                                    "test.jsonl with dev.jsonl (the papers' layout) or dev.jsonl (phase 1)", base)
        return self._chosen

    def protocol(self) -> str:
        return f"hateful-memes-{self.chosen()}"

    def split_files(self) -> dict[str, str]:
        val, test = PROTOCOLS[self.chosen()]
        return {"train": "train.jsonl", "val": val or "train.jsonl", "test": test}

    def image_dir(self) -> Path:
        for cand in (self.base, self.dir):
            if (cand / "img").is_dir():
                return cand
        return self.base

    def images_hint(self) -> str:
        archive = next((p for p in (self.base / "img.tar.gz", self.dir / "img.tar.gz") if p.is_file()), None)
        return f"; {archive} is there: unpack it where it lies (it holds img/)" if archive else ""

    def locate(self) -> dict[str, str]:
        """Only files that exist; the protocol and what it reads."""
        base = self.base
        out = {"protocol": self.protocol()}
        for split, name in self.split_files().items():
            path = base / name
            how = " (less the val carve)" if split == "train" and self.chosen() == "phase1" else ""
            how = f" ({self.val_fraction:.0%} of it, split_seed {self.split_seed})" if split == "val" and \
                self.chosen() == "phase1" else how
            out[split] = f"{path}{how}" if path.is_file() else f"{path} (missing)"
        test = base / "test.jsonl"
        if self.chosen() == "phase1" and test.is_file():
            out["unlabelled"] = f"{test} (phase-1 test file without labels: not used; the test split is dev.jsonl)"
        images = self.image_dir() / "img"
        out["images"] = str(images) if images.is_dir() else f"{images} (missing)"
        return out

    def prepare(self, download: bool = False, mirror: str | None = None) -> dict[str, str]:
        if download:
            return super().prepare(download, mirror)
        return {"protocol": self.protocol()} | {s: f"{len(self.load_split(s))} samples" for s in self.split_names}

    def rows(self, split: str) -> Rows:
        name = self.split_files()[split]
        path = self.require(self.base / name, f"Hateful Memes {name} (protocol {self.protocol()})")
        memes = read_memes(path)
        unlabeled = [r for r in memes if r["label"] is None]
        if unlabeled:
            raise UnlabeledSplitError(f"{len(unlabeled)} of {len(memes)} memes have no label (first: line "
                                      f"{unlabeled[0]['line']}); split {split!r} of protocol {self.protocol()} needs "
                                      "labels", path)
        if self.chosen() == "phase1" and split in ("train", "val"):
            val = self.in_val([r["id"] for r in memes])
            memes = [r for r, v in zip(memes, val) if v == (split == "val")]
        image_dir = self.image_dir()
        files = existing([image_dir / r["img"] for r in memes])
        return Rows([r["id"] for r in memes], files, [r["text"] for r in memes], as_long(r["label"] for r in memes),
                    image_dir / "img", {"class_names": ["not-hateful", "hateful"], "files": [str(path)],
                                        "protocol": self.protocol()})
