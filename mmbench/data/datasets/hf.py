"""Hugging Face ``datasets`` as a data source: dataset ``hf``, mapped onto mmbench by columns.

Where the data is (one of, paths relative to the data root unless absolute):

- ``path``: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read
  with ``datasets.load_from_disk``), a folder of Parquet / Arrow / JSON-lines files (a Hub
  repository's layout, read with ``datasets.load_dataset(folder)``), or one such file;
- ``data_files``: ``{split: file or [files]}`` of Parquet (``.parquet``), Arrow (``.arrow``) or
  JSON lines (``.jsonl`` / ``.json``), read with ``datasets.load_dataset(<format>, data_files=...)``;
- ``hub``: a Hub dataset id (``owner/name``, with ``config`` and ``revision``), read with
  ``datasets.load_dataset(id, ...)``: the network or the local Hugging Face cache. With
  ``HF_HUB_OFFLINE=1`` and no cached copy this is one clear error.

Parquet / Arrow / JSON files are converted by ``datasets`` into its Arrow cache under
``$MMBENCH_CACHE/hf-datasets`` (option ``cache_dir``). A single ``Dataset`` (not a dict of
splits) is split ``split_name`` (default ``train``).

The column mapping (task spec ``dataset.options``)::

    id: img_id                  # optional; default "<split>-<row>"
    target: label               # the target column
    target_type: multiclass     # multiclass | binary | multilabel | regression
    class_names: [...]          # string labels -> indices (a ClassLabel feature's names by default)
    modalities:
      image: {column: img, type: image}       # a datasets Image feature (or bytes / path values)
      text: {column: caption, type: text}     # strings
      meta: {columns: [a, b], type: features} # numeric columns, or one list / array column
      audio: {column: a, type: features, present: present_audio, lengths: length_audio}
    splits: {train: train, val: validation, test: test}   # mmbench name -> the dataset's split

In a task spec, ``target_type``, ``class_names``, ``num_classes`` and ``splits`` are not options:
the task's ``target`` and ``splits`` give them (the task's splits name the dataset's splits).
A modality's ``present`` names a bool column (``present_<m>`` as ``mmbench data export`` writes
it): a row where it is False is missing (zero-filled) whatever its values; ``lengths`` names an
int column of sequence lengths (``length_<m>``).

A ``None`` value is a missing modality (``present`` False, zero-filled slot), never a blank
input; an empty string is a present, empty text. A multilabel target is a list of label
indices or names (``Sequence(ClassLabel)``, ``target_format: labels``, the default) or a 0/1
list of length C (``target_format: multi_hot``); it becomes a float32 ``[N, C]`` 0/1 matrix. A
row whose target is ``None`` (or a ClassLabel's ``-1``) is unlabeled: loading that split is
refused, since it cannot be trained or evaluated on.

Images decode with torchvision (RGB), shorter side resized to ``image_size`` (224) and
centre-cropped; ``image_encoder: efficientnet`` (default) gives frozen EfficientNet-Lite0
features ``[1280]``, ``pixels`` the normalised pixels ``[3, S, S]``. ``text_encoder: minilm``
(default) gives frozen MiniLM sentence embeddings ``[384]``, ``tokens`` MiniLM token ids with
lengths (and the tokenizer's ``vocab_size`` / ``pad_id`` in ``Split.info["vocabularies"]``, which
the default ``embedding`` encoder embeds; docs/architecture.md). Both are cached in :class:`~mmbench.core.cache.FeatureCache`, keyed by the SHA-256 of the
image bytes or the exact strings. An image whose bytes cannot be decoded is a
:class:`~mmbench.core.errors.DataError` naming the split, column and row id.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmbench.data.samples import VOCABULARIES, Split
from mmbench.data.datasets.base import MultimodalDataset, check_image_encoder, encoder_options
from mmbench.core.errors import DataError, SpecError
from mmbench.core.registry import DATASETS

MODALITY_TYPES = ("image", "text", "features")
MODALITY_KEYS = ("column", "columns", "type", "present", "lengths")
TARGET_TYPES = ("multiclass", "binary", "multilabel", "regression")
FILE_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json"}
_IMAGE_RECIPE = "hf-bytes-rgb-short-side-resize-center-crop-v1"


# ------------------------------------------------------------------------------------ opening


def _hf_cache_dir(cache_dir: str | os.PathLike | None) -> str:
    from mmbench.core.cache import default_cache_root

    return str(Path(cache_dir) if cache_dir else default_cache_root() / "hf-datasets")


def _quiet_datasets():
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return datasets


def _file_format(path: Path) -> str:
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SpecError(f"hf: cannot tell the format of {path.name!r}; expected one of {', '.join(FILE_FORMATS)}", path)
    return fmt


def open_hf(root: Path, path: str | None = None, data_files: dict[str, Any] | None = None, hub: str | None = None,
            config: str | None = None, revision: str | None = None, split_name: str = "train",
            cache_dir: str | None = None) -> dict[str, Any]:
    """{split name: datasets.Dataset} from exactly one of `path`, `data_files`, `hub`."""
    given = [k for k, v in (("path", path), ("data_files", data_files), ("hub", hub)) if v]
    if len(given) != 1:
        raise SpecError(f"dataset.options: give exactly one of the options path, data_files, hub (got {', '.join(given) or 'none'})")
    datasets = _quiet_datasets()
    where: Any = hub
    try:
        if hub:
            got = datasets.load_dataset(hub, name=config, revision=revision, cache_dir=_hf_cache_dir(cache_dir))
        elif data_files:
            files = {s: [str(_under(root, f)) for f in ([fs] if isinstance(fs, str) else fs)] for s, fs in data_files.items()}
            formats = {_file_format(Path(f)) for fs in files.values() for f in fs}
            if len(formats) != 1:
                raise SpecError(f"dataset.options.data_files: the files mix formats ({', '.join(sorted(formats))})")
            for f in (f for fs in files.values() for f in fs):
                if not Path(f).is_file():
                    raise DataError("hf data file not found", f)
            where = next(iter(files.values()))[0]
            got = datasets.load_dataset(formats.pop(), data_files=files, cache_dir=_hf_cache_dir(cache_dir))
        else:
            p = where = _under(root, path)
            if not p.exists():
                raise DataError("hf dataset path not found (data root %s)" % root, p)
            if p.is_file():
                got = datasets.load_dataset(_file_format(p), data_files={split_name: str(p)}, cache_dir=_hf_cache_dir(cache_dir))
            elif (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
                got = datasets.load_from_disk(str(p))
            else:
                got = datasets.load_dataset(str(p), cache_dir=_hf_cache_dir(cache_dir))
    except (SpecError, DataError):
        raise
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ConnectionError, DatasetGenerationError...)
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if hub and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
            raise DataError(f"hf: cannot load Hub dataset {hub!r}: HF_HUB_OFFLINE is set and no cached copy was found "
                            f"({type(exc).__name__}: {msg}); go online once, or save it with save_to_disk and use path")
        raise DataError(f"hf: cannot load the dataset: {type(exc).__name__}: {msg}", where) from None
    if isinstance(got, datasets.Dataset):
        return {split_name: got}
    return dict(got)


def _under(root: Path, rel: str | os.PathLike) -> Path:
    p = Path(rel).expanduser()
    return p if p.is_absolute() else root / p


# ------------------------------------------------------------------------------------ images


def decode_rgb_bytes(blob: bytes) -> Tensor:
    """uint8 RGB ``[3, H, W]`` from encoded image bytes (PNG, JPEG, ...; BMP, TIFF through PIL)."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as F

    try:
        return decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError:  # formats torchvision does not decode (BMP, TIFF...): through PIL
        from PIL import Image

        with Image.open(io.BytesIO(blob)) as im:
            return F.pil_to_tensor(im.convert("RGB"))


def decode_image_bytes(blob: bytes, image_size: int = 224) -> Tensor:
    """uint8 RGB ``[3, S, S]`` from encoded image bytes (PNG, JPEG, ...): shorter side resized
    to S (antialiased), centre crop, as :func:`mmbench.data.datasets.coco.decode_image_file`."""
    from torchvision.transforms.v2 import functional as F

    img = F.resize(decode_rgb_bytes(blob), [int(image_size)], antialias=True)
    return F.center_crop(img, [int(image_size), int(image_size)]).contiguous()


def image_bytes_modality(blobs: Sequence[bytes | None], names: Sequence[str], image_encoder: str = "efficientnet",
                         image_size: int = 224, cache: Any = None, weights_path: str | None = None,
                         where: str = "image", image_output: str | None = None) -> tuple[Tensor, Tensor]:
    """(``[N, 1280]`` features, normalised pixels ``[N, 3, S, S]`` or a torchvision backbone's
    ``[N, D]``, present ``[N]``) for encoded images (None = missing). `names` name the rows in
    errors. Cached by the bytes' SHA-256."""
    from mmbench.data.datasets.coco_features import feature_cache, image_backbone_key, weights_fingerprint
    from mmbench.models.encoders import pretrained

    check_image_encoder(image_encoder, "dataset.options")
    size = int(image_size)
    rows = [i for i, b in enumerate(blobs) if b is not None]
    h = hashlib.sha256(b"mmbench-image-bytes-v1\0")
    for i in rows:
        h.update(hashlib.sha256(blobs[i]).digest())

    def undecodable(i: int, why: str) -> DataError:
        return DataError(f"{where}: row {names[i]!r}: cannot decode the image ({why[:120]})")

    def pixels() -> Tensor:
        out = torch.zeros((len(rows), 3, size, size), dtype=torch.uint8)
        for k, i in enumerate(rows):
            try:
                out[k] = decode_image_bytes(blobs[i], size)
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a corrupt image
                raise undecodable(i, f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}") from None
        return out

    options: dict[str, Any] = {"image_size": size, "recipe": _IMAGE_RECIPE}
    if image_encoder == "pixels":
        namespace, dim = "hf-pixels", (3, size, size)
        build = lambda: {"values": pixels()}  # noqa: E731
    elif image_encoder.startswith("torchvision:"):
        from mmbench.models.encoders import backbones

        cache = feature_cache(cache)
        backbone, options = image_backbone_key(image_encoder, weights_path, image_output, cache)
        namespace, dim = "hf-image-backbone", (backbones.image_feature_dim(backbone),)

        def build() -> dict[str, Tensor]:
            feats, _, problems = backbones.encode_image_sources(len(rows), lambda k: decode_rgb_bytes(blobs[rows[k]]),
                                                                backbone, desc=f"{where}: {backbone.name}")
            for k, why in problems.items():
                raise undecodable(rows[k], why)
            return {"values": feats}
    else:
        weights = pretrained.efficientnet_weights_path(weights_path)
        namespace, dim = "hf-efficientnet-lite0", (pretrained.EFFICIENTNET_DIM,)
        options.update({"model": "efficientnet-lite0", "weights": weights_fingerprint(weights), "pooling": "mean"})
        build = lambda: {"values": pretrained.encode_images(pixels(), weights_path=weights)}  # noqa: E731
    out = torch.zeros((len(blobs), *dim), dtype=torch.float32)
    present = torch.zeros(len(blobs), dtype=torch.bool)
    if rows:
        values = feature_cache(cache).get_or_build(namespace, h.hexdigest(), options, build)["values"]
        values = pretrained.normalize_pixels(values) if image_encoder == "pixels" else values.float()
        idx = torch.tensor(rows)
        out[idx] = values
        present[idx] = True
    return out, present


# ------------------------------------------------------------------------------------ columns


def _require_column(ds: Any, column: str, where: str) -> None:
    if column not in ds.column_names:
        raise DataError(f"{where}: no column {column!r} (columns: {', '.join(ds.column_names)})")


def _column(ds: Any, column: str, where: str) -> list[Any]:
    _require_column(ds, column, where)
    return list(ds[column])


def _image_blobs(ds: Any, column: str, where: str, root: Path) -> list[bytes | None]:
    """Encoded bytes per row (None = missing), from an Image feature (read undecoded), a dict
    with bytes / path, raw bytes, or a path string."""
    import datasets

    _require_column(ds, column, where)
    if isinstance(ds.features[column], datasets.Image):
        ds = ds.cast_column(column, datasets.Image(decode=False))
    out: list[bytes | None] = []
    for value in ds[column]:
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if value is None or isinstance(value, bytes):
            out.append(value)
        elif isinstance(value, str):
            p = _under(root, value)
            if not p.is_file():
                raise DataError(f"{where}: image file of column {column!r} not found", p)
            out.append(p.read_bytes())
        else:
            raise DataError(f"{where}: column {column!r} holds {type(value).__name__} values; expected images "
                            "(a datasets Image feature, bytes or file paths)")
    return out


def _feature_block(ds: Any, column: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(float32 ``[N, *shape]``, present ``[N]``) of one numeric column: numbers (shape 1),
    lists or fixed-shape arrays; a None row is missing."""
    _require_column(ds, column, where)
    fast = ds.with_format("numpy")[column]  # one array when every row has the same numeric shape
    if isinstance(fast, np.ndarray) and fast.dtype.kind in "biuf" and fast.ndim >= 1:
        block = fast.astype(np.float32).reshape(len(ds), -1) if fast.ndim == 1 else fast.astype(np.float32)
        present = np.ones(len(ds), dtype=bool)
    else:
        values = list(ds[column])
        present = np.array([v is not None for v in values], dtype=bool)
        shape = next((np.shape(v) for v in values if v is not None), ()) or (1,)
        block = np.zeros((len(values), *shape), dtype=np.float32)
        for i, v in enumerate(values):
            if v is None:
                continue
            try:
                row = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{where}: column {column!r} row {i}: {v!r} is not numeric"[:300]) from None
            if row.shape != shape and not (row.ndim == 0 and shape == (1,)):
                raise DataError(f"{where}: column {column!r} row {i}: expected shape {shape}, got {row.shape}")
            block[i] = row.reshape(shape)
    if not np.isfinite(block).all():
        i = int(np.argwhere(~np.isfinite(block))[0][0])
        raise DataError(f"{where}: column {column!r} row {i}: non-finite value (NaN or infinity)")
    return block, present


def _feature_rows(ds: Any, columns: Sequence[str], where: str) -> tuple[np.ndarray, np.ndarray]:
    """(float32 ``[N, D]`` or ``[N, *shape]``, present ``[N]``): numeric columns and list columns
    concatenated, or one array column as it is; a row with a None in any of them is missing."""
    blocks = [_feature_block(ds, column, where) for column in columns]
    if len(blocks) == 1:
        return blocks[0]
    if any(b.ndim != 2 for b, _ in blocks):
        raise DataError(f"{where}: columns {', '.join(columns)}: only numbers and flat lists can be concatenated; "
                        "give an array column alone")
    return np.concatenate([b for b, _ in blocks], axis=1), np.logical_and.reduce([p for _, p in blocks])


def _valid_rows(ds: Any, column: str, where: str) -> np.ndarray:
    """Rows whose value in `column` is not None, read from the Arrow table (nothing decoded)."""
    _require_column(ds, column, where)
    arr = ds.with_format("arrow")[column]
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _flag_column(ds: Any, column: str, where: str) -> np.ndarray:
    """A bool presence column (None counts as False)."""
    values = _column(ds, column, where)
    if any(v is not None and not isinstance(v, (bool, np.bool_, int, np.integer)) for v in values):
        raise DataError(f"{where}: presence column {column!r} must hold true / false")
    return np.array([bool(v) for v in values], dtype=bool)


def _label_index(value: Any, names: Sequence[str] | None, n_classes: int | None, where: str, row: Any) -> int:
    if isinstance(value, str):
        if not names or value not in names:
            raise DataError(f"{where}: row {row!r}: label {value!r} is not one of the class names "
                            f"({', '.join(names or []) or 'none given: set class_names'})"[:300])
        return list(names).index(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{where}: row {row!r}: label {value!r} is not a class index or name"[:300])
    if n_classes is not None and not 0 <= int(value) < n_classes:
        raise DataError(f"{where}: row {row!r}: label {value} is out of range [0, {n_classes})")
    return int(value)


def _unlabeled(value: Any) -> bool:
    return value is None or (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value == -1)


# ------------------------------------------------------------------------------------ loader


@DATASETS.register("hf")
class HFDataset(MultimodalDataset):
    """A Hugging Face dataset mapped by columns; see the module docstring."""

    name = "hf"

    def __init__(self, data_dir=None, *, target: str | None = None, modalities: dict[str, Any] | None = None,
                 target_type: str = "multiclass", id: str | None = None, class_names: list[str] | None = None,
                 num_classes: int | None = None, target_format: str = "labels", splits: dict[str, str] | None = None,
                 path: str | None = None, data_files: dict[str, Any] | None = None, hub: str | None = None,
                 config: str | None = None, revision: str | None = None, split_name: str = "train",
                 image_encoder: str = "efficientnet", image_size: int = 224, text_encoder: str = "minilm",
                 max_tokens: int = 64, cache_dir: str | None = None, image_weights: str | None = None,
                 text_model: str | None = None, image_output: str | None = None, text_pooling: str = "mean"):
        super().__init__(data_dir, **encoder_options(image_output=image_output, text_pooling=text_pooling),
                         target=target, modalities=modalities, target_type=target_type, id=id,
                         class_names=class_names, num_classes=num_classes, target_format=target_format, splits=splits,
                         path=path, data_files=data_files, hub=hub, config=config, revision=revision,
                         split_name=split_name, image_encoder=image_encoder, image_size=image_size,
                         text_encoder=text_encoder, max_tokens=max_tokens)
        if not target:
            raise SpecError("dataset.options.target: required (the hf dataset's target column)")
        if not modalities or not isinstance(modalities, dict):
            raise SpecError("dataset.options.modalities: required ({name: {column: ..., type: image|text|features}})")
        self.mapping: dict[str, dict[str, Any]] = {}
        from mmbench.core.registry import nearest

        for m, spec in modalities.items():
            spec = {"column": spec} if isinstance(spec, str) else dict(spec or {})
            for key in spec:
                if key not in MODALITY_KEYS:
                    raise SpecError(f"dataset.options.modalities.{m}.{key}: unknown key{nearest(str(key), MODALITY_KEYS)}")
            kind = spec.get("type", "text")
            if kind not in MODALITY_TYPES:
                raise SpecError(f"dataset.options.modalities.{m}.type: {kind!r} is not one of {', '.join(MODALITY_TYPES)}")
            cols = spec.get("columns") or ([spec["column"]] if spec.get("column") else [])
            if not cols or (kind != "features" and len(cols) != 1):
                raise SpecError(f"dataset.options.modalities.{m}: needs 'column'" + (" or 'columns'" if kind == "features" else ""))
            self.mapping[m] = {"type": kind, "columns": [str(c) for c in cols], "present": spec.get("present"),
                               "lengths": spec.get("lengths")}
        if target_type not in TARGET_TYPES:
            raise SpecError(f"target.type: {target_type!r} is not one of {', '.join(TARGET_TYPES)}")
        if target_format not in ("labels", "multi_hot"):
            raise SpecError(f"dataset.options.target_format: {target_format!r} is not one of labels, multi_hot")
        self.modalities = tuple(sorted(self.mapping))
        self.target, self.target_type, self.id_column = target, target_type, id
        self.class_names, self.num_classes, self.target_format = class_names, num_classes, target_format
        self.split_map = dict(splits) if splits else None
        self.source = {"path": path, "data_files": data_files, "hub": hub, "config": config, "revision": revision,
                       "split_name": split_name, "cache_dir": cache_dir}
        self.image_encoder, self.image_size, self.text_encoder = image_encoder, int(image_size), text_encoder
        self.max_tokens, self.cache_dir, self.image_weights, self.text_model = int(max_tokens), cache_dir, image_weights, text_model
        self.image_output, self.text_pooling = image_output, text_pooling
        self._data: dict[str, Any] | None = None

    @classmethod
    def task_options(cls, spec: Any) -> dict[str, Any]:
        return {"target_type": spec.target.type, "num_classes": spec.target.num_classes,
                "class_names": spec.target.class_names}

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = open_hf(self.root, **self.source)
        return self._data

    @property
    def split_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.split_map) if self.split_map else tuple(self.data)

    def _source_name(self, split: str) -> str:
        name = self.split_map.get(split, split) if self.split_map else split
        if name not in self.data:
            raise DataError(f"hf: the dataset has no split {name!r} (its splits: {', '.join(self.data)})")
        return name

    def locate(self) -> dict[str, str]:
        src = {k: str(v) for k, v in self.source.items() if v and k in ("path", "data_files", "hub")}
        return src | {"splits": ", ".join(f"{k} <- {self._source_name(k)}" for k in self.split_names)}

    def load_split(self, split: str) -> Split:
        self.check_split(split)
        source_split = self._source_name(split)
        ds = self.data[source_split]
        where = f"hf split {source_split!r}"
        n = len(ds)
        if self.id_column:
            ids = [str(v) for v in _column(ds, self.id_column, where)]
            seen: set[str] = set()
            for i in ids:
                if i in seen:
                    raise DataError(f"{where}: id {i!r} of column {self.id_column!r} occurs more than once")
                seen.add(i)
        else:
            ids = [f"{split}-{i}" for i in range(n)]
        targets = self._targets(ds, ids, where)
        modalities: dict[str, Tensor] = {}
        present: dict[str, Tensor] = {}
        lengths: dict[str, Tensor] = {}
        vocabularies: dict[str, dict[str, int]] = {}
        from mmbench.data.datasets.coco_features import feature_cache, text_vocabulary

        cache = feature_cache(self.cache_dir)
        for m, spec in self.mapping.items():
            col = spec["columns"][0]
            if spec["type"] == "image":
                blobs = _image_blobs(ds, col, where, self.root)
                modalities[m], present[m] = image_bytes_modality(blobs, ids, self.image_encoder, self.image_size, cache,
                                                                 self.image_weights, f"{where} column {col!r}",
                                                                 self.image_output)
            elif spec["type"] == "text":
                values = _column(ds, col, where)
                bad = next((i for i, v in enumerate(values) if v is not None and not isinstance(v, str)), None)
                if bad is not None:
                    raise DataError(f"{where}: column {col!r} row {ids[bad]!r}: {type(values[bad]).__name__} is not text")
                modalities[m], present[m], length = text_modality(values, self.text_encoder, cache, self.text_model,
                                                                  self.max_tokens, self.text_pooling)
                if length is not None:
                    lengths[m] = length
                    vocabularies |= text_vocabulary(m, self.text_encoder, self.text_model).get(VOCABULARIES, {})
            else:
                feats, ok = _feature_rows(ds, spec["columns"], where)
                modalities[m], present[m] = torch.from_numpy(feats), torch.from_numpy(ok)
            if spec["present"]:
                present[m] = present[m] & torch.from_numpy(_flag_column(ds, spec["present"], where))
                modalities[m][~present[m]] = 0
            if spec["lengths"]:
                lengths[m] = torch.tensor([int(v or 0) for v in _column(ds, spec["lengths"], where)], dtype=torch.long)
                lengths[m][~present[m]] = 0
        info = {"source_split": source_split, "target_type": self.target_type}
        if vocabularies:
            info[VOCABULARIES] = vocabularies
        if self.class_names:
            info["class_names"] = list(self.class_names)
        return Split(split, ids, modalities, present, targets, lengths, info)

    def load_labels(self, split: str) -> tuple[list[str], Tensor]:
        """(ids, targets) of `split` from the id and target columns: no image is decoded, no
        text encoded (the test-set fingerprint and labels-only scoring read this)."""
        self.check_split(split)
        source_split = self._source_name(split)
        ds, where = self.data[source_split], f"hf split {source_split!r}"
        return self._ids_and_targets(ds, split, where)

    def _ids_and_targets(self, ds: Any, split: str, where: str) -> tuple[list[str], Tensor]:
        ids = [str(v) for v in _column(ds, self.id_column, where)] if self.id_column else \
            [f"{split}-{i}" for i in range(len(ds))]
        return ids, self._targets(ds, ids, where)

    def split_summary(self, split: str) -> dict[str, Any]:
        """Samples, presence and class counts from the target, id and presence columns: no
        image is decoded, no text encoded."""
        self.check_split(split)
        source_split = self._source_name(split)
        ds, where = self.data[source_split], f"hf split {source_split!r}"
        ids, targets = self._ids_and_targets(ds, split, where)
        present = {}
        for m, spec in self.mapping.items():
            ok = np.logical_and.reduce([_valid_rows(ds, c, where) for c in spec["columns"]])
            if spec["present"]:
                ok &= _flag_column(ds, spec["present"], where)
            present[m] = int(ok.sum())
        out: dict[str, Any] = {"samples": len(ds), "present": dict(sorted(present.items()))}
        if self.target_type in ("multiclass", "binary") and len(ds):
            counts = torch.bincount(targets, minlength=int(self.num_classes or 0))
            out["classes"] = {str(i): int(c) for i, c in enumerate(counts.tolist())}
        elif self.target_type == "regression" and len(ds):
            out["target"] = {"min": float(targets.min()), "max": float(targets.max()), "mean": float(targets.mean())}
        return out

    def _class_names(self, ds: Any) -> list[str] | None:
        """The class names: given ones, checked against a ClassLabel target's own names, else
        the ClassLabel's."""
        import datasets

        feature = ds.features.get(self.target)
        inner = getattr(feature, "feature", None)
        label = next((f for f in (feature, inner) if isinstance(f, datasets.ClassLabel)), None)
        if label is None:
            return list(self.class_names) if self.class_names else None
        col = f"column {self.target!r}"
        if self.target_type == "regression":
            raise SpecError(f"target.type: regression, but {col} is a ClassLabel ({', '.join(label.names)}); use "
                            f"{'binary' if label.num_classes == 2 else 'multiclass'}")
        if (label is inner) != (self.target_type == "multilabel"):
            raise SpecError(f"target.type: {self.target_type}, but {col} is a "
                            + ("list of ClassLabels: use multilabel" if label is inner else "ClassLabel: one class per row"))
        if self.num_classes is not None and self.num_classes != label.num_classes:
            raise SpecError(f"target.num_classes: {self.num_classes}, but {col} is a ClassLabel of {label.num_classes} "
                            f"names ({', '.join(label.names)})")
        if self.class_names and list(self.class_names) != list(label.names):
            order = " (same names, other order: the index order must be the ClassLabel's)" \
                if sorted(self.class_names) == sorted(label.names) else ""
            raise SpecError(f"target.class_names: {list(self.class_names)} differ from the names of the ClassLabel "
                            f"{col}: {list(label.names)}{order}")
        return list(label.names)

    def _targets(self, ds: Any, ids: list[str], where: str) -> Tensor:
        values = _column(ds, self.target, where)
        unlabeled = [i for i, v in enumerate(values) if _unlabeled(v)]
        if unlabeled:
            raise DataError(f"{where}: {len(unlabeled)} of {len(values)} rows have no target in column {self.target!r} "
                            f"(first: {ids[unlabeled[0]]!r}); a split without labels cannot be trained or evaluated on")
        names = self._class_names(ds)
        c = self.num_classes or (len(names) if names else None)
        if self.target_type == "regression":
            try:
                y = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{where}: column {self.target!r} is not numeric") from None
            if y.ndim != 1 or not np.isfinite(y).all():
                raise DataError(f"{where}: column {self.target!r} must hold one finite number per row")
            return torch.from_numpy(y.astype(np.float32))
        if self.target_type != "multilabel":
            return torch.tensor([_label_index(v, names, c, where, ids[i]) for i, v in enumerate(values)], dtype=torch.long)
        if c is None:
            raise SpecError(f"target.num_classes: a multilabel target needs class_names or num_classes (column {self.target!r})")
        out = np.zeros((len(values), c), dtype=np.float32)
        for i, v in enumerate(values):
            if not isinstance(v, (list, tuple)):
                raise DataError(f"{where}: row {ids[i]!r}: a multilabel target is a list, got {v!r}"[:300])
            if self.target_format == "multi_hot":
                if len(v) != c or any(x not in (0, 1) for x in v):
                    raise DataError(f"{where}: row {ids[i]!r}: a multi_hot target is {c} values of 0 or 1, got {v!r}"[:300])
                out[i] = v
            else:
                out[i, [_label_index(x, names, c, where, ids[i]) for x in v]] = 1.0
        return torch.from_numpy(out)


def text_modality(values: Sequence[str | None], text_encoder: str = "minilm", cache: Any = None,
                  text_model: str | None = None, max_tokens: int = 64,
                  text_pooling: str = "mean") -> tuple[Tensor, Tensor, Tensor | None]:
    """(``[N, 384]`` MiniLM embeddings or token ids ``[N, T]``, present ``[N]``, lengths or None)
    for texts where None is missing: only present texts are encoded, missing rows are zeros."""
    from mmbench.data.datasets.coco_features import text_features

    rows = [i for i, v in enumerate(values) if v is not None]
    present = torch.zeros(len(values), dtype=torch.bool)
    present[rows] = True
    got, lengths, _ = text_features([values[i] for i in rows] or [""], text_encoder, cache, text_model, max_tokens,
                                    text_pooling)
    out = torch.zeros((len(values), *got.shape[1:]), dtype=got.dtype)
    if rows:
        out[torch.tensor(rows)] = got[: len(rows)]
    if lengths is None:
        return out, present, None
    full = torch.zeros(len(values), dtype=torch.long)
    if rows:
        full[torch.tensor(rows)] = lengths[: len(rows)].long()
    return out, present, full
