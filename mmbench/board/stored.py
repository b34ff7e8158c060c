"""An entry's stored per-item predictions under every condition, read from its stored
predictions file in any submission format (CSV, JSON lines or Parquet; labels, class scores or
label-1 scores), the file `leaderboard verify` checks and rescores.

The board reads them for every test it runs beyond the clean condition (the per-condition
verdicts of :mod:`mmbench.board.decisions`, the robustness verdicts of
:mod:`mmbench.board.robustness`). The file is parsed by the submission parser itself
(:func:`mmbench.evaluation.submissions.tables.parse_predictions`) against the entry's own
clean per-item record (``extra.test_items``: ids and targets), so no data is needed, and each
condition's predictions are kept in the form of that record
(:func:`mmbench.evaluation.significance.item_record`): class labels, real values, or label-1
scores for a task scored from scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def condition_predictions(board_dir: str | Path | None, result: Any, conditions: Any = None) -> dict[str, np.ndarray] | None:
    """{condition: predictions in ``extra.test_items["ids"]`` order} of one entry, for the
    conditions its stored file holds (only `conditions`, when given); the clean condition is
    the stored record's own. None when the entry stores no per-item record or no readable
    predictions file under `board_dir` (the board then shows no test for it)."""
    it = (result.extra or {}).get("test_items")
    if board_dir is None or not result.predictions_file or not it or not it.get("ids"):
        return None
    path = Path(board_dir) / result.predictions_file
    if not path.is_file() or path.suffix.lower() == ".npz":
        return None
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, result.task, len(it["ids"]),
           bool(result.extra.get("clipped_to_range")))
    if key not in _CACHE:
        if len(_CACHE) >= CACHE_FILES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _read(path, result, it)
    out = _CACHE[key]
    if out is None:
        return None
    wanted = set(conditions) if conditions is not None else set(out)
    return {c: p for c, p in out.items() if c in wanted}


CACHE_FILES = 512  # parsed predictions files kept (a board page reads each for several tests)
_CACHE: dict[tuple, dict[str, np.ndarray] | None] = {}


def _read(path: Path, result: Any, it: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Every condition of one stored predictions file in the form of the entry's record."""
    from mmbench.core.errors import MMBenchError
    from mmbench.data.tasks import get_task, task_names
    from mmbench.evaluation.scoring import check_range
    from mmbench.evaluation.significance import item_record
    from mmbench.evaluation.submissions.tables import TestLabels, parse_predictions

    try:
        labels = TestLabels(list(it["ids"]), np.asarray(it["targets"]), "")
        task = result.task.partition("@")[0]
        if task not in task_names():  # a task this install does not define: a plain id/condition/prediction table
            preds = _plain_table(path, labels)
        else:
            spec = get_task(task)
            if result.metrics:  # the conditions the entry was scored under (a mismatch grid's differ from the task's)
                spec = spec.model_copy(update={"missing": spec.missing.model_copy(update={"conditions": list(result.metrics)})})
            preds = parse_predictions(path, spec, labels).predictions
            if result.extra.get("clipped_to_range"):
                preds = check_range(spec, preds, path, clip=True)
    except (MMBenchError, KeyError, ValueError, TypeError):
        return None
    return {cond: np.asarray(item_record(it["ids"], it["targets"], p, it["target_type"], it.get("num_classes"),
                                         scores=bool(it.get("scores")))["predictions"]) for cond, p in preds.items()}


def _plain_table(path: Path, labels: Any) -> dict[str, np.ndarray]:
    """{condition: prediction column in `labels` order} of a table with ``id``, ``condition`` and
    a numeric ``prediction`` column, read without a task spec (conditions as written)."""
    from mmbench.evaluation.submissions.tables import read_table

    cols = read_table(path).columns
    ids = [str(i) for i in cols["id"]]
    conds = [c if isinstance(c, str) and c.strip() else "clean" for c in cols.get("condition", [None] * len(ids))]
    values = np.asarray(cols["prediction"], dtype=float)
    out: dict[str, np.ndarray] = {}
    for c in dict.fromkeys(conds):
        rows = {i: v for i, k, v in zip(ids, conds, values) if k == c}
        out[c] = np.asarray([rows[i] for i in labels.ids])
    return out
