"""Readers for the file formats CMU-MOSI / CMU-MOSEI are distributed in.

Pure functions: each reads one file (or a pair), checks it and returns pandas frames or
numpy arrays with clip ids normalised to ``<video_id>_<clip>`` (e.g. ``03bSnISJMiM_1``) and
split names normalised to ``train`` / ``val`` / ``test``. Anything wrong with a file raises
one :class:`~mmbench.core.errors.DataError` that names the file and the problem.

Formats:

- CMU-MultimodalSDK computational sequence ``.csd`` (HDF5): one root group named after the
  sequence, ``<root>/data/<video_id>/features`` (n, d) and ``.../intervals`` (n, 2) seconds,
  ``<root>/metadata``. :func:`read_csd`, :func:`csd_segments` (label sequences -> one row per
  segment, numbered in file order as MOSI's clip ids are).
- MMSA ``label.csv``: the full column set ``video_id,clip_id,text,label,label_T,label_A,
  label_V,annotation,mode`` or the reduced ``id,text,label,mode``. :func:`read_label_csv`.
- MMSA feature pickles ``aligned_50.pkl`` / ``unaligned_50.pkl``: ``{train, valid, test}``
  each with ``raw_text, audio, vision, id, text, text_bert, audio_lengths, vision_lengths,
  annotations, classification_labels, regression_labels``. :func:`read_mmsa_pickle`.
- MultiBench affect pickles ``mosi_raw.pkl`` / ``mosi_data.pkl`` (and the MOSEI ones):
  ``{train, valid, test}`` each with ``vision, audio, text, labels, id``; sequences are
  zero-padded at the front. :func:`read_multibench_pickle`.
- ``CMUMOSI_features_raw_2way.pkl``: [videoIDs, videoLabels, videoSpeakers, videoSentences,
  trainVid, valVid, testVid] -> transcripts, labels and the standard fold.
  :func:`read_mosi_raw_2way`.
- ``audio_2way.pickle`` (utterance-level 73-d openSMILE vectors, a Python-2 pickle without
  ids) joined to clip ids through ``audio_2way_ids.csv``. :func:`read_audio_2way`.

Pickles are read with a restricted unpickler that only builds numpy arrays and plain Python
containers, so a tampered file cannot run code; anything else is refused with a DataError.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.core.errors import DataError


class _LazyPandas:
    """pandas, imported on first use: the labels-only scoring path reads MOSI's labels without
    it (importing pandas takes longer than the rest of a cold `evaluate --predictions`)."""

    def __getattr__(self, name: str) -> Any:
        import pandas

        return getattr(pandas, name)


pd = _LazyPandas()

__all__ = [
    "SPLIT_ALIASES",
    "csd_metadata",
    "csd_segments",
    "left_align",
    "load_pickle",
    "normalize_clip_id",
    "normalize_split",
    "read_audio_2way",
    "read_csd",
    "read_csv",
    "read_label_csv",
    "read_mmsa_pickle",
    "read_mosi_raw_2way",
    "read_multibench_pickle",
]

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
SENTIMENT_RANGE = (-3.0, 3.0)


def normalize_split(name: Any) -> str | None:
    return SPLIT_ALIASES.get(str(name).strip().lower())


def _decode(x: Any) -> str:
    if isinstance(x, (bytes, bytearray, np.bytes_)):
        return bytes(x).decode("utf-8", "replace")
    return str(x)


_BRACKET = re.compile(r"^(.*)\[(\w+)\]$")


def normalize_clip_id(raw: Any) -> str:
    """``vid$_$3`` (MMSA), ``vid[3]`` (SDK), ``[b'vid', b'3']`` (MultiBench), ``vid_3`` -> ``vid_3``."""
    if isinstance(raw, (np.ndarray, list, tuple)) and not isinstance(raw, (str, bytes)):
        parts = [_decode(p).strip() for p in np.asarray(raw, dtype=object).ravel()]
        parts = [p for p in parts if p]
        return "_".join(parts)
    s = _decode(raw).strip()
    s = s.replace("$_$", "_")
    m = _BRACKET.match(s)
    if m:
        s = f"{m.group(1)}_{m.group(2)}"
    return s


def csv_line(i: int) -> int:
    """CSV line number of data row i (header is line 1)."""
    return int(i) + 2


# ------------------------------------------------------------------------------------------
# pickles
# ------------------------------------------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),  # bytes in protocol <= 2 pickles written by Python 3
}
_ALLOWED_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "bytearray", "bytes", "str", "int",
                     "float", "complex", "bool", "object", "slice", "range"}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module in ("builtins", "__builtin__") and name in _ALLOWED_BUILTINS) or (module, name) in _ALLOWED_GLOBALS \
                or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays and plain containers are allowed)")


def load_pickle(path: str | Path) -> Any:
    """Unpickle a data file (numpy arrays and containers only; Python-2 pickles are read with
    ``encoding='latin1'``). DataError for a missing, truncated or non-pickle file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except IsADirectoryError:
        raise DataError("is a directory, expected a pickle file", path) from None
    last: Exception | None = None
    for encoding in ("ASCII", "latin1"):
        try:
            return _RestrictedUnpickler(io.BytesIO(raw), encoding=encoding).load()
        except UnicodeDecodeError as exc:  # a Python-2 pickle with non-ASCII str: retry as latin1
            last = exc
            continue
        except Exception as exc:  # noqa: BLE001 - UnpicklingError, EOFError (truncated), ValueError, ...
            raise DataError(f"not a readable pickle ({type(exc).__name__}: {exc})", path) from None
    raise DataError(f"not a readable pickle ({last})", path)


# ------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------


def read_csv(path: str | Path, required: Sequence[str] | Iterable[Sequence[str]], what: str,
             dtype: dict[str, Any] | None = None) -> pd.DataFrame:
    """A CSV with its columns checked. `required` is one list of column names, or several
    alternative lists (the first one the file satisfies wins)."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    try:
        df = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""], encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start}); save the file as UTF-8", path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"malformed CSV: {str(exc).strip()}", path) from None
    df.columns = [str(c).strip() for c in df.columns]
    alternatives = [list(required)] if required and isinstance(next(iter(required)), str) else [list(r) for r in required]
    for cols in alternatives:
        if all(c in df.columns for c in cols):
            return df
    cols = alternatives[0]
    missing = [c for c in cols if c not in df.columns]
    want = " or ".join(",".join(a) for a in alternatives)
    raise DataError(f"{what}: missing column(s) {', '.join(repr(m) for m in missing)}; expected columns {want}; "
                    f"the file has {','.join(df.columns)}", path)


def check_unique(ids: Sequence[str], path: Path, what: str = "id", lines: Sequence[int] | None = None) -> None:
    seen: dict[str, int] = {}
    for i, x in enumerate(ids):
        if x in seen:
            where = f" (lines {lines[seen[x]]} and {lines[i]})" if lines is not None else ""
            raise DataError(f"duplicate {what} {x!r}{where}", path)
        seen[x] = i


def _check_labels(labels: np.ndarray, ids: Sequence[str], path: Path, label_range: tuple[float, float] | None,
                  lines: Sequence[int] | None = None) -> None:
    bad = ~np.isfinite(labels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = f" (line {lines[i]})" if lines is not None else ""
        raise DataError(f"label of {ids[i]!r}{where} is missing or not a number", path)
    if label_range is not None:
        lo, hi = label_range
        out = (labels < lo - 1e-6) | (labels > hi + 1e-6)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            where = f" (line {lines[i]})" if lines is not None else ""
            raise DataError(f"label {labels[i]:g} of {ids[i]!r}{where} is outside [{lo:g}, {hi:g}]"
                            f" ({int(out.sum())} labels out of range)", path)


def numeric_column(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"column {column!r} line {csv_line(i)}: {df[column].iloc[i]!r} is not a number", path)
    return values.to_numpy(dtype=np.float64)


def _splits(df: pd.DataFrame, column: str, path: Path) -> list[str]:
    out = []
    for i, v in enumerate(df[column].tolist()):
        s = normalize_split(v)
        if s is None:
            raise DataError(f"column {column!r} line {csv_line(i)}: unknown split {v!r}; expected train, valid (or dev/val) or test", path)
        out.append(s)
    return out


# ------------------------------------------------------------------------------------------
# CMU-MultimodalSDK .csd
# ------------------------------------------------------------------------------------------


def _open_h5(path: Path):
    import h5py

    if not path.exists():
        raise DataError("file not found", path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"not a CMU-MultimodalSDK computational sequence (not a readable HDF5 file: {exc})", path) from None


def _csd_root(f, path: Path):
    roots = [k for k in f if "data" in f[k]]
    if len(roots) != 1:
        raise DataError(f"not a computational sequence: expected one root group holding 'data', found {list(f.keys())}", path)
    return roots[0], f[roots[0]]


def read_csd(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{video_id: (features float32 (n, d), intervals float64 (n, 2))}, in the file's order."""
    path = Path(path)
    with _open_h5(path) as f:
        _, root = _csd_root(f, path)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for vid in root["data"]:
            g = root["data"][vid]
            if "features" not in g or "intervals" not in g:
                raise DataError(f"video {vid!r} lacks 'features' or 'intervals'", path)
            feats = np.asarray(g["features"][()])
            iv = np.asarray(g["intervals"][()], dtype=np.float64)
            if feats.ndim == 1:
                feats = feats[:, None]
            if iv.ndim != 2 or iv.shape[1] != 2 or iv.shape[0] != feats.shape[0]:
                raise DataError(f"video {vid!r}: intervals shape {iv.shape} does not match features shape {feats.shape} "
                                "(expected (n, 2) and (n, d))", path)
            if feats.dtype.kind in "fiu":
                feats = feats.astype(np.float32)
            out[str(vid)] = (feats, iv)
    return out


def csd_metadata(path: str | Path) -> dict[str, str]:
    """The sequence's metadata (creator, version, description ...) as strings, plus its root name."""
    path = Path(path)
    with _open_h5(path) as f:
        name, root = _csd_root(f, path)
        meta = {"root name": name}
        if "metadata" in root:
            for k in root["metadata"]:
                v = root["metadata"][k][()]
                v = v[0] if isinstance(v, np.ndarray) and v.size else v
                meta[k] = _decode(v).strip('"')
    return meta


def csd_segments(path: str | Path, column: int = 0, label_range: tuple[float, float] | None = SENTIMENT_RANGE) -> pd.DataFrame:
    """A label sequence (e.g. ``CMU_MOSI_Opinion_Labels.csd``) as one row per segment:
    ``id, video_id, segment, start, end, label``. Segments are numbered from 1 in the file's
    order within each video, which is how MOSI's clip ids (``03bSnISJMiM_1``) are made.
    `column` picks the label dimension of a multi-column sequence (MOSEI's All Labels: 0 is
    sentiment)."""
    path = Path(path)
    rows = []
    for vid, (feats, iv) in read_csd(path).items():
        if column >= feats.shape[1]:
            raise DataError(f"video {vid!r}: label column {column} requested but features have {feats.shape[1]}", path)
        for k in range(feats.shape[0]):
            rows.append((f"{vid}_{k + 1}", vid, k + 1, float(iv[k, 0]), float(iv[k, 1]), float(feats[k, column])))
    df = pd.DataFrame(rows, columns=["id", "video_id", "segment", "start", "end", "label"])
    check_unique(df["id"].tolist(), path)
    _check_labels(df["label"].to_numpy(), df["id"].tolist(), path, label_range)
    return df


# ------------------------------------------------------------------------------------------
# MMSA label.csv
# ------------------------------------------------------------------------------------------

LABEL_CSV_FULL = ("video_id", "clip_id", "text", "label", "mode")
LABEL_CSV_REDUCED = ("id", "text", "label", "mode")


def read_label_csv(path: str | Path, label_range: tuple[float, float] | None = SENTIMENT_RANGE) -> pd.DataFrame:
    """MMSA ``label.csv`` in either shape -> ``id, video_id, text, label, split`` (+ the full
    file's ``label_T, label_A, label_V, annotation`` when present), in file order.
    Missing transcripts become empty strings (the loader marks their text missing)."""
    path = Path(path)
    df = read_csv(path, [LABEL_CSV_FULL, LABEL_CSV_REDUCED], "label.csv",
                  dtype={"video_id": str, "clip_id": str, "id": str, "text": str, "mode": str})
    if "video_id" in df.columns and "clip_id" in df.columns:
        ids = [normalize_clip_id(f"{v}_{c}") for v, c in zip(df["video_id"].astype(str), df["clip_id"].astype(str))]
        vids = df["video_id"].astype(str).tolist()
    else:
        ids = [normalize_clip_id(x) for x in df["id"].astype(str)]
        vids = [i.rsplit("_", 1)[0] for i in ids]
    lines = [csv_line(i) for i in range(len(df))]
    check_unique(ids, path, "clip id", lines)
    labels = numeric_column(df, "label", path)
    _check_labels(labels, ids, path, label_range, lines)
    out = pd.DataFrame({
        "id": ids,
        "video_id": vids,
        "text": df["text"].fillna("").astype(str).tolist(),
        "label": labels,
        "split": _splits(df, "mode", path),
    })
    for extra in ("label_T", "label_A", "label_V"):
        if extra in df.columns:
            out[extra] = numeric_column(df, extra, path)
    if "annotation" in df.columns:
        out["annotation"] = df["annotation"].astype(str).tolist()
    return out


# ------------------------------------------------------------------------------------------
# sequences
# ------------------------------------------------------------------------------------------


def left_align(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Move each sample's `lengths[i]` real steps to the front of axis 1 when its padding is at
    the front (rows before the real steps all zero, the tail not); end-padded samples are kept.
    The result is end-padded with zeros, as `Split` expects."""
    out = np.zeros_like(x)
    steps = x.shape[1]
    for i, n in enumerate(lengths.tolist()):
        n = int(min(max(n, 0), steps))
        if n == 0:
            continue
        head_pad = not np.any(x[i, : steps - n]) and np.any(x[i, steps - n :])
        out[i, :n] = x[i, steps - n :] if (n < steps and head_pad) else x[i, :n]
    return out


def _clean(x: Any, name: str, split: str, path: Path, ndim: int | None = 3) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"split {split!r}: {name!r} is not a numeric array ({exc})", path) from None
    if ndim is not None and arr.ndim != ndim:
        raise DataError(f"split {split!r}: {name!r} has shape {arr.shape}, expected {ndim} dimensions", path)
    return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)  # MMSA sets -inf audio to 0 too


def _split_dicts(data: Any, path: Path, fmt: str) -> dict[str, dict]:
    if not isinstance(data, dict):
        raise DataError(f"not a {fmt} pickle: expected a dict of splits, got {type(data).__name__}", path)
    out = {}
    for key, value in data.items():
        split = normalize_split(key)
        if split is not None and isinstance(value, dict):
            out[split] = value
    missing = [s for s in ("train", "val", "test") if s not in out]
    if missing:
        raise DataError(f"not a {fmt} pickle: no {', '.join(missing)} split (it has keys {', '.join(map(str, data))})", path)
    return out


def _require_keys(d: dict, keys: Sequence[str], split: str, path: Path, fmt: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(f"{fmt} split {split!r} lacks key(s) {', '.join(repr(k) for k in missing)} (it has {', '.join(map(str, d))})", path)


def _check_rows(arrays: dict[str, Any], n: int, split: str, path: Path) -> None:
    for name, a in arrays.items():
        if a is not None and len(a) != n:
            raise DataError(f"split {split!r}: {name!r} has {len(a)} rows for {n} ids", path)


def _lengths(x: Any, n: int, steps: int, name: str, split: str, path: Path) -> np.ndarray | None:
    if x is None:
        return None
    arr = np.asarray(x).reshape(-1)
    if arr.shape[0] != n:
        raise DataError(f"split {split!r}: {name!r} has {arr.shape[0]} entries for {n} ids", path)
    arr = arr.astype(np.int64)
    if (arr < 0).any() or (arr > steps).any():
        raise DataError(f"split {split!r}: {name!r} has lengths outside [0, {steps}]", path)
    return arr


def _nonzero_lengths(x: np.ndarray) -> np.ndarray:
    """Real steps of end-padded [N, T, F] sequences: up to the last non-zero row."""
    nz = np.any(x != 0, axis=2)
    last = np.where(nz.any(1), x.shape[1] - np.argmax(nz[:, ::-1], axis=1), 0)
    return last.astype(np.int64)


def read_mmsa_pickle(path: str | Path, label_range: tuple[float, float] | None = SENTIMENT_RANGE) -> dict[str, dict[str, Any]]:
    """An MMSA feature pickle -> ``{train, val, test}`` each with

    ``ids`` list[str], ``raw_text`` list[str] | None, ``text`` float32 [N, T, 768] | None,
    ``text_lengths`` int64 [N] | None (from ``text_bert``'s attention mask), ``audio`` /
    ``vision`` float32 [N, T, F] end-padded, ``audio_lengths`` / ``vision_lengths`` int64 [N],
    ``labels`` float32 [N] (``regression_labels``; the multimodal ``M`` entry when a dict),
    ``annotations`` list[str] | None.
    """
    path = Path(path)
    data = _split_dicts(load_pickle(path), path, "MMSA")
    out: dict[str, dict[str, Any]] = {}
    for split, d in data.items():
        _require_keys(d, ("id", "audio", "vision", "regression_labels"), split, path, "MMSA")
        if "raw_text" not in d and "text" not in d:
            raise DataError(f"MMSA split {split!r} has neither 'raw_text' nor 'text'", path)
        ids = [normalize_clip_id(x) for x in d["id"]]
        n = len(ids)
        labels = d["regression_labels"]
        if isinstance(labels, dict):
            if "M" not in labels:
                raise DataError(f"MMSA split {split!r}: regression_labels has no 'M' entry", path)
            labels = labels["M"]
        try:
            labels = np.asarray(labels, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(f"MMSA split {split!r}: regression_labels is not numeric", path) from None
        audio = _clean(d["audio"], "audio", split, path)
        vision = _clean(d["vision"], "vision", split, path)
        text = _clean(d["text"], "text", split, path) if "text" in d and d["text"] is not None else None
        raw_text = [_decode(t) for t in d["raw_text"]] if d.get("raw_text") is not None else None
        _check_rows({"regression_labels": labels, "audio": audio, "vision": vision, "text": text, "raw_text": raw_text}, n, split, path)
        check_unique(ids, path, f"id in split {split!r}")
        _check_labels(labels, ids, path, label_range)
        text_lengths = None
        if d.get("text_bert") is not None:
            tb = np.asarray(d["text_bert"])
            if tb.ndim == 3 and tb.shape[0] == n and tb.shape[1] >= 2:
                text_lengths = tb[:, 1, :].astype(np.int64).sum(1)  # [ids, attention mask, segment ids]
        if text is not None and text_lengths is None:
            text_lengths = _nonzero_lengths(text)
        a_len = _lengths(d.get("audio_lengths"), n, audio.shape[1], "audio_lengths", split, path)
        v_len = _lengths(d.get("vision_lengths"), n, vision.shape[1], "vision_lengths", split, path)
        aligned = text is not None and audio.shape[1] == text.shape[1] == vision.shape[1]
        if a_len is None:
            a_len = text_lengths if aligned else _nonzero_lengths(audio)
        if v_len is None:
            v_len = text_lengths if aligned else _nonzero_lengths(vision)
        ann = d.get("annotations")
        out[split] = {
            "ids": ids,
            "raw_text": raw_text,
            "text": None if text is None else left_align(text, np.minimum(text_lengths, text.shape[1])),
            "text_lengths": None if text is None else np.minimum(text_lengths, text.shape[1]),
            "audio": left_align(audio, a_len),
            "audio_lengths": a_len,
            "vision": left_align(vision, v_len),
            "vision_lengths": v_len,
            "labels": labels.astype(np.float32),
            "annotations": None if ann is None else [_decode(a) for a in ann],
        }
    return out


def read_multibench_pickle(path: str | Path, label_range: tuple[float, float] | None = SENTIMENT_RANGE) -> dict[str, dict[str, Any]]:
    """A MultiBench affect pickle -> ``{train, val, test}`` each with ``ids``, ``text`` /
    ``audio`` / ``vision`` float32 [N, T, F] and ``lengths`` int64 [N].

    MultiBench pads at the front and, for the aligned data, cuts every modality at the first
    non-zero text step (``Affectdataset``); here the same steps are kept and moved to the
    front (end padding). A sample whose text is all zero (MultiBench's ``drop_entry`` removes
    those) gets length 0; the loader marks its modalities missing.
    """
    path = Path(path)
    data = _split_dicts(load_pickle(path), path, "MultiBench")
    out: dict[str, dict[str, Any]] = {}
    for split, d in data.items():
        _require_keys(d, ("text", "audio", "vision", "labels"), split, path, "MultiBench")
        text = _clean(d["text"], "text", split, path)
        audio = _clean(d["audio"], "audio", split, path)
        vision = _clean(d["vision"], "vision", split, path)
        n = text.shape[0]
        if "id" in d and d["id"] is not None:
            ids = [normalize_clip_id(x) for x in d["id"]]
        else:
            ids = [f"{split}_{i}" for i in range(n)]
        try:
            labels = np.asarray(d["labels"], dtype=np.float64).reshape(n, -1)[:, 0] if n else np.zeros(0)
        except (TypeError, ValueError):
            raise DataError(f"MultiBench split {split!r}: 'labels' is not numeric or has the wrong number of rows", path) from None
        _check_rows({"audio": audio, "vision": vision, "labels": labels, "id": ids}, n, split, path)
        if not (text.shape[1] == audio.shape[1] == vision.shape[1]):
            raise DataError(f"split {split!r}: text/audio/vision have {text.shape[1]}/{audio.shape[1]}/{vision.shape[1]} steps; "
                            "expected the aligned MultiBench layout (one length for all)", path)
        check_unique(ids, path, f"id in split {split!r}")
        _check_labels(labels, ids, path, label_range)
        steps = text.shape[1]
        nz = np.any(text != 0, axis=2)
        start = np.where(nz.any(1), np.argmax(nz, axis=1), steps)
        lengths = (steps - start).astype(np.int64)
        out[split] = {
            "ids": ids,
            "text": _shift(text, start),
            "audio": _shift(audio, start),
            "vision": _shift(vision, start),
            "lengths": lengths,
            "labels": labels.astype(np.float32),
        }
    return out


def _shift(x: np.ndarray, start: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    steps = x.shape[1]
    for i, s in enumerate(start.tolist()):
        if s < steps:
            out[i, : steps - s] = x[i, s:]
    return out


# ------------------------------------------------------------------------------------------
# the files in ../shared/data/sentiment/mosi
# ------------------------------------------------------------------------------------------


def _mosi_raw_2way_rows(path: Path, label_range: tuple[float, float] | None) -> list[tuple[str, str, str, float, str]]:
    """(clip id, video id, text, label, split) per clip of ``CMUMOSI_features_raw_2way.pkl``,
    clip ids unique and labels finite (and inside `label_range`)."""
    data = load_pickle(path)
    if not isinstance(data, (list, tuple)) or len(data) < 7:
        raise DataError("not a CMUMOSI_features_raw_2way pickle: expected a list of 7 items "
                        "(videoIDs, videoLabels, videoSpeakers, videoSentences, trainVid, valVid, testVid)", path)
    vid_ids, vid_labels, _speakers, vid_sents, train, val, test = data[:7]
    if not all(isinstance(x, dict) for x in (vid_ids, vid_labels, vid_sents)):
        raise DataError("not a CMUMOSI_features_raw_2way pickle: items 0, 1 and 3 must be dicts keyed by video id", path)
    rows = []
    seen_vid: dict[str, str] = {}
    for split, vids in (("train", train), ("val", val), ("test", test)):
        for vid in sorted(map(str, vids)):
            if vid in seen_vid:
                raise DataError(f"video {vid!r} is in both the {seen_vid[vid]} and {split} folds", path)
            seen_vid[vid] = split
            if vid not in vid_ids or vid not in vid_labels or vid not in vid_sents:
                raise DataError(f"video {vid!r} of the {split} fold has no ids, labels or sentences", path)
            ids, labels, sents = list(vid_ids[vid]), list(vid_labels[vid]), list(vid_sents[vid])
            if not (len(ids) == len(labels) == len(sents)):
                raise DataError(f"video {vid!r}: {len(ids)} clip ids, {len(labels)} labels, {len(sents)} sentences", path)
            for cid, lab, sent in zip(ids, labels, sents):
                try:
                    value = float(np.asarray(lab, dtype=np.float64).reshape(-1)[0])
                except (TypeError, ValueError, IndexError):
                    raise DataError(f"clip {normalize_clip_id(cid)!r}: label {lab!r} is not a number", path) from None
                rows.append((normalize_clip_id(cid), vid, _decode(sent), value, split))
    ids = [r[0] for r in rows]
    check_unique(ids, path, "clip id")
    _check_labels(np.array([r[3] for r in rows], dtype=np.float64), ids, path, label_range)
    return rows


def mosi_raw_2way_labels(path: str | Path, label_range: tuple[float, float] | None = SENTIMENT_RANGE
                         ) -> tuple[list[str], np.ndarray, list[str]]:
    """(clip ids, labels, splits) of ``CMUMOSI_features_raw_2way.pkl``, in the order and with the
    checks of :func:`read_mosi_raw_2way`, without building a table (no pandas)."""
    rows = _mosi_raw_2way_rows(Path(path), label_range)
    return [r[0] for r in rows], np.array([r[3] for r in rows], dtype=np.float64), [r[4] for r in rows]


def read_mosi_raw_2way(path: str | Path, label_range: tuple[float, float] | None = SENTIMENT_RANGE) -> pd.DataFrame:
    """``CMUMOSI_features_raw_2way.pkl`` -> ``id, video_id, text, label, split`` (one row per
    clip; videos in train, val, test order, clips in each video's order)."""
    return pd.DataFrame(_mosi_raw_2way_rows(Path(path), label_range), columns=["id", "video_id", "text", "label", "split"])


AUDIO_IDS_COLUMNS = ("pickle_split", "pickle_video_index", "utt_pos", "mosi_clip_id")


def read_audio_2way(pickle_path: str | Path, ids_csv: str | Path) -> tuple[list[str], np.ndarray]:
    """(clip ids, float32 [N, 73]) from ``audio_2way.pickle`` and ``audio_2way_ids.csv``.

    The pickle is ``(train [V, T, 73], train_label, test [V', T, 73], test_label, maxlen,
    train_lengths, test_lengths)`` with no ids; each csv row names the (pickle_split,
    pickle_video_index, utt_pos) slot of one clip. Slots past a video's length are padding
    and may not be referenced.
    """
    pickle_path, ids_csv = Path(pickle_path), Path(ids_csv)
    data = load_pickle(pickle_path)
    if not isinstance(data, (list, tuple)) or len(data) < 7:
        raise DataError("not an audio_2way pickle: expected a tuple (train, train_label, test, test_label, maxlen, "
                        "train_lengths, test_lengths)", pickle_path)
    arrays = {"train": np.asarray(data[0]), "test": np.asarray(data[2])}
    lengths = {"train": data[5], "test": data[6]}
    for k in ("train", "test"):
        if arrays[k].ndim != 3 or arrays[k].dtype.kind != "f":
            raise DataError(f"not an audio_2way pickle: the {k} features have shape {arrays[k].shape}, expected (videos, steps, features)", pickle_path)
        lengths[k] = np.asarray(lengths[k], dtype=np.int64).reshape(-1)
        if len(lengths[k]) != arrays[k].shape[0]:
            raise DataError(f"not an audio_2way pickle: {len(lengths[k])} {k} lengths for {arrays[k].shape[0]} videos", pickle_path)
    df = read_csv(ids_csv, AUDIO_IDS_COLUMNS, "audio_2way_ids.csv", dtype={"mosi_clip_id": str, "pickle_split": str})
    ids = [normalize_clip_id(x) for x in df["mosi_clip_id"]]
    lines = [csv_line(i) for i in range(len(df))]
    check_unique(ids, ids_csv, "clip id", lines)
    vi = numeric_column(df, "pickle_video_index", ids_csv).astype(np.int64)
    up = numeric_column(df, "utt_pos", ids_csv).astype(np.int64)
    dim = arrays["train"].shape[2]
    feats = np.zeros((len(df), dim), dtype=np.float32)
    for i, (split, v, u) in enumerate(zip(df["pickle_split"].astype(str), vi, up)):
        split = split.strip().lower()
        if split not in arrays:
            raise DataError(f"line {lines[i]}: pickle_split {split!r} is not train or test", ids_csv)
        if not (0 <= v < arrays[split].shape[0]) or not (0 <= u < lengths[split][v]):
            raise DataError(f"line {lines[i]}: slot ({split}, video {v}, utterance {u}) is outside the pickle "
                            f"({arrays[split].shape[0]} videos; that video has {lengths[split][v] if 0 <= v < len(lengths[split]) else 0} utterances)", ids_csv)
        feats[i] = arrays[split][v, u]
    if not np.isfinite(feats).all():
        raise DataError("audio features contain NaN or infinite values", pickle_path)
    return ids, feats
