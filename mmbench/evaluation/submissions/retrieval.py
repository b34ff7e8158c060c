"""Retrieval submissions: an ``.npz`` of embeddings with ``image_ids``, ``image_embeddings``,
``caption_ids``, ``caption_embeddings``, aligned to the task's gallery. Embeddings a retrieval
model computes in the sandbox pass the same checks (:func:`check_embeddings`).
"""

from __future__ import annotations

import re

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmbench.core.errors import SubmissionError
from mmbench.evaluation.submissions.checks import check_file, Limits, one_line, show_values
from mmbench.evaluation.submissions.tables import table_format


NPZ_KEYS = ("image_ids", "image_embeddings", "caption_ids", "caption_embeddings")
#: Optional: the test-set fingerprint the embeddings were made for (`mmbench data info TASK`), a
#: string array of one element; `evaluate` refuses the file if the test set here differs.
CLAIM_KEY = "test_set_fingerprint"


@dataclass
class RetrievalSubmission:
    image_embeddings: np.ndarray  # aligned to the gallery's image order
    caption_embeddings: np.ndarray  # aligned to the gallery's caption order
    caption_image_index: np.ndarray
    dim: int
    claimed_test_set: str | None = None


def _npz_headers(path: Path, limits: Limits) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each array, read from the .npy headers without decompressing data."""
    if not zipfile.is_zipfile(path):
        raise SubmissionError("not a valid .npz file (not a zip archive; truncated?)", path)
    headers = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise SubmissionError(f"unexpected member {info.filename!r} in the .npz archive", path)
                key = info.filename[:-4]
                if key not in NPZ_KEYS and key != CLAIM_KEY:
                    raise SubmissionError(f"unexpected array {key!r}; expected exactly {', '.join(NPZ_KEYS)} (and "
                                          f"optionally {CLAIM_KEY})", path)
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if reader is None:
                        raise SubmissionError(f"array {key!r}: unsupported .npy format version {version}", path)
                    shape, _fortran, dtype = reader(fh, max_header_size=10000)
                headers[key] = (tuple(shape), np.dtype(dtype))
    except SubmissionError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise SubmissionError(f"corrupt .npz file: {one_line(exc)}", path) from None
    missing = [k for k in NPZ_KEYS if k not in headers]
    if missing:
        raise SubmissionError(f"missing array {missing[0]!r}; the .npz must hold {', '.join(NPZ_KEYS)}", path)
    claim = headers.pop(CLAIM_KEY, None)
    if claim is not None and (claim[1].kind != "U" or math.prod(claim[0]) != 1 or claim[1].itemsize > 4 * 64):
        raise SubmissionError(f"array {CLAIM_KEY!r} must be one string (the fingerprint `mmbench data info` prints)", path)
    total = 0
    for key, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise SubmissionError(f"array {key!r} holds Python objects (a pickle); only numeric and string arrays are accepted", path)
        want = 1 if key.endswith("_ids") else 2
        if len(shape) != want:
            raise SubmissionError(f"array {key!r} has shape {shape}; expected {'[N]' if want == 1 else '[N, D]'}", path)
        if shape[0] > limits.max_rows:
            raise SubmissionError(f"array {key!r} has {shape[0]:,} rows, over the limit of {limits.max_rows:,} (MMBENCH_MAX_ROWS)", path)
        if want == 2 and shape[1] > limits.max_embedding_dim:
            raise SubmissionError(f"array {key!r} has dimension {shape[1]:,}, over the limit of {limits.max_embedding_dim:,} "
                                  "(MMBENCH_MAX_EMBED_DIM)", path)
        total += math.prod(shape) * dtype.itemsize
    if total > limits.max_file_bytes:
        raise SubmissionError(f"arrays hold {total:,} bytes uncompressed, over the limit of {limits.max_file_bytes:,} bytes", path)
    return headers | ({CLAIM_KEY: claim} if claim is not None else {})


def _npz_ids(path: Path, key: str, arr: np.ndarray) -> list[str]:
    if arr.dtype.kind in "iu":
        return [str(int(v)) for v in arr]
    if arr.dtype.kind == "U":
        out = [str(v) for v in arr]
    elif arr.dtype.kind == "S":
        try:
            out = [v.decode("utf-8") for v in arr]
        except UnicodeDecodeError:
            raise SubmissionError(f"array {key!r} holds bytes that are not UTF-8", path) from None
    else:
        raise SubmissionError(f"array {key!r} has dtype {arr.dtype}; ids must be integers or strings", path)
    if any(not s.strip() for s in out):
        raise SubmissionError(f"array {key!r} has an empty id", path)
    return out


PREFIXED_ID = re.compile(r"^coco-(\d+)$")  # coco-398580: the id as `data export` and `data masks` write it


def _canonical(submitted: list[str], gallery: set[str]) -> list[str]:
    """Ids in the gallery's form: a prefixed id (``coco-398580``) becomes its integer id when
    that is a gallery id and the prefixed form is not."""
    out = []
    for i in submitted:
        m = PREFIXED_ID.match(i) if i not in gallery else None
        out.append(str(int(m.group(1))) if m and str(int(m.group(1))) in gallery else i)
    return out


def _align(path: Path, what: str, submitted: list[str], gallery: Sequence[str]) -> np.ndarray:
    """Index into `submitted` for each gallery id (every id exactly once); ids may be given as
    integers or in the prefixed form of the task's sample ids (``coco-398580``)."""
    submitted = _canonical(submitted, set(gallery))
    pos: dict[str, int] = {}
    dup = []
    for k, i in enumerate(submitted):
        if i in pos:
            dup.append(i)
        pos[i] = k
    if dup:
        raise SubmissionError(f"{len(dup)} duplicate {what} id(s) (first: {show_values(dup)})", path)
    gallery_set = set(gallery)
    unknown = [i for i in submitted if i not in gallery_set]
    if unknown:
        example = gallery[0] if len(gallery) else "397133"
        raise SubmissionError(f"{len(unknown)} unknown {what} id(s) not in the test gallery (first: {show_values(unknown)}); "
                              f"{what} ids are the gallery's integer ids, as integers ({example}) or strings in the "
                              f"form `data export` and `data masks` write (coco-{example})", path)
    missing = [g for g in gallery if g not in pos]
    if missing:
        raise SubmissionError(f"{len(missing)} of {len(gallery)} {what} id(s) missing (first: {show_values(missing)})", path)
    return np.fromiter((pos[g] for g in gallery), dtype=np.int64, count=len(gallery))


def _row(i: int, kind: str, names: Sequence[str] | None) -> str:
    return f"row {i}" + (f" ({kind} {names[i]})" if names is not None else "")


def check_embeddings(path: Any, image_emb: np.ndarray, caption_emb: np.ndarray, limits: Limits,
                     labels: tuple[str, str] = ("array 'image_embeddings'", "array 'caption_embeddings'"),
                     row_names: tuple[Sequence[str], Sequence[str]] | None = None,
                     image_absent: np.ndarray | None = None) -> int:
    """The checks every pair of retrieval embeddings passes, from an .npz or a model: 2-D
    floating point, same non-zero dimension within the limit, finite, bounded, no all-zero row.
    `row_names` (image, caption) name rows in messages; `image_absent` marks images whose
    input was missing, for a hint when such a row is all zeros. Returns the dimension."""
    named = ((labels[0], image_emb, row_names[0] if row_names else None),
             (labels[1], caption_emb, row_names[1] if row_names else None))
    for label, emb, _ in named:
        if emb.dtype.kind != "f":
            raise SubmissionError(f"{label} has dtype {emb.dtype}; embeddings must be floating point", path)
        if emb.ndim != 2:
            raise SubmissionError(f"{label} has shape {list(emb.shape)}; expected [N, D]", path)
        if emb.shape[1] == 0:
            raise SubmissionError(f"{label} has dimension 0", path)
        if emb.shape[1] > limits.max_embedding_dim:
            raise SubmissionError(f"{label} has dimension {emb.shape[1]:,}, over the limit of {limits.max_embedding_dim:,} "
                                  "(MMBENCH_MAX_EMBED_DIM)", path)
    if image_emb.shape[1] != caption_emb.shape[1]:
        raise SubmissionError(f"image embeddings have dimension {image_emb.shape[1]} but caption embeddings "
                              f"{caption_emb.shape[1]}; they must match", path)
    for k, (label, emb, names) in enumerate(named):
        e = emb.astype(np.float64, copy=False)
        kind = "image" if k == 0 else "caption"
        bad = ~np.isfinite(e).all(1)
        if bad.any():
            i = int(np.argmax(bad))
            raise SubmissionError(f"{label} {_row(i, kind, names)} holds NaN or infinity", path)
        if (np.abs(e) > limits.max_abs_value).any():
            raise SubmissionError(f"{label} holds values beyond |x| <= {limits.max_abs_value:g}", path)
        zero = ~(e != 0).any(1)
        if zero.any():
            i = int(np.argmax(zero))
            hint = ""
            if k == 0 and image_absent is not None and image_absent[i]:
                hint = ("; that image is missing (its input is zero-filled, present=False): return a non-zero embedding "
                        "for missing images, e.g. a learned 'missing image' vector")
            raise SubmissionError(f"{label} {_row(i, kind, names)} is all zeros (no direction to compare){hint}", path)
    return int(image_emb.shape[1])


def parse_retrieval(path: str | Path, image_ids: Sequence[Any], caption_ids: Sequence[Any], caption_image_index: Any,
                    limits: Limits | None = None) -> RetrievalSubmission:
    """Validate an embeddings .npz against the gallery and align it to the gallery's order."""
    limits = limits or Limits.from_env()
    path = check_file(path, limits, "predictions file")
    if table_format(path) != "npz":
        raise SubmissionError("a retrieval task takes an .npz with image_ids, image_embeddings, caption_ids, caption_embeddings", path)
    headers = _npz_headers(path, limits)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in NPZ_KEYS}
            claimed = str(npz[CLAIM_KEY].reshape(-1)[0]) if CLAIM_KEY in headers else None
    except SubmissionError:
        raise
    except Exception as exc:  # zlib.error, ValueError, EOFError for corrupt members
        raise SubmissionError(f"cannot read the .npz arrays: {one_line(exc)}", path) from None
    for k in NPZ_KEYS:
        if arrays[k].shape != headers[k][0]:
            raise SubmissionError(f"array {k!r}: data does not match its header", path)
    img_ids = _npz_ids(path, "image_ids", arrays["image_ids"])
    cap_ids = _npz_ids(path, "caption_ids", arrays["caption_ids"])
    img_emb, cap_emb = arrays["image_embeddings"], arrays["caption_embeddings"]
    for key, emb, ids in (("image_embeddings", img_emb, img_ids), ("caption_embeddings", cap_emb, cap_ids)):
        if emb.shape[0] != len(ids):
            raise SubmissionError(f"array {key!r} has {emb.shape[0]} rows for {len(ids)} ids", path)
    check_embeddings(path, img_emb, cap_emb, limits)
    gal_img = [str(i) for i in image_ids]
    gal_cap = [str(i) for i in caption_ids]
    img_order = _align(path, "image", img_ids, gal_img)
    cap_order = _align(path, "caption", cap_ids, gal_cap)
    return RetrievalSubmission(np.ascontiguousarray(img_emb[img_order], dtype=np.float32),
                               np.ascontiguousarray(cap_emb[cap_order], dtype=np.float32),
                               np.asarray(caption_image_index, dtype=np.int64), int(img_emb.shape[1]), claimed)
