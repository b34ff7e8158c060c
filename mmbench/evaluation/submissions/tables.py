"""Submissions: parse and validate predictions files, refuse pickles, resolve model specs.

Nothing in this module runs submitted code or unpickles anything. A predictions file is
data: CSV, JSON lines or Parquet with an ``id`` column, an optional ``condition`` column
(missing-modality condition; empty = ``clean``) and either a ``prediction`` column (class
label or real value) or class scores ``score_0 .. score_{C-1}``; for retrieval tasks an
``.npz`` with ``image_ids``, ``image_embeddings``, ``caption_ids``, ``caption_embeddings``.
Embeddings a retrieval model computes in the sandbox pass the same checks
(:func:`check_embeddings`); its .pt2 holds two programs, ``encode_image`` and ``encode_text``
(:func:`save_retrieval_program` writes one).

Every problem raises :class:`~mmbench.core.errors.SubmissionError` with a one-line message that
names the file, so the CLI can print it as ``error: <file>: <problem>``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmbench.core.errors import SubmissionError

# --------------------------------------------------------------------------------------------
# limits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what a submission may hold (environment variables override them)."""

    max_file_bytes: int = 1 << 30  # MMBENCH_MAX_UPLOAD_BYTES: a predictions file (and its arrays, uncompressed)
    max_model_bytes: int = 8 << 30  # MMBENCH_MAX_MODEL_BYTES: weights, .pt2 program, factory file
    max_rows: int = 10_000_000  # MMBENCH_MAX_ROWS (rows of a predictions table / embeddings)
    max_embedding_dim: int = 8192  # MMBENCH_MAX_EMBED_DIM
    max_abs_value: float = 1e15  # largest |value| accepted for a prediction, score or embedding

    @classmethod
    def from_env(cls) -> "Limits":
        def get(name: str, default: Any, kind: type) -> Any:
            raw = os.environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = kind(float(raw)) if kind is int else kind(raw)
            except ValueError:
                raise SubmissionError(f"environment variable {name}={raw!r} is not a number") from None
            if value <= 0:
                raise SubmissionError(f"environment variable {name} must be positive")
            return value

        d = cls()
        return cls(
            max_file_bytes=get("MMBENCH_MAX_UPLOAD_BYTES", d.max_file_bytes, int),
            max_model_bytes=get("MMBENCH_MAX_MODEL_BYTES", d.max_model_bytes, int),
            max_rows=get("MMBENCH_MAX_ROWS", d.max_rows, int),
            max_embedding_dim=get("MMBENCH_MAX_EMBED_DIM", d.max_embedding_dim, int),
            max_abs_value=get("MMBENCH_MAX_ABS_VALUE", d.max_abs_value, float),
        )


TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib", ".tar", ".mar")
_KNOWN_COLUMNS_RE = re.compile(r"^score_(\d+)$")


def _one_line(text: Any, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _show(values: Sequence[Any], k: int = 3) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:k])
    return shown + (", ..." if len(values) > k else "")


# --------------------------------------------------------------------------------------------
# pickles and file checks
# --------------------------------------------------------------------------------------------


def _looks_like_pickle(head: bytes) -> bool:
    """Pickle protocol 2+ starts with PROTO (0x80, version); protocol 0/1 pickles of a class
    instance or global start with a GLOBAL/MARK/EMPTY_* opcode followed by a module path."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head[:1] == b"c" and re.match(rb"^c[A-Za-z_][\w.]*\n[\w.]+\n", head):
        return True
    return head[:2] in (b"(d", b"(l", b"(t", b"}q", b"]q", b"(c", b"(i")


def _zip_has_pickle(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith((".pkl", ".pickle")) or n.rsplit("/", 1)[-1] == "data.pkl" for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def is_pickle_file(path: str | Path) -> bool:
    """True for a raw pickle or a torch.save zip archive (which holds a pickle). Reads only
    the first bytes and the zip directory: nothing is unpickled."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(64)
    if _looks_like_pickle(head):
        return True
    return head[:4] == b"PK\x03\x04" and _zip_has_pickle(path)


def refuse_pickle(path: str | Path, what: str = "file") -> None:
    if is_pickle_file(path):
        raise SubmissionError(
            f"{what} is a pickle; pickled files are refused and never unpickled (they can run arbitrary code). "
            "Save weights with safetensors (safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')) "
            "or export the model with torch.export.save(..., 'model.pt2')",
            path,
        )


def check_file(path: str | Path, limits: Limits, what: str = "file", model: bool = False) -> Path:
    """Exists, is a regular non-empty file within the size limit, and is not a pickle."""
    path = Path(path)
    limit, variable = (limits.max_model_bytes, "MMBENCH_MAX_MODEL_BYTES") if model else \
        (limits.max_file_bytes, "MMBENCH_MAX_UPLOAD_BYTES")
    if not path.exists():
        raise SubmissionError(f"{what} not found", path)
    if not path.is_file():
        raise SubmissionError(f"{what} is not a regular file", path)
    size = path.stat().st_size
    if size == 0:
        raise SubmissionError(f"{what} is empty", path)
    if size > limit:
        raise SubmissionError(f"{what} is {size:,} bytes, over the upload limit of {limit:,} bytes ({variable})", path)
    refuse_pickle(path, what)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        # not a pickle by content, but a pickle-format extension: refuse rather than guess
        if not _is_safetensors(path):
            raise SubmissionError(f"{what} has a pickle-checkpoint extension {path.suffix!r}; only safetensors weights, "
                                  "torch.export .pt2 programs and CSV/JSON lines/Parquet/npz predictions are accepted", path)
    return path


def _is_safetensors(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        if len(head) < 9:
            return False
        n = int.from_bytes(head[:8], "little")
        return 2 <= n <= min(path.stat().st_size - 8, 100 << 20) and head[8:9] == b"{"
    except OSError:
        return False


def check_safetensors(path: str | Path, limits: Limits, what: str = "weights file") -> Path:
    path = check_file(path, limits, what, model=True)
    if not _is_safetensors(path):
        raise SubmissionError(f"{what} is not a safetensors file (weights must be saved with safetensors)", path)
    return path


# --------------------------------------------------------------------------------------------
# labels of the test split
# --------------------------------------------------------------------------------------------


@dataclass
class TestLabels:
    ids: list[str]
    targets: np.ndarray
    fingerprint: str
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {i: k for k, i in enumerate(self.ids)}


def load_test_labels(spec, data_dir: str | Path | None = None) -> TestLabels:
    """Ids and targets of the task's test split (a loader's labels-only path when it has one)."""
    from mmbench.data.splits import task_dataset

    dataset = task_dataset(spec, data_dir)
    split_name = spec.splits.test
    labels_fn = getattr(dataset, "load_labels", None)
    if callable(labels_fn):
        ids, targets = labels_fn(split_name)
        ids = [str(i) for i in ids]
        targets = np.asarray(targets.cpu().numpy() if hasattr(targets, "cpu") else targets)
    else:
        split = dataset.load_split(split_name)
        ids, targets = [str(i) for i in split.ids], split.targets.cpu().numpy()
    return TestLabels(ids, targets, dataset.fingerprint())


# --------------------------------------------------------------------------------------------
# reading tables
# --------------------------------------------------------------------------------------------


@dataclass
class RawTable:
    """Columns as read from the file, before type checks: name -> numpy array (object or
    numeric). `fmt` is csv, jsonl or parquet."""

    columns: dict[str, np.ndarray]
    fmt: str
    rows: int


def table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TABLE_FORMATS:
        return TABLE_FORMATS[suffix]
    if suffix == ".npz":
        return "npz"
    raise SubmissionError(f"unsupported predictions file extension {path.suffix or '(none)'!r}; "
                          "use .csv, .jsonl (JSON lines), .parquet, or .npz for retrieval embeddings", path)


def _decode_utf8(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"not valid UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}; save the file as UTF-8",
                              path) from None


def _read_csv(path: Path, limits: Limits) -> RawTable:
    import pandas as pd

    text = _decode_utf8(path, path.read_bytes())
    if not text.strip():
        raise SubmissionError("CSV file has no content", path)
    if "\x00" in text:
        raise SubmissionError("CSV file contains NUL bytes (binary data?)", path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False,
                            skip_blank_lines=True, engine="c")
    except pd.errors.EmptyDataError:
        raise SubmissionError("CSV file has no header row", path) from None
    except (pd.errors.ParserError, ValueError, UnicodeError) as exc:
        raise SubmissionError(f"malformed CSV: {_one_line(exc)}", path) from None
    cols = [str(c) for c in frame.columns]
    unnamed = [c for c in cols if c.startswith("Unnamed:")]
    if unnamed:
        raise SubmissionError(f"CSV header has an empty column name (column {cols.index(unnamed[0]) + 1}); "
                              "is there a trailing comma or an index column?", path)
    dupes = sorted({c for c in cols if re.sub(r"\.\d+$", "", c) in cols and c != re.sub(r"\.\d+$", "", c)})
    if dupes:
        raise SubmissionError(f"CSV header repeats a column name ({dupes[0]!r})", path)
    if len(frame) > limits.max_rows:
        raise SubmissionError(f"{len(frame):,} rows, over the limit of {limits.max_rows:,} (MMBENCH_MAX_ROWS)", path)
    columns = {}
    for c in cols:
        values = frame[c].to_numpy(dtype=object)
        columns[c] = values
    return RawTable(columns, "csv", len(frame))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (JSON has no NaN or Infinity)")


def _read_jsonl(path: Path, limits: Limits) -> RawTable:
    text = _decode_utf8(path, path.read_bytes())
    stripped = text.lstrip()
    if not stripped:
        raise SubmissionError("JSON lines file has no content", path)
    if stripped.startswith("["):
        raise SubmissionError("expected JSON lines (one JSON object per line), found a JSON array", path)
    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise SubmissionError(f"line {lineno}: invalid JSON: {_one_line(exc)}", path) from None
        except RecursionError:
            raise SubmissionError(f"line {lineno}: JSON nested too deeply", path) from None
        if not isinstance(obj, dict):
            raise SubmissionError(f"line {lineno}: expected a JSON object, got {type(obj).__name__}", path)
        for k in obj:
            if k not in seen:
                if rows:
                    raise SubmissionError(f"line {lineno}: key {k!r} does not appear on the first line; "
                                          "every line must have the same keys", path)
                seen.add(k)
                keys.append(k)
        if len(obj) != len(keys):
            missing = [k for k in keys if k not in obj]
            raise SubmissionError(f"line {lineno}: missing key {missing[0]!r}", path)
        rows.append(obj)
        if len(rows) > limits.max_rows:
            raise SubmissionError(f"more than {limits.max_rows:,} rows (MMBENCH_MAX_ROWS)", path)
    columns = {}
    for k in keys:
        arr = np.empty(len(rows), dtype=object)
        arr[:] = [r[k] for r in rows]
        columns[k] = arr
    return RawTable(columns, "jsonl", len(rows))


def _read_parquet(path: Path, limits: Limits) -> RawTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # ArrowInvalid, OSError for truncated/corrupt files
        raise SubmissionError(f"not a valid Parquet file: {_one_line(exc)}", path) from None
    rows = pf.metadata.num_rows
    if rows > limits.max_rows:
        raise SubmissionError(f"{rows:,} rows, over the limit of {limits.max_rows:,} (MMBENCH_MAX_ROWS)", path)
    names = list(pf.schema_arrow.names)
    if len(set(names)) != len(names):
        raise SubmissionError("Parquet file repeats a column name", path)
    try:
        table = pf.read()
    except Exception as exc:
        raise SubmissionError(f"cannot read Parquet data: {_one_line(exc)}", path) from None
    columns: dict[str, np.ndarray] = {}
    for name in names:
        col = table.column(name)
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.cast(t.value_type)
            t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            if col.null_count:
                arr = np.empty(len(col), dtype=object)
                arr[:] = col.to_pylist()
            else:
                arr = col.to_numpy()
                if pa.types.is_floating(t):
                    arr = arr.astype(np.float64)
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t) or pa.types.is_boolean(t):
            arr = np.empty(len(col), dtype=object)
            arr[:] = col.to_pylist()
        else:
            raise SubmissionError(f"column {name!r} has Parquet type {t}; expected strings or numbers", path)
        columns[name] = arr
    return RawTable(columns, "parquet", rows)


def read_table(path: str | Path, limits: Limits | None = None) -> RawTable:
    limits = limits or Limits.from_env()
    path = check_file(path, limits, "predictions file")
    fmt = table_format(path)
    if fmt == "npz":
        raise SubmissionError("an .npz file holds retrieval embeddings; this task takes a CSV, JSON lines or Parquet table", path)
    return {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[fmt](path, limits)


# --------------------------------------------------------------------------------------------
# validating tables
# --------------------------------------------------------------------------------------------


def _ids_column(path: Path, values: np.ndarray) -> list[str]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            if not v.strip():
                raise SubmissionError(f"row {i + 1}: empty 'id'", path)
            out.append(v)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            out.append(str(int(v)))
        else:
            kind = "null" if v is None else type(v).__name__
            raise SubmissionError(f"row {i + 1}: 'id' must be a string or an integer, got {kind} {_one_line(repr(v), 40)}", path)
    return out


def _numbers(path: Path, column: str, values: np.ndarray, limits: Limits, strings_ok: bool = False) -> np.ndarray:
    """Finite float64 values of one column. Strings are parsed only where the format has no
    types (CSV); elsewhere a string, bool, null or container is a type error."""
    if values.dtype.kind in "iuf":
        arr = values.astype(np.float64)
    else:
        arr = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            if isinstance(v, (bool, np.bool_)) or v is None or isinstance(v, (list, dict)):
                kind = "null" if v is None else type(v).__name__
                raise SubmissionError(f"row {i + 1}: {column!r} must be a number, got {kind}", path)
            if isinstance(v, str) and not strings_ok:
                raise SubmissionError(f"row {i + 1}: {column!r} must be a number, got the string {_one_line(repr(v), 40)}", path)
            if isinstance(v, str):
                s = v.strip()
                if not s:
                    raise SubmissionError(f"row {i + 1}: empty {column!r}", path)
                try:
                    x = float(s)
                except ValueError:
                    raise SubmissionError(f"row {i + 1}: {column!r} is not a number: {_one_line(repr(v), 40)}", path) from None
            else:
                try:
                    x = float(v)
                except (OverflowError, TypeError, ValueError):
                    raise SubmissionError(f"row {i + 1}: {column!r} value is not a representable number", path) from None
            arr[i] = x
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise SubmissionError(f"row {i + 1}: {column!r} is {arr[i]} (NaN and infinities are not allowed)", path)
    big = np.abs(arr) > limits.max_abs_value
    if big.any():
        i = int(np.argmax(big))
        raise SubmissionError(f"row {i + 1}: {column!r} = {arr[i]:.3g} exceeds the limit |x| <= {limits.max_abs_value:g}", path)
    return arr


def _class_labels(path: Path, values: np.ndarray, spec, limits: Limits, strings_ok: bool) -> np.ndarray:
    c = int(spec.target.num_classes)
    names = {n: k for k, n in enumerate(spec.target.class_names or [])}
    if values.dtype == object and names:
        converted = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            converted[i] = names[v] if isinstance(v, str) and v in names else v
        values = converted
    x = _numbers(path, "prediction", values, limits, strings_ok)
    frac = x != np.round(x)
    if frac.any():
        i = int(np.argmax(frac))
        raise SubmissionError(f"row {i + 1}: 'prediction' {x[i]!r} is not a class label (an integer 0..{c - 1}); "
                              "give class scores as score_0..score_{C-1} columns instead", path)
    out_of_range = (x < 0) | (x >= c)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        raise SubmissionError(f"row {i + 1}: 'prediction' {int(x[i])} is not a class of this task (0..{c - 1})", path)
    return x.astype(np.int64)


def _conditions_column(path: Path, values: np.ndarray | None, n: int, spec) -> np.ndarray:
    from mmbench.core.errors import SpecError
    from mmbench.data.masks import parse_condition

    if values is None:
        return np.full(n, "clean", dtype=object)
    allowed = {c.name for c in spec.conditions()} | {"clean"}
    out = np.empty(n, dtype=object)
    cache: dict[Any, str] = {}
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()):
            out[i] = "clean"
            continue
        if not isinstance(v, str):
            raise SubmissionError(f"row {i + 1}: 'condition' must be a string, got {type(v).__name__}", path)
        if v not in cache:
            try:
                name = parse_condition(v, spec.modalities).name
            except SpecError as exc:
                raise SubmissionError(f"row {i + 1}: {exc}", path) from None
            if name not in allowed:
                raise SubmissionError(f"row {i + 1}: condition {v!r} is not one of this task's conditions "
                                      f"({', '.join(sorted(allowed))}); get them with `mmbench data masks {spec.name}`", path)
            cache[v] = name
        out[i] = cache[v]
    return out


def _score_submission_rules(spec, cols: dict, score_cols: list[str], path: Path) -> bool:
    """True for a binary task scored from scores (auroc), which takes one ``score`` column (the
    probability of label 1; label 1 is predicted above 0.5). A multilabel task takes
    ``score_0..score_{C-1}`` (each label's probability; predicted above 0.5)."""
    from mmbench.evaluation.scoring import uses_scores

    if uses_scores(spec):
        if "score" not in cols or "prediction" in cols or score_cols:
            raise SubmissionError(f"task {spec.name!r} is scored by AUROC: give one 'score' column, the probability of "
                                  "label 1 (label 1 is predicted where it is above 0.5), and no prediction or score_* "
                                  "columns", path)
        return True
    if spec.target.type == "multilabel" and not score_cols:
        raise SubmissionError(f"task {spec.name!r} is multi-label: give score_0..score_{{C-1}}, each label's probability "
                              "(a label is predicted where it is above 0.5; 0/1 values work too)", path)
    return False


def _probabilities(path: Path, name: str, column: Any, limits: Limits, strings_ok: bool) -> np.ndarray:
    values = _numbers(path, name, column, limits, strings_ok)
    bad = (values < 0) | (values > 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise SubmissionError(f"row {i + 1}: {name!r} {values[i]!r} is not a probability in [0, 1]", path)
    return values


@dataclass
class ParsedPredictions:
    """Per condition, predictions aligned to the test split's id order."""

    predictions: dict[str, np.ndarray]
    fmt: str
    rows: int
    value_kind: str  # labels | values | scores
    extra: dict[str, Any] = field(default_factory=dict)


def parse_predictions(path: str | Path, spec, labels: TestLabels, conditions: Sequence[str] | None = None,
                      limits: Limits | None = None) -> ParsedPredictions:
    """Read and validate a classification/regression predictions table against the test ids."""
    limits = limits or Limits.from_env()
    path = Path(path)
    if spec.target.type == "retrieval":
        raise SubmissionError("this is a retrieval task: submit an .npz with image_ids, image_embeddings, caption_ids, "
                              "caption_embeddings", path)
    table = read_table(path, limits)
    cols = table.columns
    if table.rows == 0:
        raise SubmissionError("no data rows (only a header?)", path)
    if "id" not in cols:
        raise SubmissionError(f"no 'id' column (columns: {_show(list(cols), 6)})", path)
    n_classes = int(spec.target.num_classes or 0)
    score_cols = [c for c in cols if _KNOWN_COLUMNS_RE.match(c)]
    scored = _score_submission_rules(spec, cols, score_cols, path)
    unknown = [c for c in cols if c not in ("id", "condition", "prediction", *(("score",) if scored else ()))
               and c not in score_cols]
    if unknown:
        raise SubmissionError(f"unexpected column {unknown[0]!r}; allowed: id, condition, prediction or "
                              f"score_0..score_{{C-1}}" + (" or score" if scored else ""), path)
    if "prediction" in cols and score_cols:
        raise SubmissionError("has both 'prediction' and score_* columns; give one or the other", path)
    if "prediction" not in cols and not score_cols and not scored:
        raise SubmissionError(f"no 'prediction' column and no score_0..score_{{C-1}} columns (columns: {_show(list(cols), 6)})", path)

    strings_ok = table.fmt == "csv"
    ids = _ids_column(path, cols["id"])
    conds = _conditions_column(path, cols.get("condition"), table.rows, spec)
    if spec.target.type == "regression":
        if score_cols:
            raise SubmissionError("a regression task takes a 'prediction' column of real values, not score_* columns", path)
        values = _numbers(path, "prediction", cols["prediction"], limits, strings_ok)
        kind = "values"
    elif scored:
        values, kind = _probabilities(path, "score", cols["score"], limits, strings_ok), "scores"
    elif score_cols:
        expected = [f"score_{k}" for k in range(n_classes)]
        if sorted(score_cols, key=lambda c: int(c[6:])) != expected:
            raise SubmissionError(f"score columns must be exactly {expected[0]}..{expected[-1]} for {n_classes} classes, "
                                  f"got {_show(sorted(score_cols), 4)}", path)
        if spec.target.type == "multilabel":  # per-label probabilities, kept as [N, C]
            values = np.stack([_probabilities(path, c, cols[c], limits, strings_ok) for c in expected], axis=1)
        else:
            scores = np.stack([_numbers(path, c, cols[c], limits, strings_ok) for c in expected], axis=1)
            values = scores.argmax(1).astype(np.int64)
        kind = "scores"
    else:
        values = _class_labels(path, cols["prediction"], spec, limits, strings_ok)
        kind = "labels"

    present_conds = list(dict.fromkeys(conds.tolist()))
    if "clean" not in present_conds:
        raise SubmissionError("no rows for the 'clean' condition (rows without a condition count as clean)", path)
    wanted = list(conditions) if conditions else present_conds
    for c in wanted:
        if c not in present_conds:
            raise SubmissionError(f"no rows for condition {c!r}", path)
    expected_n = len(labels.ids)
    out: dict[str, np.ndarray] = {}
    for c in present_conds:
        rows = np.flatnonzero(conds == c)
        cond_ids = [ids[i] for i in rows]
        positions = np.fromiter((labels.index.get(i, -1) for i in cond_ids), dtype=np.int64, count=len(cond_ids))
        where = "" if c == "clean" else f" under condition {c!r}"
        unknown_ids = [cond_ids[k] for k in np.flatnonzero(positions < 0)]
        if unknown_ids:
            raise SubmissionError(f"{len(unknown_ids)} unknown id(s){where} that are not in the test split "
                                  f"(first: {_show(unknown_ids)})", path)
        counts = np.bincount(positions, minlength=expected_n)
        if (counts > 1).any():
            dup = [labels.ids[k] for k in np.flatnonzero(counts > 1)]
            raise SubmissionError(f"{len(dup)} duplicate id(s){where} (first: {_show(dup)}); each test id must appear "
                                  "exactly once per condition", path)
        if (counts == 0).any():
            missing = [labels.ids[k] for k in np.flatnonzero(counts == 0)]
            raise SubmissionError(f"{len(missing)} of {expected_n} test id(s) missing{where} (first: {_show(missing)})", path)
        if c not in wanted:
            continue
        aligned = np.empty((expected_n, *values.shape[1:]), dtype=values.dtype)
        aligned[positions] = values[rows]
        out[c] = aligned
    ordered = {c: out[c] for c in wanted}
    return ParsedPredictions(ordered, table.fmt, table.rows, kind,
                             {"conditions_in_file": present_conds})


# --------------------------------------------------------------------------------------------
# retrieval embeddings (.npz)
# --------------------------------------------------------------------------------------------

NPZ_KEYS = ("image_ids", "image_embeddings", "caption_ids", "caption_embeddings")


@dataclass
class RetrievalSubmission:
    image_embeddings: np.ndarray  # aligned to the gallery's image order
    caption_embeddings: np.ndarray  # aligned to the gallery's caption order
    caption_image_index: np.ndarray
    dim: int


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
                if key not in NPZ_KEYS:
                    raise SubmissionError(f"unexpected array {key!r}; expected exactly {', '.join(NPZ_KEYS)}", path)
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
        raise SubmissionError(f"corrupt .npz file: {_one_line(exc)}", path) from None
    missing = [k for k in NPZ_KEYS if k not in headers]
    if missing:
        raise SubmissionError(f"missing array {missing[0]!r}; the .npz must hold {', '.join(NPZ_KEYS)}", path)
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
    return headers


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


def _align(path: Path, what: str, submitted: list[str], gallery: Sequence[str]) -> np.ndarray:
    """Index into `submitted` for each gallery id (every id exactly once)."""
    pos: dict[str, int] = {}
    dup = []
    for k, i in enumerate(submitted):
        if i in pos:
            dup.append(i)
        pos[i] = k
    if dup:
        raise SubmissionError(f"{len(dup)} duplicate {what} id(s) (first: {_show(dup)})", path)
    gallery_set = set(gallery)
    unknown = [i for i in submitted if i not in gallery_set]
    if unknown:
        raise SubmissionError(f"{len(unknown)} unknown {what} id(s) not in the test gallery (first: {_show(unknown)})", path)
    missing = [g for g in gallery if g not in pos]
    if missing:
        raise SubmissionError(f"{len(missing)} of {len(gallery)} {what} id(s) missing (first: {_show(missing)})", path)
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
    except SubmissionError:
        raise
    except Exception as exc:  # zlib.error, ValueError, EOFError for corrupt members
        raise SubmissionError(f"cannot read the .npz arrays: {_one_line(exc)}", path) from None
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
                               np.asarray(caption_image_index, dtype=np.int64), int(img_emb.shape[1]))


# --------------------------------------------------------------------------------------------
# model submissions
# --------------------------------------------------------------------------------------------


@dataclass
class ModelSpec:
    kind: str  # baseline | factory | exported
    source: Path | None  # factory .py or .pt2 file
    attr: str | None  # factory function name
    weights: Path | None
    files: list[Path]


_FACTORY_RE = re.compile(r"^(?P<file>.+\.py):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)$")


def parse_model_spec(model: str, weights: str | Path | None, limits: Limits | None = None) -> ModelSpec:
    """`baseline` (+ --weights safetensors), `path/file.py:function` (+ optional --weights
    safetensors) or `model.pt2` (torch.export program). Pickled checkpoints are refused."""
    limits = limits or Limits.from_env()
    w = Path(weights) if weights else None
    if model == "baseline":
        if w is None:
            raise SubmissionError("--model baseline needs --weights FILE.safetensors (a run's best.safetensors)")
        w = check_safetensors(w, limits)
        return ModelSpec("baseline", None, None, w, [w])
    m = _FACTORY_RE.match(model)
    if m:
        src = Path(m.group("file"))
        if not src.is_file():
            raise SubmissionError("factory file not found", src)
        if src.stat().st_size > limits.max_model_bytes:
            raise SubmissionError("factory file is over the upload limit (MMBENCH_MAX_MODEL_BYTES)", src)
        if w is not None:
            w = check_safetensors(w, limits)
        return ModelSpec("factory", src, m.group("attr"), w, [src] + ([w] if w else []))
    p = Path(model)
    if p.suffix.lower() == ".py" or model.endswith(".py:"):
        raise SubmissionError(f"--model {model!r}: name the factory function, as in path/to/file.py:build")
    if p.suffix.lower() == ".pt2":
        if w is not None:
            raise SubmissionError("--weights is not used with a .pt2 program (its weights are inside it)", w)
        p = check_file(p, limits, "exported program", model=True)
        check_pt2_archive(p, limits)
        return ModelSpec("exported", p, None, None, [p])
    if p.exists():
        check_file(p, limits, "model file", model=True)  # refuses pickles with the explanation
        if _is_safetensors(p):
            raise SubmissionError("a safetensors file holds weights only: use --model baseline --weights FILE, or "
                                  "--model path/file.py:build --weights FILE", p)
        raise SubmissionError("unrecognised model file; expected a torch.export .pt2 program", p)
    raise SubmissionError(f"--model {model!r}: expected 'baseline' (with --weights), 'path/to/file.py:build' or a "
                          "torch.export 'model.pt2' file")


def check_pt2_archive(path: Path, limits: Limits) -> None:
    """Refuse .pt2 archives that carry pickled payloads: torch.export.load would unpickle
    pickled weights/constants with weights_only=False (arbitrary code). Only the sample
    inputs are torch.save files; the sandbox worker loads those with weights_only=True."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if total > limits.max_model_bytes:
                raise SubmissionError(f"archive expands to {total:,} bytes, over the limit of {limits.max_model_bytes:,} "
                                      "(MMBENCH_MAX_MODEL_BYTES)", path)
            names = [i.filename for i in infos]
            if not any("/models/" in "/" + n and n.endswith(".json") for n in names):
                raise SubmissionError("not a torch.export program (no models/*.json in the archive)", path)
            for n in names:
                parts = n.split("/")
                if ".." in parts or n.startswith("/"):
                    raise SubmissionError(f"archive member {n!r} has an unsafe path", path)
                low = n.lower()
                if low.endswith((".pkl", ".pickle")):
                    raise SubmissionError(f"archive member {n!r} is a pickle; refused", path)
                if low.endswith(".pt") and "/sample_inputs/" not in "/" + n:
                    raise SubmissionError(f"archive member {n!r} is a pickled tensor file (legacy format); refused — "
                                          "re-save with torch.export.save from a current torch", path)
                if low.endswith(".pt"):
                    with zf.open(n) as fh:
                        if fh.read(4) != b"PK\x03\x04":
                            raise SubmissionError(f"archive member {n!r} is a raw pickle; refused", path)
                if low.endswith("_config.json") and "/data/" in "/" + n:
                    try:
                        cfg = json.loads(zf.read(n))
                    except (ValueError, UnicodeDecodeError):
                        raise SubmissionError(f"archive member {n!r} is not valid JSON", path) from None
                    entries = cfg.get("config", {}) if isinstance(cfg, dict) else {}
                    for fqn, meta in (entries.items() if isinstance(entries, dict) else []):
                        if isinstance(meta, dict) and (meta.get("use_pickle") or str(meta.get("path_name", "")).startswith("custom_obj")):
                            raise SubmissionError(f"archive stores {fqn!r} as a pickle; pickled payloads are refused", path)
    except SubmissionError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise SubmissionError(f"not a valid .pt2 archive: {_one_line(exc)}", path) from None


RETRIEVAL_PROGRAMS = ("encode_image", "encode_text")


def program_names(path: Path) -> list[str]:
    """Names of the programs in a .pt2 archive (``models/<name>.json``); torch.export.save writes one, 'model'."""
    with zipfile.ZipFile(path) as zf:
        return sorted({n.rsplit("/", 1)[-1][:-5] for n in zf.namelist() if "/models/" in "/" + n and n.endswith(".json")})


def check_retrieval_program(path: Path) -> None:
    """A retrieval .pt2 holds one program per modality, named encode_image and encode_text."""
    names = program_names(path)
    missing = [n for n in RETRIEVAL_PROGRAMS if n not in names]
    if missing:
        raise SubmissionError(f"a retrieval .pt2 must hold two exported programs named {' and '.join(RETRIEVAL_PROGRAMS)}; "
                              f"this one holds {', '.join(names) or 'none'} (write it with "
                              "mmbench.evaluation.submissions.tables.save_retrieval_program)", path)


def save_retrieval_program(path: str | Path, encode_image: Any, encode_text: Any) -> Path:
    """Write the two exported programs of a retrieval model (``torch.export.export`` of a module
    whose forward is the image / the text encoder) into one .pt2 archive, in the layout
    ``--model FILE.pt2`` expects on a retrieval task."""
    from torch.export import ExportedProgram
    # what torch.export.save uses, with several programs; listed in torch.export's API reference
    # (docs.pytorch.org/docs/stable/export/api_reference) despite its module's underscore
    from torch.export.pt2_archive._package import package_pt2

    for name, ep in (("encode_image", encode_image), ("encode_text", encode_text)):
        if not isinstance(ep, ExportedProgram):
            raise SubmissionError(f"{name} must be a torch.export.ExportedProgram, got {type(ep).__name__}")
    path = Path(path)
    package_pt2(path, exported_programs={"encode_image": encode_image, "encode_text": encode_text})
    return path


def submission_hash(files: Sequence[Path]) -> tuple[str, dict[str, str]]:
    """sha256 of one file, or sha256 over the (name, sha256) lines of several."""
    import hashlib

    from mmbench.core.io import sha256_file

    per = {p.name: sha256_file(p) for p in files}
    if len(files) == 1:
        return next(iter(per.values())), per
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{per[p.name]}\n".encode())
    return h.hexdigest(), per


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or "") or ".." in name:
        raise SubmissionError(f"invalid submission name {name!r}: use 1-100 letters, digits, '.', '_', '+' or '-', "
                              "starting with a letter or digit (no path separators or '..')")
    return name
