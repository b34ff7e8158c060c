"""Baseline runs as leaderboard entries that carry their test predictions.

A `reproduce` run stores the test predictions of every condition next to its result, in
`<run>/predictions.parquet` (columns `id`, `condition`, `prediction` or, multi-label,
`score_0..score_{C-1}`: the predictions-file format `mmbench evaluate --predictions` reads), and records the file's sha256 in the result's
`extra["predictions_sha256"]`. Publishing a run copies that file to
`<board>/<task>/predictions/<entry stem>.parquet` and writes the entry with `predictions_file`
pointing at it, so `mmbench leaderboard verify` recomputes the entry from the task's labels.
`mmbench leaderboard publish RUNS...` does this for every finished run under RUNS; it writes
only the entries of the runs it finds, so a task's entries are added without touching others.

A retrieval run has no per-condition table: it stores its test embeddings instead, in
`<run>/predictions.npz`, the `.npz` a retrieval submitter gives (`image_ids`,
`image_embeddings`, `caption_ids`, `caption_embeddings`, and the `test_set_fingerprint` they were
made for), float16 (the result is scored from those float16 values, so the stored file
recomputes it exactly); it is published as `<board>/<task>/predictions/<entry stem>.npz`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.core.errors import DataError

RUN_PREDICTIONS = "predictions.parquet"
RUN_EMBEDDINGS = "predictions.npz"  # a retrieval run's test embeddings
EMBEDDING_KEYS = ("image_ids", "image_embeddings", "caption_ids", "caption_embeddings")


def predictions_parquet(ids: list[str], predictions: dict[str, np.ndarray]) -> bytes:
    """Parquet bytes of one row per (condition, id). Real values are stored as float32 when
    that is exact (a CPU model's outputs are), so scoring the file gives the same metrics."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    conds = list(predictions)
    values = np.concatenate([np.asarray(predictions[c]) for c in conds])
    if values.dtype.kind == "f" and np.array_equal(values.astype(np.float32).astype(values.dtype), values):
        values = values.astype(np.float32)
    elif values.dtype.kind in "iu":
        values = values.astype(np.int64 if values.max(initial=0) > 127 or values.min(initial=0) < -128 else np.int8)
    n = len(ids)
    columns = {
        "id": pa.array(ids * len(conds)).dictionary_encode(),
        "condition": pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(len(conds), dtype=np.int32), n)),
                                                    pa.array(conds)),
    }
    if values.ndim == 2:  # multi-label: one probability column per label, as predictions files give them
        columns |= {f"score_{j}": pa.array(values[:, j]) for j in range(values.shape[1])}
    else:
        columns["prediction"] = pa.array(values)
    table = pa.table(columns)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=19)
    return buf.getvalue()


def embeddings_npz(embeddings: dict[str, Any], test_set: str | None = None) -> bytes:
    """Bytes of the retrieval `.npz` (EMBEDDING_KEYS, in the gallery's order) that `mmbench
    evaluate --predictions` scores: ids as int64 when they are all integers (COCO's), else
    strings; embeddings as given; `test_set`, when known, as the file's claimed fingerprint."""
    from mmbench.evaluation.submissions.retrieval import CLAIM_KEY

    arrays: dict[str, np.ndarray] = {}
    for key in EMBEDDING_KEYS:
        value = embeddings[key]
        if key.endswith("_ids"):
            ids = [str(i) for i in value]
            value = np.asarray([int(i) for i in ids], dtype=np.int64) if all(i.isdigit() for i in ids) else np.asarray(ids)
        arrays[key] = np.asarray(value)
    if test_set:
        arrays[CLAIM_KEY] = np.asarray([test_set])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def run_predictions_bytes(result: Any, predictions: dict[str, Any], ids: list[str] | None = None) -> tuple[bytes, str]:
    """(bytes, suffix) of the stored test predictions of `result`: a retrieval result's
    embeddings as an .npz, any other result's per-condition predictions (`ids` in order) as
    Parquet."""
    if "image_embeddings" in predictions:
        return embeddings_npz(predictions, result.test_set_fingerprint), ".npz"
    if ids is None:
        raise ValueError("per-condition predictions need their test ids")
    return predictions_parquet([str(i) for i in ids], predictions), ".parquet"


def attach_run_predictions(run_dir: Path, result: Any, ids: list[str], predictions: dict[str, np.ndarray]) -> Any:
    """Write `run_dir`/predictions.parquet (a retrieval run: predictions.npz, its test
    embeddings) atomically; the result with its sha256 in `extra`."""
    import hashlib

    from mmbench.core.io import atomic_write_bytes

    data, suffix = run_predictions_bytes(result, predictions, ids)
    atomic_write_bytes(Path(run_dir) / (RUN_EMBEDDINGS if suffix == ".npz" else RUN_PREDICTIONS), data)
    return result.model_copy(update={"extra": {**result.extra, "predictions_sha256": hashlib.sha256(data).hexdigest()}})


def run_predictions_file(run_dir: Path) -> Path | None:
    """The stored test predictions of a run folder (Parquet, or a retrieval run's .npz), if any."""
    return next((p for p in (Path(run_dir) / RUN_PREDICTIONS, Path(run_dir) / RUN_EMBEDDINGS) if p.is_file()), None)


def stored_predictions_path(board_dir: Path, result: Any, suffix: str = ".parquet") -> Path:
    from mmbench.core.io import safe_join
    from mmbench.board.entries import entry_filename

    stem = Path(entry_filename(result)).stem
    return safe_join(safe_join(safe_join(Path(board_dir), result.task), "predictions"), f"{stem}{suffix}")


def _no_predictions(run_dir: Path) -> DataError:
    return DataError(f"run has no stored test predictions ({RUN_PREDICTIONS}, or {RUN_EMBEDDINGS} for retrieval); it "
                     "was trained before mmbench stored them: run `mmbench reproduce` again with --no-resume", run_dir)


def publish_run(board_dir: str | Path, run_dir: str | Path, result: Any, require_predictions: bool = False) -> Path:
    """Write `result` as an entry of `board_dir`, with the run's stored predictions when it has
    them (checked against the sha256 its result recorded). Returns the entry's path."""
    import hashlib

    from mmbench.core.io import atomic_write_bytes
    from mmbench.board.entries import write_entry

    board_dir = Path(board_dir)
    source = run_predictions_file(Path(run_dir))
    expected = result.extra.get("predictions_sha256")
    if expected and source is not None:
        data = source.read_bytes()
        if hashlib.sha256(data).hexdigest() != expected:
            raise DataError("stored predictions do not match the sha256 in the run's result.json", source)
        dest = stored_predictions_path(board_dir, result, source.suffix)
        atomic_write_bytes(dest, data)
        result = result.model_copy(update={"predictions_file": dest.relative_to(board_dir).as_posix()})
    elif require_predictions:
        raise _no_predictions(Path(run_dir))
    return write_entry(board_dir, result, skip_unchanged=True)


def find_runs(roots: list[Path], tasks: list[str] | None = None) -> list[tuple[Path, Any]]:
    """(run folder, Result) of every finished run (`<root>/<task>/<name>/seed<k>/result.json`)."""
    from pydantic import ValidationError

    from mmbench.evaluation.results import Result

    out = []
    for root in roots:
        if not Path(root).is_dir():
            raise DataError("runs folder not found", root)
        for path in sorted(Path(root).glob("*/*/seed*/result.json")):
            try:
                result = Result.model_validate_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, ValidationError) as exc:
                raise DataError(f"unreadable run result: {' '.join(str(exc).split())[:200]}", path) from None
            if tasks and result.task not in tasks:
                continue
            out.append((path.parent, result))
    return out


def publish_runs(board_dir: str | Path, roots: list[Path], tasks: list[str] | None = None) -> list[Path]:
    """Publish every finished run under `roots` (each with its predictions) to `board_dir`.
    Every run is checked before anything is written."""
    runs = find_runs(roots, tasks)
    if not runs:
        raise DataError(f"no finished runs (*/*/seed*/result.json){' of ' + ', '.join(tasks) if tasks else ''}",
                        roots[0] if len(roots) == 1 else None)
    for run_dir, result in runs:
        if run_predictions_file(run_dir) is None or not result.extra.get("predictions_sha256"):
            raise _no_predictions(run_dir)
    return [publish_run(board_dir, run_dir, result, require_predictions=True) for run_dir, result in runs]
