"""Predictions tables: parse and validate a predictions file against the task's test labels.

A predictions file is data: CSV, JSON lines or Parquet with an ``id`` column, an optional
``condition`` column (missing-modality condition; empty = ``clean``) and either a
``prediction`` column (class label or real value) or class scores ``score_0 .. score_{C-1}``
(multi-label: each label's probability), or ``score`` (the probability of label 1) for a task
scored by AUROC. Every problem raises :class:`~mmbench.core.errors.SubmissionError` naming the file.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmbench.core.errors import SubmissionError
from mmbench.evaluation.submissions.checks import check_file, Limits, one_line, show_values


TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_KNOWN_COLUMNS_RE = re.compile(r"^score_(\d+)$")


# --------------------------------------------------------------------------------------------
# labels of the test split
# --------------------------------------------------------------------------------------------


@dataclass
class TestLabels:
    ids: list[str]
    targets: np.ndarray
    fingerprint: str
    index: dict[str, int] = field(default_factory=dict)
    test_set: Any = None  # mmbench.data.testset.TestSet: protocol and test-set fingerprint

    def __post_init__(self) -> None:
        self.index = {i: k for k, i in enumerate(self.ids)}


def load_test_labels(spec, data_dir: str | Path | None = None, role: str = "test") -> TestLabels:
    """Ids and targets of the task's test split, or of the split playing `role` (validation),
    from a loader's labels-only path when it has one; the test split's come with the test set's
    protocol and fingerprint."""
    from mmbench.core.errors import SpecError
    from mmbench.data.splits import task_dataset
    from mmbench.data.testset import split_labels, task_test_set

    split_name = getattr(spec.splits, role)
    if split_name is None:
        raise SpecError(f"task {spec.name!r} has no {role} split", spec.source)
    dataset = task_dataset(spec, data_dir)
    if role == "test":
        test_set = task_test_set(spec, data_dir, dataset)
        return TestLabels(test_set.ids, test_set.targets, dataset.fingerprint(), test_set=test_set)
    ids, targets = split_labels(dataset, split_name)
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
    """Every cell as a string (Python's csv module: RFC 4180 quoting, blank lines skipped; no
    pandas, whose import alone is most of a cold `evaluate --predictions`)."""
    import csv

    text = _decode_utf8(path, path.read_bytes())
    if not text.strip():
        raise SubmissionError("CSV file has no content", path)
    if "\x00" in text:
        raise SubmissionError("CSV file contains NUL bytes (binary data?)", path)
    # the file's size is already bounded by the limits; the csv module's field limit is process-wide,
    # so it is raised for this read only and restored (other readers keep their protection)
    previous_limit = csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader if row]
    except csv.Error as exc:
        raise SubmissionError(f"malformed CSV: line {reader.line_num}: {one_line(exc)}", path) from None
    finally:
        csv.field_size_limit(previous_limit)
    if not rows:
        raise SubmissionError("CSV file has no header row", path)
    cols = rows[0][1]
    if "" in cols:
        raise SubmissionError(f"CSV header has an empty column name (column {cols.index('') + 1}); "
                              "is there a trailing comma or an index column?", path)
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        raise SubmissionError(f"CSV header repeats a column name ({dupes[0]!r})", path)
    body = rows[1:]
    if len(body) > limits.max_rows:
        raise SubmissionError(f"{len(body):,} rows, over the limit of {limits.max_rows:,} (MMBENCH_MAX_ROWS)", path)
    for line, row in body:
        if len(row) != len(cols):
            raise SubmissionError(f"malformed CSV: the row on line {line} has {len(row)} field(s), the header "
                                  f"{len(cols)} (a truncated file, or a comma inside an unquoted value?)", path)
    columns = {}
    for k, c in enumerate(cols):
        values = np.empty(len(body), dtype=object)
        values[:] = [row[k] for _, row in body]
        columns[c] = values
    return RawTable(columns, "csv", len(body))


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
            raise SubmissionError(f"line {lineno}: invalid JSON: {one_line(exc)}", path) from None
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
        raise SubmissionError(f"not a valid Parquet file: {one_line(exc)}", path) from None
    rows = pf.metadata.num_rows
    if rows > limits.max_rows:
        raise SubmissionError(f"{rows:,} rows, over the limit of {limits.max_rows:,} (MMBENCH_MAX_ROWS)", path)
    names = list(pf.schema_arrow.names)
    if len(set(names)) != len(names):
        raise SubmissionError("Parquet file repeats a column name", path)
    try:
        table = pf.read()
    except Exception as exc:
        raise SubmissionError(f"cannot read Parquet data: {one_line(exc)}", path) from None
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
            raise SubmissionError(f"row {i + 1}: 'id' must be a string or an integer, got {kind} {one_line(repr(v), 40)}", path)
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
                raise SubmissionError(f"row {i + 1}: {column!r} must be a number, got the string {one_line(repr(v), 40)}", path)
            if isinstance(v, str):
                s = v.strip()
                if not s:
                    raise SubmissionError(f"row {i + 1}: empty {column!r}", path)
                try:
                    x = float(s)
                except ValueError:
                    raise SubmissionError(f"row {i + 1}: {column!r} is not a number: {one_line(repr(v), 40)}", path) from None
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
    from mmbench.evaluation.targets import uses_scores

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
        raise SubmissionError(f"no 'id' column (columns: {show_values(list(cols), 6)})", path)
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
        raise SubmissionError(f"no 'prediction' column and no score_0..score_{{C-1}} columns (columns: {show_values(list(cols), 6)})", path)

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
                                  f"got {show_values(sorted(score_cols), 4)}", path)
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
                                  f"(first: {show_values(unknown_ids)})", path)
        counts = np.bincount(positions, minlength=expected_n)
        if (counts > 1).any():
            dup = [labels.ids[k] for k in np.flatnonzero(counts > 1)]
            raise SubmissionError(f"{len(dup)} duplicate id(s){where} (first: {show_values(dup)}); each test id must appear "
                                  "exactly once per condition", path)
        if (counts == 0).any():
            missing = [labels.ids[k] for k in np.flatnonzero(counts == 0)]
            raise SubmissionError(f"{len(missing)} of {expected_n} test id(s) missing{where} (first: {show_values(missing)})", path)
        if c not in wanted:
            continue
        aligned = np.empty((expected_n, *values.shape[1:]), dtype=values.dtype)
        aligned[positions] = values[rows]
        out[c] = aligned
    ordered = {c: out[c] for c in wanted}
    return ParsedPredictions(ordered, table.fmt, table.rows, kind,
                             {"conditions_in_file": present_conds})
