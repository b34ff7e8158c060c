"""What the data's own presence does to scoring (issue 32, "no credit for an empty input").

- **Nothing present.** An item the task's own data leave with no modality (no condition empties
  one, :mod:`mmbench.data.masks`) says nothing about a model's use of its inputs: what it scores
  there is its output on nothing. Such items are scored apart, under the clean condition, as
  ``extra.nothing_present`` (their count and metrics), and every condition's metrics, hence
  relative and effective robustness, are computed over the other items.
- **One condition per distinct mask.** Conditions whose masks, ANDed with the data's presence,
  are equal are evaluated once under the first name in the task's order; the others are listed
  in ``extra.condition_aliases`` ({name: the name it equals}), and the task's modalities that no
  test item has in ``extra.absent_modalities`` (they yield no condition of their own).

Pure numpy (the labels-only scoring path uses it too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from mmbench.data.masks import Condition

NOTHING_PRESENT = "nothing_present"
ALIASES = "condition_aliases"
ABSENT = "absent_modalities"


def scored_items(present: Mapping[str, np.ndarray] | None, n: int) -> np.ndarray:
    """Bool [n]: the items the data give at least one modality (all, without presence)."""
    if not present:
        return np.ones(n, dtype=bool)
    return np.logical_or.reduce([np.asarray(v, dtype=bool) for v in present.values()])


def distinct_with_report(conditions: Sequence[Condition], ids: Sequence[str], modalities: Sequence[str], seed: int,
                         split: str, present: Mapping[str, np.ndarray] | None) -> tuple[list[Condition], dict[str, Any]]:
    """(the conditions to evaluate, the ``extra`` fields naming aliases and absent modalities)."""
    from mmbench.data.masks import absent_modalities, distinct_conditions

    distinct, aliases = distinct_conditions(conditions, ids, modalities, seed, split, present)
    extra: dict[str, Any] = {}
    if aliases:
        extra[ALIASES] = aliases
    absent = absent_modalities(modalities, present)
    if absent:
        extra[ABSENT] = absent
    return distinct, extra


def score_apart(score: Callable[[np.ndarray, np.ndarray], dict[str, float]], y_true: np.ndarray,
                predictions: Mapping[str, np.ndarray], scored: np.ndarray) -> tuple[dict[str, dict[str, float]], dict]:
    """({condition: metrics over the scored items}, the ``extra`` field of the items with
    nothing present: their ids' count and their clean metrics, where scorable)."""
    y_true = np.asarray(y_true)
    if scored.all():
        return {c: score(y_true, p) for c, p in predictions.items()}, {}
    per = {c: score(y_true[scored], np.asarray(p)[scored]) for c, p in predictions.items()}
    apart: dict[str, Any] = {"items": int((~scored).sum())}
    if "clean" in predictions:
        try:
            values = score(y_true[~scored], np.asarray(predictions["clean"])[~scored])
            apart["clean"] = {k: v for k, v in values.items() if np.isfinite(v)}
        except (ValueError, ZeroDivisionError):  # a metric undefined on so few items
            pass
    return per, {NOTHING_PRESENT: apart}
