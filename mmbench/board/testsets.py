"""Keep entries of different test sets apart on the board.

Every result stores the fingerprint of the test set it was scored on
(:mod:`mmbench.data.testset`). Two entries of one task with different fingerprints were scored
on different test items, targets, protocol or masks (e.g. Hateful Memes phase 1 against phase 2,
or one machine's COCO test set against another's), so their metrics are not comparable and
must not be ranked together. :func:`partition_by_test_set` gives each such group its own
board label, ``<task>@<fingerprint>`` (``<task>@legacy`` for entries made before fingerprints
were stored, whose test set is unknown); a task whose entries all share one fingerprint keeps
its name. :func:`test_set_note` is the line the board prints under such a group.
"""

from __future__ import annotations

from typing import Any

LEGACY = "legacy"


def partition_by_test_set(entries: list[Any]) -> list[Any]:
    """`entries` with the task of each relabelled ``<task>@<fingerprint>`` where a task's
    entries hold more than one test-set fingerprint (None counting as one, ``legacy``)."""
    seen: dict[str, set] = {}
    for e in entries:
        seen.setdefault(e.task, set()).add(e.test_set_fingerprint)
    mixed = {task for task, fps in seen.items() if len(fps) > 1}
    if not mixed:
        return entries
    return [e.model_copy(update={"task": f"{e.task}@{e.test_set_fingerprint or LEGACY}"}) if e.task in mixed else e
            for e in entries]


def test_set_note(label: str) -> str:
    """Why a group of a task is ranked apart ("" for a task that is not split)."""
    task, sep, fingerprint = label.partition("@")
    if not sep:
        return ""
    what = ("entries without a stored test-set fingerprint (made before fingerprints existed; their test set is "
            "unknown)" if fingerprint == LEGACY else f"entries scored on test set {fingerprint}")
    return (f"{label}: {what}. Task {task}'s entries were scored on different test sets, so each test set is ranked "
            "on its own and never against another (`mmbench data info " + task + "` prints this machine's)")


test_set_note.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
