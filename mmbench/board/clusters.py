"""The resampling unit of stored entries: `mmbench leaderboard clusters` writes each entry's
per-item cluster keys (``extra.test_items.clusters``, parallel to ``ids``, and ``unit``) from
its task's ``cluster`` rule over the test split read from the data, so that the board's tests
resample clusters (a video's clips together) from the entries alone. Entries scored after the
rule existed carry the keys already (:func:`mmbench.evaluation.scoring.item_record`); this
fills in the older ones and rewrites keys that no longer match the rule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from mmbench.core.errors import DataError, MMBenchError
from mmbench.core.io import atomic_write_json


def write_clusters(board_dir: str | Path, data_dir: Any = None) -> list[str]:
    """Give every entry with per-item records on `board_dir` its task's cluster keys; returns
    one line per task (entries updated, unchanged, the units and their sizes). A task without
    a ``cluster`` rule has its entries' keys removed (each item its own unit)."""
    from mmbench.board.entries import entry_filename, load_entries
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.significance import with_clusters
    from mmbench.evaluation.submissions.tables import load_test_labels

    board = Path(board_dir)
    if not board.is_dir():
        raise MMBenchError("leaderboard folder not found", board)
    lines = []
    by_task: dict[str, list[Any]] = {}
    for e in load_entries(board):
        if (e.extra or {}).get("test_items"):
            by_task.setdefault(e.task, []).append(e)
    for task, entries in sorted(by_task.items()):
        spec = get_task(task)
        keys: dict[str, str] = {}
        if spec.cluster is not None:
            labels = load_test_labels(spec, data_dir)  # the test split's ids and targets, from the data
            keys = dict(zip(map(str, labels.ids), spec.cluster.keys(labels.ids, labels.targets)))
        changed = 0
        for e in entries:
            it = e.extra["test_items"]
            missing = [i for i in it["ids"] if i not in keys] if keys else []
            if missing:
                raise DataError(f"task {task!r}: entry {e.name!r} has test id {missing[0]!r}, not in the test split "
                                f"({len(missing)} such ids)", board / task / entry_filename(e))
            new = {k: v for k, v in it.items() if k not in ("clusters", "unit")}
            if keys:
                new |= with_clusters([keys[i] for i in it["ids"]], spec.cluster.unit)
            if new != it:
                extra = dict(e.extra) | {"test_items": new}
                atomic_write_json(board / task / entry_filename(e), e.model_copy(update={"extra": extra}).to_json())
                changed += 1
        if keys:
            sizes = Counter(Counter(keys[i] for i in entries[0].extra["test_items"]["ids"]).values())
            spread = ", ".join(f"{c} of {s} item{'s' if s > 1 else ''}" for s, c in sorted(sizes.items()))
            unit = f"{sum(sizes.values())} {spec.cluster.unit}s ({spread})"
        else:
            unit = "each item its own unit"
        lines.append(f"{task}: {changed} of {len(entries)} entries updated; {unit}")
    return lines
