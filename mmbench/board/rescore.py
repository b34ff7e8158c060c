"""Re-scoring a board's retrieval entries from their stored test embeddings under the current
rules (`mmbench leaderboard rescore`).

When a scoring rule changes (issue 32: recall@k under uniformly random tie-breaking, per-query
records, missing-modality counts), the shipped entries are brought up to it from what they
store, not from a new training run: each retrieval entry's `.npz` (checked against the sha256
the entry records) is scored again as `leaderboard verify` scores it, and the entry is
rewritten in place with the new metrics, robustness summary and the retrieval fields of
``extra`` (``test_queries``, ``missing``, ``missing_images``, ``present_only``); everything
else (seed, hardware, timings, created, version) is kept, so `verify` then passes. Entries of
other task kinds are left as they are (their stored predictions are rescored by `verify` under
unchanged rules). Every entry is recomputed before any is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmbench.core.errors import DataError

RETRIEVAL_FIELDS = ("test_queries", "missing", "missing_images", "present_only")


def rescore_entry(board_dir: Path, entry: Any, data_dir: Any = None) -> Any:
    """`entry` re-scored from its stored embeddings (a retrieval entry), or None (not a
    retrieval entry, or no stored predictions)."""
    from mmbench.core.io import safe_join, sha256_file
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.scoring import evaluate_predictions

    spec = get_task(entry.task)
    if spec.target.type != "retrieval" or not entry.predictions_file:
        return None
    path = safe_join(Path(board_dir), entry.predictions_file)
    if not path.is_file():
        raise DataError(f"stored predictions {entry.predictions_file} not found", path)
    expected = entry.extra.get("predictions_sha256") or (entry.submission_hash if entry.kind == "predictions" else None)
    if expected and sha256_file(path) != expected:
        raise DataError("stored predictions changed (sha256 does not match the entry): not re-scored", path)
    fresh = evaluate_predictions(spec, path, entry.name, data_dir=data_dir, n_resamples=0)
    if entry.test_set_fingerprint and fresh.test_set_fingerprint != entry.test_set_fingerprint:
        raise DataError(f"entry scored on test set {entry.test_set_fingerprint}, the test set here is "
                        f"{fresh.test_set_fingerprint}: not re-scored", path)
    extra = {k: v for k, v in entry.extra.items() if k not in RETRIEVAL_FIELDS}
    extra |= {k: fresh.extra[k] for k in RETRIEVAL_FIELDS if k in fresh.extra}
    return entry.model_copy(update={"metrics": fresh.metrics, "robustness": fresh.robustness, "extra": extra})


def rescore_board(board_dir: str | Path, data_dir: Any = None, tasks: list[str] | None = None) -> list[tuple[Path, Any, Any]]:
    """Re-score every retrieval entry of `board_dir` (of `tasks`, when given) and rewrite the
    changed ones in place. Returns (entry path, before, after) per retrieval entry."""
    from mmbench.board.entries import entry_filename, read_entry
    from mmbench.core.io import atomic_write_json

    board = Path(board_dir)
    if not board.is_dir():
        raise DataError("leaderboard folder not found", board)
    done = []
    for d in sorted(p for p in board.iterdir() if p.is_dir() and (not tasks or p.name in tasks)):
        for f in sorted(d.glob("*.json")):
            entry = read_entry(f)
            after = rescore_entry(board, entry, data_dir)
            if after is not None:
                if f.name != entry_filename(entry):
                    raise DataError(f"entry file name does not match its entry ({entry_filename(entry)})", f)
                done.append((f, entry, after))
    for f, before, after in done:
        if after.model_dump() != before.model_dump():
            atomic_write_json(f, after.to_json())
    return done
