"""MELD (Multimodal EmotionLines Dataset), text release: utterances of TV dialogues.

Expected layout under the data root::

    sentiment/meld/train_sent_emo.csv   9,989 utterances
    sentiment/meld/dev_sent_emo.csv     1,109
    sentiment/meld/test_sent_emo.csv    2,610

Columns used: ``Utterance, Emotion, Sentiment, Dialogue_ID, Utterance_ID`` (the release also
has ``Sr No., Speaker, Season, Episode, StartTime, EndTime``). Splits ``train`` / ``val``
(``dev``) / ``test``; ids ``dia{Dialogue_ID}_utt{Utterance_ID}`` (``dia0_utt0``), as MELD's
audio/video file names are.

Option ``label``:

- ``sentiment`` (default), 3 classes in this order: ``negative, neutral, positive``;
- ``emotion``, 7 classes in this order: ``anger, disgust, fear, joy, neutral, sadness, surprise``.

Targets are int64 class indices. Only the text is in this release: ``audio`` and ``vision``
are recorded as missing (``[N, 1]`` zeros, present all False) so they flow through the same
masks as dropped data. Text options (``text_encoder``, ``tokenizer``, ``max_length``,
``max_samples``, cache) are those of :mod:`mmbench.data.datasets.sentiment`; the default is the
packaged MiniLM sentence embedding (384-d), cached after the first encoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmbench.data.datasets.sentiment import Part, TextModalityDataset
from mmbench.data.datasets.sentiment_readers import check_unique, csv_line, numeric_column, read_csv
from mmbench.core.errors import DataError, SpecError
from mmbench.core.registry import DATASETS

SENTIMENT_CLASSES = ("negative", "neutral", "positive")
EMOTION_CLASSES = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
CLASSES = {"sentiment": SENTIMENT_CLASSES, "emotion": EMOTION_CLASSES}
FILES = {"train": "train_sent_emo.csv", "val": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
MELD_COLUMNS = ("Utterance", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")

# The CSVs in the MELD GitHub repository (after its 2020 cp1252 -> UTF-8 fix); evidence for the
# hashes in docs/datasets.md "Downloads".
_MELD_RAW = "https://raw.githubusercontent.com/declare-lab/MELD/master/data/MELD/"
_MELD_SHA256 = {
    "train_sent_emo.csv": "d2fa2d6529cf03cac2989efec05c9b27d8fd2f4c8fc5974c7ae88aa537fa02db",
    "dev_sent_emo.csv": "2e89c6f8aa182d6f62f8c6331aece905ac7273ca4999660bfb5213e1d0370c1c",
    "test_sent_emo.csv": "8d37103938f7067600839fe29d5a114a6cd1bcdafb75bec101e06464c5006888",
}


def read_meld_csv(path: str | Path) -> pd.DataFrame:
    """One MELD ``*_sent_emo.csv`` -> ``id, dialogue, utterance_no, text, speaker, emotion,
    sentiment`` (labels lower-cased and checked against the class lists)."""
    path = Path(path)
    df = read_csv(path, MELD_COLUMNS, "MELD csv", dtype={"Utterance": str, "Emotion": str, "Sentiment": str, "Speaker": str})
    dia = numeric_column(df, "Dialogue_ID", path)
    utt = numeric_column(df, "Utterance_ID", path)
    for name, col in (("Dialogue_ID", dia), ("Utterance_ID", utt)):
        bad = ~np.isfinite(col) | (col < 0) | (col != np.round(col))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"column {name!r} line {csv_line(i)}: {df[name].iloc[i]!r} is not a non-negative integer", path)
    ids = [f"dia{int(d)}_utt{int(u)}" for d, u in zip(dia, utt)]
    lines = [csv_line(i) for i in range(len(df))]
    check_unique(ids, path, "utterance id", lines)
    out = pd.DataFrame({
        "id": ids,
        "dialogue": dia.astype(np.int64),
        "utterance_no": utt.astype(np.int64),
        "text": df["Utterance"].fillna("").astype(str).tolist(),
        "speaker": df["Speaker"].fillna("").astype(str).tolist() if "Speaker" in df.columns else "",
    })
    for kind, column in (("emotion", "Emotion"), ("sentiment", "Sentiment")):
        values = df[column].fillna("").astype(str).str.strip().str.lower()
        bad = ~values.isin(CLASSES[kind])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"column {column!r} line {lines[i]}: unknown {kind} {df[column].iloc[i]!r}; "
                            f"expected one of {', '.join(CLASSES[kind])} ({int(bad.sum())} bad rows)", path)
        out[kind] = values.to_numpy()
    return out


@DATASETS.register("meld")
class MELDDataset(TextModalityDataset):
    """MELD text release with 3-way sentiment or 7-way emotion targets; see the module docstring."""

    name = "meld"
    target_dtype = np.int64
    extra_options = ("label",)
    downloads = tuple({"url": _MELD_RAW + f, "path": f"sentiment/meld/{f}", "sha256": h} for f, h in _MELD_SHA256.items())

    def __init__(self, data_dir=None, label: str = "sentiment", **options: Any):
        source = options.pop("source", "csv")
        if source not in ("auto", "csv"):
            raise SpecError(f"meld: source {source!r} is not one of auto, csv")
        super().__init__(data_dir, source="csv", label=label, **options)
        if label not in CLASSES:
            raise SpecError(f"meld: label {label!r} is not one of {', '.join(CLASSES)}")
        self.label = label
        self.class_names = CLASSES[label]

    @property
    def dir(self) -> Path:
        return self.root / "sentiment" / "meld"

    def read_parts(self) -> dict[str, Part]:
        self._resolved_source = "csv"
        parts = {}
        index = {c: i for i, c in enumerate(self.class_names)}
        for split, fname in FILES.items():
            path = self.require(self.dir / fname, f"MELD {split} file {fname}")
            self._files.append(path)
            df = read_meld_csv(path)
            targets = np.array([index[v] for v in df[self.label]], dtype=np.int64)
            parts[split] = Part(df["id"].tolist(), targets, texts=df["text"].tolist(),
                                info={"files": [str(path)], "label": self.label, "class_names": list(self.class_names)})
        return parts
