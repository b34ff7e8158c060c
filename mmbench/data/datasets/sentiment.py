"""CMU-MOSI and CMU-MOSEI: sentiment intensity in [-3, 3] from text, audio and vision.

Expected layout under the data root (``--data-dir`` / ``$MMBENCH_DATA``)::

    sentiment/mosi/unaligned_50.pkl | aligned_50.pkl      MMSA feature pickles (also under Processed/)
    sentiment/mosi/mosi_raw.pkl | mosi_data.pkl           MultiBench affect pickles
    sentiment/mosi/CMUMOSI_features_raw_2way.pkl          transcripts, labels, standard fold
    sentiment/mosi/audio_2way.pickle + audio_2way_ids.csv utterance-level openSMILE audio (73-d)
    sentiment/mosi/label.csv                              MMSA label file (full or id,text,label,mode)
    sentiment/mosi/CMU_MOSI_Opinion_Labels.csd            SDK label sequence (read by the readers)
    sentiment/mosei/unaligned_50.pkl | aligned_50.pkl     MMSA pickles for MOSEI
    sentiment/mosei/mosei_raw.pkl | mosei_senti_data.pkl  MultiBench pickles for MOSEI
    sentiment/mosei/label.csv                             video_id,clip_id,text,label,mode

Option ``source`` picks the format; ``auto`` (default) takes the first that exists, in this
order: ``mmsa`` > ``multibench`` > ``raw`` (MOSI only: the raw_2way pickle, with the audio
pair when present) > ``label_csv``. What each gives:

============  ==========================  ===========================  =======================
source        text                        audio                        vision
============  ==========================  ===========================  =======================
mmsa          ``raw_text`` encoded (or    [T, 5|74] sequence           [T, 20|35] sequence
              the file's BERT features)
multibench    GloVe [T, 300] sequence     [T, 74|5] sequence           [T, 35|20] sequence
raw (MOSI)    transcripts encoded         73-d openSMILE vector        absent
label_csv     transcripts encoded         73-d vector if the audio     absent
                                          pair is there (MOSI), else
                                          absent
============  ==========================  ===========================  =======================

With the files in ``../shared/data`` this is a real MOSI with text and audio present for all
2,199 clips and vision missing, and a MOSEI with text only.

- Splits ``train`` / ``val`` / ``test``; MOSI's standard fold is 1,284 / 229 / 686 clips,
  MOSEI's 16,274 / 1,861 / 4,653.
- Ids: MOSI clip ids ``<video_id>_<clip>`` (``03bSnISJMiM_1``); MOSEI ``<video_id>_<clip_id>``
  (``-3g5yACwYnA_82_7645``, clip_id being the start time with ``.`` written ``_``).
- Targets: float32 sentiment in [-3, 3] (a label outside is a DataError).
- ``text_encoder``: ``minilm`` (default where transcripts exist: the packaged
  all-MiniLM-L6-v2, one 384-d vector per clip), a local transformers model folder, ``tokens``
  (int64 token ids [T] with lengths, for a trainable encoder; ``tokenizer`` picks the
  vocabulary, default MiniLM's) or ``features`` (the file's own text features; the default
  for MultiBench, which has no transcripts); ``text_pooling`` (``mean``, L2-normalised, the
  default; ``cls``; ``pooler``) says how a model folder's token states become one vector
  (docs/datasets.md "Encoders": BERT's pooler output, as MMF uses it). Embeddings are cached in
  :class:`~mmbench.core.cache.FeatureCache` (``cache_dir`` or ``$MMBENCH_CACHE``), keyed by the
  texts, the model and the options: the second load reads the cache.
- An absent modality is a ``[N, 1]`` zero column with ``present`` all False, so it flows
  through the same masks as dropped data (and ``drop:vision`` changes nothing on MOSI).
- The 73-d openSMILE vectors are standardised with the train fold's mean and std
  (``standardize_audio: false`` keeps the raw values, whose scales differ by 10^5).
- Sequences (MMSA / MultiBench) are end-padded with their true lengths in ``Split.lengths``;
  NaN / +-inf feature values become 0 (as MMSA does).
- ``max_samples``: keep only the first N clips of each split (quick runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmbench.data.datasets import sentiment_readers as readers
from mmbench.data.datasets.base import MultimodalDataset, encoder_options
from mmbench.core.errors import DataError, SpecError
from mmbench.core.registry import DATASETS

if TYPE_CHECKING:  # torch is imported where a split is built: labels-only scoring never needs it
    import torch

    from mmbench.data.samples import Split

SOURCES = ("auto", "mmsa", "multibench", "raw", "label_csv")
ABSENT_SHAPE = (1,)


@dataclass
class Part:
    """One split's raw material before encoding (what a source reader hands the loader).

    A modality is None when the source lacks it; otherwise an array ``[N, F]`` (vector) or
    ``[N, T, F]`` with ``*_lengths`` (end-padded sequence) and a bool ``*_present`` [N].
    """

    ids: list[str]
    targets: np.ndarray
    texts: list[str] | None = None
    text_features: np.ndarray | None = None
    text_lengths: np.ndarray | None = None
    audio: np.ndarray | None = None
    audio_lengths: np.ndarray | None = None
    audio_present: np.ndarray | None = None
    vision: np.ndarray | None = None
    vision_lengths: np.ndarray | None = None
    vision_present: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def head(self, n: int) -> Part:
        cut = lambda x: None if x is None else x[:n]
        return Part(self.ids[:n], self.targets[:n], cut(self.texts), cut(self.text_features), cut(self.text_lengths),
                    cut(self.audio), cut(self.audio_lengths), cut(self.audio_present), cut(self.vision),
                    cut(self.vision_lengths), cut(self.vision_present), dict(self.info))


class TextModalityDataset(MultimodalDataset):
    """Shared assembly for the transcript datasets (MOSI, MOSEI, MELD): reads a source into
    `Part`s once, encodes the text (cached), and stacks a `Split` per request."""

    modalities = ("text", "audio", "vision")
    split_names = ("train", "val", "test")
    target_dtype = np.float32
    #: options a subclass adds to the shared ones (anything else is a SpecError)
    extra_options: tuple[str, ...] = ()
    common_options = ("source", "text_encoder", "tokenizer", "max_length", "max_samples", "cache", "cache_dir",
                      "encode_batch_size", "encode_device", "text_pooling")

    def __init__(self, data_dir=None, source: str = "auto", text_encoder: str | None = None, tokenizer: str = "minilm",
                 max_length: int | None = None, max_samples: int | None = None, cache: bool = True,
                 cache_dir: str | None = None, encode_batch_size: int = 64, encode_device: str = "auto",
                 text_pooling: str = "mean", **options: Any):
        unknown = sorted(set(options) - set(self.extra_options))
        if unknown:
            known = ", ".join(sorted(self.common_options + self.extra_options))
            raise SpecError(f"{self.name}: unknown dataset option {unknown[0]!r}; known: {known}")
        super().__init__(data_dir, source=source, text_encoder=text_encoder, tokenizer=tokenizer, max_length=max_length,
                         max_samples=max_samples, **encoder_options(text_pooling=text_pooling), **options)
        if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
            raise SpecError(f"{self.name}: max_samples must be a positive integer, got {max_samples!r}")
        self.source = source
        self.text_encoder = text_encoder
        self.text_pooling = text_pooling
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_samples = max_samples
        self.encode_batch_size = encode_batch_size
        self.encode_device = encode_device
        self.cache = None
        if cache:
            from mmbench.core.cache import FeatureCache

            self.cache = FeatureCache(cache_dir)
        self._parts: dict[str, Part] | None = None
        self._resolved_source: str | None = None
        self._files: list[Path] = []

    # -- to implement ---------------------------------------------------------------------

    def read_parts(self) -> dict[str, Part]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------

    def parts(self) -> dict[str, Part]:
        if self._parts is None:
            self._parts = self.read_parts()
        return self._parts

    def _device(self) -> str:
        import torch

        if self.encode_device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.encode_device

    def _text(self, part: Part) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        """(values, present, lengths or None, info) for the text modality."""
        import torch

        n = len(part.ids)
        choice = self.text_encoder
        if choice is None:
            choice = "minilm" if part.texts is not None else "features"
        if choice == "features":
            if part.text_features is None:
                raise SpecError(f"{self.name}: text_encoder 'features' needs a source with text features "
                                f"(source {self._resolved_source!r} has transcripts only; use minilm, tokens or a model path)")
            lengths = part.text_lengths if part.text_lengths is not None else np.full(n, part.text_features.shape[1])
            present = lengths > 0
            return (torch.from_numpy(np.ascontiguousarray(part.text_features, dtype=np.float32)), torch.from_numpy(present),
                    torch.from_numpy(lengths.astype(np.int64)), {"text_encoder": "features"})
        if part.texts is None:
            raise SpecError(f"{self.name}: source {self._resolved_source!r} has no transcripts, so text_encoder {choice!r} "
                            "cannot be used; use text_encoder: features")
        from mmbench.data.datasets.text import text_features

        present = np.array([bool(t.strip()) for t in part.texts])
        got = text_features(part.texts, choice, self.cache, self.max_length, self.encode_batch_size, self.tokenizer, self._device(),
                            self.text_pooling)
        info = dict(got["info"])
        if "tokens" in got:
            tokens, lengths = got["tokens"], got["lengths"]
            lengths = np.where(present, lengths, 0)
            tokens = np.where(present[:, None], tokens, info.get("pad_id", 0))
            return torch.from_numpy(tokens), torch.from_numpy(present), torch.from_numpy(lengths.astype(np.int64)), info
        feats = np.where(present[:, None], got["features"], 0.0).astype(np.float32)
        return torch.from_numpy(feats), torch.from_numpy(present), None, info

    @staticmethod
    def _modality(n: int, values: np.ndarray | None, lengths: np.ndarray | None, present: np.ndarray | None):
        import torch

        if values is None:
            return torch.zeros((n, *ABSENT_SHAPE)), torch.zeros(n, dtype=torch.bool), None
        if present is None:
            present = lengths > 0 if lengths is not None else np.ones(n, dtype=bool)
        values = np.ascontiguousarray(values, dtype=np.float32)
        mask = present.reshape((n,) + (1,) * (values.ndim - 1))
        values = np.where(mask, values, np.float32(0.0))
        lens = None if lengths is None else torch.from_numpy(np.where(present, lengths, 0).astype(np.int64))
        return torch.from_numpy(values), torch.from_numpy(present.astype(bool)), lens

    def load_split(self, split: str) -> Split:
        import torch

        from mmbench.data.samples import Split, vocabulary_info

        self.check_split(split)
        part = self.parts()[split]
        if self.max_samples is not None:
            part = part.head(self.max_samples)
        n = len(part.ids)
        mods: dict[str, torch.Tensor] = {}
        present: dict[str, torch.Tensor] = {}
        lengths: dict[str, torch.Tensor] = {}
        text, text_present, text_len, text_info = self._text(part)
        mods["text"], present["text"] = text, text_present
        if text_len is not None:
            lengths["text"] = text_len
        for name in ("audio", "vision"):
            v, p, ln = self._modality(n, getattr(part, name), getattr(part, f"{name}_lengths"), getattr(part, f"{name}_present"))
            mods[name], present[name] = v, p
            if ln is not None:
                lengths[name] = ln
        info = {"dataset": self.name, "source": self._resolved_source, **part.info, **text_info,
                **vocabulary_info("text", text_info)}
        targets = torch.from_numpy(np.ascontiguousarray(part.targets, dtype=self.target_dtype))
        return Split(split, list(part.ids), mods, present, targets, lengths, info)

    def load_labels(self, split: str) -> tuple[list[str], np.ndarray]:
        """Ids and targets of a split as `load_split` gives them, without encoding any text:
        what scoring a predictions file needs (no text model, no feature cache)."""
        self.check_split(split)
        part = self.parts()[split]
        if self.max_samples is not None:
            part = part.head(self.max_samples)
        return list(part.ids), np.ascontiguousarray(part.targets, dtype=self.target_dtype)

    def split_summary(self, split: str) -> dict[str, Any]:
        """`Split.summary` counts from the source files alone (no text is encoded)."""
        self.check_split(split)
        part = self.parts()[split]
        if self.max_samples is not None:
            part = part.head(self.max_samples)
        n = len(part.ids)
        choice = self.text_encoder or ("minilm" if part.texts is not None else "features")
        if choice == "features" and part.text_features is not None:
            text = part.text_lengths > 0 if part.text_lengths is not None else np.ones(n, dtype=bool)
        elif part.texts is not None:
            text = np.array([bool(t.strip()) for t in part.texts], dtype=bool)
        else:
            text = np.zeros(n, dtype=bool)
        present = {"text": int(text.sum())}
        for name in ("audio", "vision"):
            values, lengths, flags = (getattr(part, name), getattr(part, f"{name}_lengths"),
                                      getattr(part, f"{name}_present"))
            if values is None:
                present[name] = 0
            elif flags is not None:
                present[name] = int(np.asarray(flags, dtype=bool).sum())
            else:
                present[name] = int((lengths > 0).sum()) if lengths is not None else n
        out: dict[str, Any] = {"samples": n, "present": dict(sorted(present.items()))}
        targets = np.asarray(part.targets)
        if n and targets.ndim == 1 and np.issubdtype(self.target_dtype, np.integer):
            counts = np.bincount(targets.astype(np.int64))
            out["classes"] = {str(i): int(c) for i, c in enumerate(counts.tolist())}
        elif n and targets.ndim == 1:
            t = targets.astype(np.float32)
            out["target"] = {"min": float(t.min()), "max": float(t.max()), "mean": float(t.mean())}
        return out

    def locate(self) -> dict[str, str]:
        self.parts()
        return {"source": str(self._resolved_source), **{f"file{i}": str(p) for i, p in enumerate(self._files)}}


# ----------------------------------------------------------------------------------------------
# MOSI / MOSEI
# ----------------------------------------------------------------------------------------------


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        for cand in (folder / name, folder / "Processed" / name):
            if cand.is_file():
                return cand
    return None


class _CMUSentiment(TextModalityDataset):
    folder = ""
    extra_options = ("mmsa_file", "multibench_file", "standardize_audio")
    mmsa_files = ("unaligned_50.pkl", "aligned_50.pkl")
    multibench_files: tuple[str, ...] = ()
    has_raw = False

    def __init__(self, data_dir=None, source: str = "auto", mmsa_file: str | None = None, multibench_file: str | None = None,
                 standardize_audio: bool = True, **options: Any):
        extra = {k: v for k, v in (("mmsa_file", mmsa_file), ("multibench_file", multibench_file)) if v is not None}
        if not standardize_audio:
            extra["standardize_audio"] = False
        super().__init__(data_dir, source=source, **options, **extra)
        allowed = SOURCES if self.has_raw else tuple(s for s in SOURCES if s != "raw")
        if source not in allowed:
            raise SpecError(f"{self.name}: source {source!r} is not one of {', '.join(allowed)}")
        self.mmsa_file, self.multibench_file = mmsa_file, multibench_file
        self.standardize_audio = standardize_audio

    @property
    def dir(self) -> Path:
        return self.root / "sentiment" / self.folder

    def _find(self) -> tuple[str, Path]:
        d = self.dir
        cands = {
            "mmsa": _first(d, (self.mmsa_file,) if self.mmsa_file else self.mmsa_files),
            "multibench": _first(d, (self.multibench_file,) if self.multibench_file else self.multibench_files),
            "raw": (d / "CMUMOSI_features_raw_2way.pkl") if self.has_raw else None,
            "label_csv": d / "label.csv",
        }
        if self.source != "auto":
            path = cands[self.source]
            if path is None or not path.is_file():
                want = {"mmsa": self.mmsa_file or " or ".join(self.mmsa_files),
                        "multibench": self.multibench_file or " or ".join(self.multibench_files),
                        "raw": "CMUMOSI_features_raw_2way.pkl", "label_csv": "label.csv"}[self.source]
                raise DataError(f"{self.name} source {self.source!r}: {want} not found (data root {self.root}; "
                                "see README 'Data layout')", d)
            return self.source, path
        for name in ("mmsa", "multibench", "raw", "label_csv"):
            path = cands[name]
            if path is not None and path.is_file():
                return name, path
        raise DataError(f"{self.name}: no data found; expected one of {', '.join(self.mmsa_files + self.multibench_files)}"
                        f"{', CMUMOSI_features_raw_2way.pkl' if self.has_raw else ''} or label.csv "
                        f"(data root {self.root}; see README 'Data layout')", d)

    def load_labels(self, split: str) -> tuple[list[str], np.ndarray]:
        """As the base class; from the transcripts-and-fold pickle (``raw``) the labels are read
        alone: no audio join, no table (what a cold labels-only scoring waits for)."""
        if self._parts is None and self.has_raw:
            source, path = self._find()
            if source == "raw":
                self.check_split(split)
                ids, labels, splits = readers.mosi_raw_2way_labels(path)
                keep = [i for i, s in enumerate(splits) if s == split][: self.max_samples]
                targets = labels[keep].astype(np.float32)  # as _from_table stores them
                return [ids[i] for i in keep], np.ascontiguousarray(targets, dtype=self.target_dtype)
        return super().load_labels(split)

    def read_parts(self) -> dict[str, Part]:
        source, path = self._find()
        self._resolved_source, self._files = source, [path]
        if source == "mmsa":
            return self._from_mmsa(path)
        if source == "multibench":
            return self._from_multibench(path)
        table = readers.read_mosi_raw_2way(path) if source == "raw" else readers.read_label_csv(path)
        return self._from_table(table)

    # MMSA / MultiBench: everything is in one pickle
    def _from_mmsa(self, path: Path) -> dict[str, Part]:
        parts = {}
        for split, d in readers.read_mmsa_pickle(path).items():
            parts[split] = Part(d["ids"], d["labels"], texts=d["raw_text"], text_features=d["text"], text_lengths=d["text_lengths"],
                                audio=d["audio"], audio_lengths=d["audio_lengths"], vision=d["vision"],
                                vision_lengths=d["vision_lengths"], info={"files": [str(path)]})
        return parts

    def _from_multibench(self, path: Path) -> dict[str, Part]:
        parts = {}
        for split, d in readers.read_multibench_pickle(path).items():
            ln = d["lengths"]
            parts[split] = Part(d["ids"], d["labels"], text_features=d["text"], text_lengths=ln, audio=d["audio"],
                                audio_lengths=ln, vision=d["vision"], vision_lengths=ln, info={"files": [str(path)]})
        return parts

    # transcripts + labels + fold from a table, audio joined by clip id where available
    def _audio_for(self, ids: list[str]) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
        pkl, csv = self.dir / "audio_2way.pickle", self.dir / "audio_2way_ids.csv"
        if not (self.has_raw and pkl.is_file() and csv.is_file()):
            return None, None, []
        audio_ids, feats = readers.read_audio_2way(pkl, csv)
        row = {a: i for i, a in enumerate(audio_ids)}
        out = np.zeros((len(ids), feats.shape[1]), dtype=np.float32)
        present = np.zeros(len(ids), dtype=bool)
        for i, cid in enumerate(ids):
            j = row.get(cid)
            if j is not None:
                out[i], present[i] = feats[j], True
        self._files += [pkl, csv]
        return out, present, [str(pkl), str(csv)]

    def _from_table(self, table) -> dict[str, Part]:
        ids = table["id"].tolist()
        audio, audio_present, audio_files = self._audio_for(ids)
        split_of = table["split"].to_numpy()
        if audio is not None and self.standardize_audio:
            train = (split_of == "train") & audio_present
            if train.any():
                mean = audio[train].mean(0)
                std = audio[train].std(0)
                std[std < 1e-8] = 1.0
                audio = np.where(audio_present[:, None], (audio - mean) / std, 0.0).astype(np.float32)
        files = [str(p) for p in self._files[:1]] + audio_files
        texts = table["text"].tolist()
        labels = table["label"].to_numpy(dtype=np.float32)
        parts = {}
        for split in self.split_names:
            idx = np.flatnonzero(split_of == split)
            parts[split] = Part(
                [ids[i] for i in idx], labels[idx], texts=[texts[i] for i in idx],
                audio=None if audio is None else audio[idx], audio_present=None if audio is None else audio_present[idx],
                info={"files": files, "audio_standardized": bool(audio is not None and self.standardize_audio)},
            )
        return parts


_MMSA_NOTE = ("MMSA's label.csv and feature pickles are shared on Google Drive / Baidu Netdisk (see "
              "github.com/thuiar/MMSA), MultiBench's pickles on Google Drive (github.com/pliang279/MultiBench); "
              "place them under sentiment/{folder}/ as README 'Data layout' shows")
# The SDK's label sequence and the transcripts + standard fold that GCNet publishes (the `raw`
# source: text only, no audio); evidence for the hashes in docs/datasets.md "Downloads".
MOSI_DOWNLOADS = (
    {"url": "http://immortal.multicomp.cs.cmu.edu/CMU-MOSI/labels/CMU_MOSI_Opinion_Labels.csd",
     "path": "sentiment/mosi/CMU_MOSI_Opinion_Labels.csd",
     "sha256": "aef5f4617cdb067cc7606bb798eb6452c3de45f0f21cb3427be33c4d8c7fe852"},
    {"url": "https://raw.githubusercontent.com/zeroQiaoba/GCNet/c2dfd3b7ab6322a47f39e568692374457c43af12/"
            "dataset/CMUMOSI/CMUMOSI_features_raw_2way.pkl",
     "path": "sentiment/mosi/CMUMOSI_features_raw_2way.pkl",
     "sha256": "931ee50f3a77b2eb18786840a880a439f3ae6542bf2dfb5e14ecc9690702af84"},
)


@DATASETS.register("mosi")
class MOSIDataset(_CMUSentiment):
    """CMU-MOSI (93 videos, 2,199 opinion segments); see the module docstring."""

    name = "mosi"
    folder = "mosi"
    multibench_files = ("mosi_raw.pkl", "mosi_data.pkl")
    has_raw = True
    download_note = _MMSA_NOTE.format(folder="mosi")

    @property
    def downloads(self) -> tuple[dict[str, Any], ...]:
        return MOSI_DOWNLOADS if self.source in ("auto", "raw") else ()


@DATASETS.register("mosei")
class MOSEIDataset(_CMUSentiment):
    """CMU-MOSEI (3,228 videos, 23,453 segments; the MMSA label.csv has 22,788); see the module docstring."""

    name = "mosei"
    folder = "mosei"
    multibench_files = ("mosei_raw.pkl", "mosei_senti_data.pkl", "mosei_data.pkl")
    has_raw = False
    download_note = _MMSA_NOTE.format(folder="mosei")
