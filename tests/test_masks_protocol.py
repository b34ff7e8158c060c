"""The masks protocol a result was scored under (issue 32): recorded in every new result,
absent (protocol 1) from the entries shipped before it; their fingerprints recompute under
protocol 1 from their own conditions; a reproduce run keeps a finished run only when it was
scored under the current protocol and conditions."""

from __future__ import annotations

import json

from mmbench.data.masks import MASKS_PROTOCOL, legacy_rate_masks, protocol_masks, parse_condition
from mmbench.data.tasks import get_task
from mmbench.data.testset import task_test_set
from mmbench.evaluation.results import Result, make_result
from mmbench.reproduce import scored_as_now
from tests._datapaths import REPO

TASK = "synthetic-unique"


def _shipped_entry() -> Result:
    return Result.model_validate_json((REPO / "leaderboard" / TASK / "concat__seed0.json").read_text())


def test_shipped_entries_are_protocol_1_and_their_fingerprint_recomputes():
    entry = _shipped_entry()
    assert MASKS_PROTOCOL == 2 and entry.masks_protocol == 1 and "masks_protocol" not in entry.extra
    spec = get_task(TASK)
    old = task_test_set(spec, masks_protocol=1, condition_names=list(entry.metrics))
    assert old.fingerprint == entry.test_set_fingerprint
    assert task_test_set(spec).fingerprint != entry.test_set_fingerprint  # the rate masks changed
    ids = old.ids
    cond = parse_condition("rate:0.5")
    legacy = protocol_masks(cond, ids, spec.modalities, 0, "test", protocol=1)
    assert all((legacy[m] == legacy_rate_masks(0.5, ids, spec.modalities)[m]).all() for m in spec.modalities)
    both_lost = (~legacy["m0"] & ~legacy["m1"]).mean()
    assert 0.2 < both_lost < 0.3  # about r^2 of the items had no modality under protocol 1
    now = protocol_masks(cond, ids, spec.modalities, 0, "test")
    assert not (~now["m0"] & ~now["m1"]).any()


def test_new_results_record_the_protocol_and_reproduce_keeps_only_current_runs():
    entry = _shipped_entry()
    data = json.loads(entry.model_dump_json(by_alias=True))
    fresh = make_result(**{k: v for k, v in data.items() if k not in ("mmbench_version", "hardware", "created")})
    assert fresh.extra["masks_protocol"] == MASKS_PROTOCOL
    assert not scored_as_now(entry, TASK)  # protocol 1: run again
    spec_names = {c.name for c in get_task(TASK).conditions()}
    metrics = {c: {"accuracy": 0.5} for c in spec_names if not c.startswith("pattern:")}
    aliases = {c: "clean" for c in spec_names if c.startswith("pattern:")}
    current = fresh.model_copy(update={"metrics": metrics, "extra": fresh.extra | {"condition_aliases": aliases}})
    assert scored_as_now(current, TASK)
    fewer = current.model_copy(update={"metrics": {c: v for c, v in metrics.items() if c != "rate:m0=0.4,m1=0.1"}})
    assert not scored_as_now(fewer, TASK)  # a condition added to the task since: run again
