"""A generic loader for a folder of audio-visual clips listed in a CSV manifest.

Layout (``manifest`` is relative to the data root, default ``clips/manifest.csv``, or absolute)::

    <data root>/clips/manifest.csv     # columns path,label,split and optionally id
    <data root>/clips/<path>           # any container PyAV/FFmpeg reads: mp4, mkv, webm, avi, mov...

``path`` is relative to the manifest's folder (absolute paths and ``..`` that climb out of it
are refused, see :func:`mmbench.core.io.safe_join`). ``id`` defaults to ``path`` as written.
Labels are class names mapped to indices over the whole manifest, so every split uses the
same indices; the names are in ``Split.info["class_names"]``. With the option ``classes`` (a
list of names, as a task spec fixes them) index i is ``classes[i]`` and a label outside the
list is a DataError naming the manifest line; without it the order is sorted (numerically
when every label is an integer, else as strings).

Modalities (decoded with PyAV):

- ``video`` fixed-size ``[frames, 3, frame_size, frame_size]`` float in [0, 1] (time axis 0,
  ``Split.info["time_axes"]``; segment conditions cut video frames and audio frames): ``frames``
  frames sampled evenly over the clip (the first and last frame included; frames repeat when
  the clip has fewer), each resized so its short side is ``frame_size`` and centre-cropped.
- ``audio`` a *sequence* modality ``[T, n_mels]`` (padded in the Split, true length in
  ``Split.lengths["audio"]``): the audio track down-mixed to mono, resampled to
  ``sample_rate``, log-mel with a 25 ms window and 10 ms hop, in [0, 1] (dB relative to the
  clip's peak, floor 80 dB below), cut to its first ``max_audio_frames`` frames. With
  ``audio_encoder: torchaudio:<BUNDLE>`` (``WAV2VEC2_BASE``, ``HUBERT_BASE``, ...; weights
  from the torch hub cache or ``audio_weights``; ``audio_layer``) instead one vector ``[D]``
  per clip: the frozen speech model's layer averaged over time
  (:mod:`mmbench.models.encoders.backbones`).

Bad input. A manifest that is missing, not UTF-8, lacks a column, has an empty field, a
duplicate id, a path escaping the root or a label outside ``classes`` raises one
:class:`~mmbench.core.errors.DataError` naming the manifest. A single clip that cannot be used
(missing file, unreadable container, corrupt stream, no audio track) does not stop the load:
the affected modality is masked (``present`` False) and one :class:`DataWarning` per split
gives the count and the first few files with their reason.

Decoded features go to the :class:`~mmbench.core.cache.FeatureCache` (key: manifest rows, the
clips' size and mtime, and the decoding options), so a second load reads the cache.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmbench.data.samples import Split
from mmbench.data.datasets.base import MultimodalDataset, encoder_options
from mmbench.core.errors import DataError, SpecError
from mmbench.core.io import fingerprint_stat, safe_join
from mmbench.core.registry import DATASETS

REQUIRED_COLUMNS = ("path", "label", "split")
CACHE_NAMESPACE = "clips-v1"


class DataWarning(UserWarning):
    """Some samples could not be read; their modality was masked (the message gives the count)."""


# ------------------------------------------------------------------------------------------
# shared audio helpers (also used by the AV-MNIST loader)
# ------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _mel_transform(sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
        n_mels=n_mels, power=2.0, center=True,
    )


def log_mel(wave: Tensor, sample_rate: int, n_mels: int, n_fft: int, hop_length: int, win_length: int,
            top_db: float = 80.0) -> Tensor:
    """``[..., samples]`` -> ``[..., n_mels, 1 + samples // hop_length]`` in [0, 1].

    Power mel spectrogram (torchaudio) in dB relative to each spectrogram's own maximum, floored
    ``top_db`` below it and scaled to [0, 1] (silence = 0, the loudest bin = 1).
    """
    mel = _mel_transform(sample_rate, n_fft, win_length, hop_length, n_mels)(wave.float())
    db = 10.0 * torch.log10(mel.clamp(min=1e-10))
    peak = db.amax(dim=(-2, -1), keepdim=True)
    return ((db - peak + top_db).clamp(min=0.0) / top_db).float()


def problems_to_tensor(problems: dict[str, Any]) -> Tensor:
    """A JSON-able dict as a uint8 tensor, so it can ride along in a FeatureCache entry."""
    data = json.dumps(problems, sort_keys=True).encode()
    return torch.tensor(list(data), dtype=torch.uint8)


def problems_from_tensor(t: Tensor) -> dict[str, Any]:
    return json.loads(bytes(t.tolist()).decode()) if t.numel() else {}


def warn_masked(what: str, problems: dict[str, str], total: int, show: int = 3) -> None:
    """One DataWarning for `problems` ({file: reason}) out of `total` samples."""
    if not problems:
        return
    first = "; ".join(f"{name}: {why}" for name, why in list(problems.items())[:show])
    more = f"; and {len(problems) - show} more" if len(problems) > show else ""
    warnings.warn(f"{what}: {len(problems)} of {total} masked ({first}{more})", DataWarning, stacklevel=3)


# ------------------------------------------------------------------------------------------
# decoding one clip
# ------------------------------------------------------------------------------------------


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def decode_video(path: Path, frames: int, size: int) -> tuple[np.ndarray | None, str | None]:
    """``([frames, 3, size, size] uint8, None)`` or ``(None, reason)``."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None, "no video stream"
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            kept: list[np.ndarray] = []
            for frame in container.decode(stream):
                w, h = frame.width, frame.height
                if not w or not h:
                    continue
                scale = size / min(w, h)
                nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
                rgb = frame.reformat(width=nw, height=nh, format="rgb24").to_ndarray()
                top, left = (nh - size) // 2, (nw - size) // 2
                kept.append(rgb[top : top + size, left : left + size])
    except Exception as exc:  # noqa: BLE001 - av.error.* (InvalidDataError, ...), OSError
        return None, f"unreadable video ({_short_error(exc)})"
    if not kept:
        return None, "video stream has no decodable frame"
    index = np.linspace(0, len(kept) - 1, frames).round().astype(int)
    return np.stack([kept[i] for i in index]).transpose(0, 3, 1, 2).copy(), None


def decode_audio(path: Path, sample_rate: int) -> tuple[np.ndarray | None, str | None]:
    """``(mono float32 waveform at sample_rate, None)`` or ``(None, reason)``."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None, "no audio track"
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks: list[np.ndarray] = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except Exception as exc:  # noqa: BLE001
        return None, f"unreadable audio ({_short_error(exc)})"
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        return None, "audio track has no decodable samples"
    if not np.isfinite(wave).all():
        return None, "audio track has non-finite samples"
    return wave, None


# ------------------------------------------------------------------------------------------
# the manifest
# ------------------------------------------------------------------------------------------


def _class_order(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(labels)


def read_manifest(manifest: Path, root: Path) -> list[dict[str, Any]]:
    """Rows ``{id, path (resolved), rel, label, split, line}``; every problem is a DataError naming the file."""
    try:
        text = manifest.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError("clip manifest not found (expected a CSV with columns path,label,split)", manifest) from None
    except IsADirectoryError:
        raise DataError("clip manifest is a directory, expected a CSV file", manifest) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"clip manifest is not UTF-8 text (byte offset {exc.start})", manifest) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"clip manifest is missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"found {', '.join(repr(h) for h in header) or 'no header'}; required: path,label,split (optional id)",
            manifest,
        )
    reader.fieldnames = header
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line, raw in enumerate(reader, start=2):
        rec = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        for col in REQUIRED_COLUMNS:
            if not rec.get(col):
                raise DataError(f"line {line}: empty {col!r}", manifest)
        rel = rec["path"]
        try:
            resolved = safe_join(root, rel)
        except DataError as exc:
            raise DataError(f"line {line}: clip path {rel!r} refused: {exc}", manifest) from None
        sample_id = rec.get("id") or rel.replace("\\", "/")
        if sample_id in seen:
            raise DataError(f"line {line}: duplicate id {sample_id!r} (first on line {seen[sample_id]})", manifest)
        seen[sample_id] = line
        rows.append({"id": sample_id, "path": resolved, "rel": rel, "label": rec["label"], "split": rec["split"], "line": line})
    if not rows:
        raise DataError("clip manifest has no rows", manifest)
    return rows


# ------------------------------------------------------------------------------------------
# the loader
# ------------------------------------------------------------------------------------------


@DATASETS.register("clips")
class ClipsDataset(MultimodalDataset):
    name = "clips"
    modalities = ("video", "audio")

    def __init__(
        self,
        data_dir=None,
        manifest: str = "clips/manifest.csv",
        classes: list[str] | None = None,
        frames: int = 8,
        frame_size: int = 64,
        sample_rate: int = 16000,
        n_mels: int = 64,
        max_audio_frames: int = 1000,
        cache: bool = True,
        cache_dir: str | None = None,
        audio_encoder: str = "logmel",
        audio_weights: str | None = None,
        audio_layer: int | None = None,
    ):
        if classes is not None:
            if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)) or not classes:
                raise SpecError(f"clips: classes must be a non-empty list of label names, got {classes!r}")
            classes = [str(c).strip() for c in classes]  # YAML may give 0, 1 as integers
            if len(set(classes)) != len(classes) or not all(classes):
                raise SpecError(f"clips: classes must be distinct non-empty names, got {classes}")
        super().__init__(data_dir, manifest=str(manifest), classes=classes, frames=frames, frame_size=frame_size,
                         sample_rate=sample_rate, n_mels=n_mels, max_audio_frames=max_audio_frames,
                         **encoder_options(audio_encoder=audio_encoder, audio_layer=audio_layer))
        if audio_encoder != "logmel" and not str(audio_encoder).startswith("torchaudio:"):
            raise SpecError(f"clips: audio_encoder {audio_encoder!r} is not logmel or torchaudio:<BUNDLE> "
                            "(a wav2vec 2.0 / HuBERT bundle, e.g. torchaudio:WAV2VEC2_BASE)")
        self.audio_encoder, self.audio_weights, self.audio_layer = str(audio_encoder), audio_weights, audio_layer
        if frames < 1 or frame_size < 8 or sample_rate < 1000 or n_mels < 4 or max_audio_frames < 1:
            raise SpecError("clips: need frames >= 1, frame_size >= 8, sample_rate >= 1000, n_mels >= 4, max_audio_frames >= 1")
        self.classes = classes
        mpath = Path(manifest)
        self.manifest_path = mpath if mpath.is_absolute() else self.root / mpath
        self.clip_root = self.manifest_path.parent
        self.frames, self.frame_size, self.sample_rate = int(frames), int(frame_size), int(sample_rate)
        self.n_mels, self.max_audio_frames = int(n_mels), int(max_audio_frames)
        self.win_length = round(0.025 * self.sample_rate)
        self.hop_length = max(1, round(0.010 * self.sample_rate))
        self.n_fft = 1 << math.ceil(math.log2(self.win_length))
        self.use_cache, self.cache_dir = cache, cache_dir
        self.cache = None
        self._rows: list[dict[str, Any]] | None = None

    # -- manifest ----------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            rows = read_manifest(self.manifest_path, self.clip_root)
            if self.classes is not None:
                known = set(self.classes)
                for r in rows:
                    if r["label"] not in known:
                        raise DataError(f"line {r['line']}: label {r['label']!r} is not one of the classes "
                                        f"{', '.join(self.classes)} (dataset option classes; other labels need their own task "
                                        "spec, see docs/datasets.md 'Audio-visual clips')", self.manifest_path)
            self._rows = rows
        return self._rows

    @property
    def split_names(self) -> tuple[str, ...]:  # type: ignore[override]
        order: list[str] = []
        for r in self.rows():
            if r["split"] not in order:
                order.append(r["split"])
        return tuple(order)

    @property
    def class_names(self) -> list[str]:
        if self.classes is not None:
            self.rows()  # checks every label is one of them
            return list(self.classes)
        return _class_order({r["label"] for r in self.rows()})

    def locate(self) -> dict[str, str]:
        return {"manifest": str(self.manifest_path), "clips": str(self.clip_root)}

    # -- loading -----------------------------------------------------------------------------

    def audio_backbone(self) -> Any:
        """The resolved torchaudio backbone, or None for log-mel features."""
        if self.audio_encoder == "logmel":
            return None
        from mmbench.models.encoders import backbones

        return backbones.resolve_audio_backbone(self.audio_encoder, self.audio_weights, self.audio_layer)

    def _decode_rows(self, rows: list[dict[str, Any]]) -> dict[str, Tensor]:
        n, f, s = len(rows), self.frames, self.frame_size
        backbone = self.audio_backbone()
        waves: dict[int, Tensor] = {}
        video = torch.zeros((n, f, 3, s, s), dtype=torch.uint8)
        video_ok = torch.zeros(n, dtype=torch.bool)
        audio_ok = torch.zeros(n, dtype=torch.bool)
        specs: list[Tensor | None] = []
        problems: dict[str, dict[str, str]] = {"video": {}, "audio": {}}
        for i, row in enumerate(rows):
            path: Path = row["path"]
            if not path.is_file():
                problems["video"][row["rel"]] = problems["audio"][row["rel"]] = "file not found"
                specs.append(None)
                continue
            frames, why = decode_video(path, f, s)
            if frames is None:
                problems["video"][row["rel"]] = why
            else:
                video[i] = torch.from_numpy(frames)
                video_ok[i] = True
            wave, why = decode_audio(path, self.sample_rate)
            if wave is None:
                problems["audio"][row["rel"]] = why
                specs.append(None)
                continue
            audio_ok[i] = True
            if backbone is not None:
                waves[i] = torch.from_numpy(wave)
                specs.append(None)
                continue
            mel = log_mel(torch.from_numpy(wave), self.sample_rate, self.n_mels, self.n_fft, self.hop_length, self.win_length)
            specs.append(mel.T[: self.max_audio_frames].contiguous())
        lengths = torch.zeros(n, dtype=torch.long)
        if backbone is not None:  # one pooled vector per clip
            from mmbench.models.encoders import backbones

            pooled = backbones.encode_audio(list(waves.values()), self.sample_rate, backbone,
                                            desc=f"clips: {backbone.name} on {len(waves)} clips")
            audio = torch.zeros((n, pooled.shape[1]), dtype=torch.float32)
            if waves:
                audio[torch.tensor(list(waves))] = pooled
            return {"video": video, "video_present": video_ok, "audio": audio, "audio_present": audio_ok,
                    "audio_lengths": lengths, "problems": problems_to_tensor(problems)}
        steps = max([t.shape[0] for t in specs if t is not None] + [1])
        audio = torch.zeros((n, steps, self.n_mels), dtype=torch.float32)
        for i, t in enumerate(specs):
            if t is not None:
                audio[i, : t.shape[0]] = t
                lengths[i] = t.shape[0]
        return {"video": video, "video_present": video_ok, "audio": audio, "audio_present": audio_ok,
                "audio_lengths": lengths, "problems": problems_to_tensor(problems)}

    def _features(self, split: str, rows: list[dict[str, Any]]) -> dict[str, Tensor]:
        if not self.use_cache:
            return self._decode_rows(rows)
        from mmbench.core.cache import FeatureCache

        self.cache = self.cache or FeatureCache(self.cache_dir)
        existing = [r["path"] for r in rows if r["path"].is_file()]
        fp = fingerprint_stat(existing, root=self.clip_root) if existing else "none"
        options = {
            "split": split,
            "rows": [[r["id"], r["rel"], r["label"], r["path"].is_file()] for r in rows],
            "frames": self.frames, "frame_size": self.frame_size, "sample_rate": self.sample_rate,
            "n_mels": self.n_mels, "max_audio_frames": self.max_audio_frames,
            "n_fft": self.n_fft, "hop_length": self.hop_length, "win_length": self.win_length,
        }
        backbone = self.audio_backbone()
        if backbone is not None:
            options["audio_backbone"] = backbone.cache_options(
                self.cache.files_fingerprint([backbone.path], root=backbone.path.parent))
        return self.cache.get_or_build(CACHE_NAMESPACE, fp, options, lambda: self._decode_rows(rows))

    def load_split(self, split: str) -> Split:
        self.check_split(split)
        rows = [r for r in self.rows() if r["split"] == split]
        classes = self.class_names
        index = {c: i for i, c in enumerate(classes)}
        feats = self._features(split, rows)
        problems = problems_from_tensor(feats["problems"])
        for modality in ("video", "audio"):
            warn_masked(f"clips split {split!r}: {modality}", problems.get(modality, {}), len(rows))
        # a missing-modality slot holds the fill value (zeros) whatever the decoder left there
        video_ok, audio_ok = feats["video_present"].bool(), feats["audio_present"].bool()
        video = feats["video"].float().div_(255.0) * video_ok.view(-1, 1, 1, 1, 1)
        audio = feats["audio"].float()
        audio = audio * audio_ok.view((-1,) + (1,) * (audio.dim() - 1))
        sequences = {"audio": torch.where(audio_ok, feats["audio_lengths"].long(), 0)} if audio.dim() == 3 else {}
        targets = torch.tensor([index[r["label"]] for r in rows], dtype=torch.long)
        info = {
            "class_names": classes,
            "paths": [r["rel"] for r in rows],
            "problems": problems,
            "audio_frame_seconds": self.hop_length / self.sample_rate,
            "time_axes": {"video": 0},  # [frames, 3, H, W]; audio is a sequence (data.segments)
        }
        return Split(split, [r["id"] for r in rows], {"video": video, "audio": audio},
                     {"video": video_ok.clone(), "audio": audio_ok.clone()}, targets, sequences, info)

    def fingerprint(self) -> str:
        import hashlib

        rows = self.rows()
        existing = [r["path"] for r in rows if r["path"].is_file()]
        files = fingerprint_stat(existing, root=self.clip_root) if existing else "none"
        payload = json.dumps([self.name, self.options, [[r["id"], r["rel"], r["label"], r["split"]] for r in rows], files],
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
