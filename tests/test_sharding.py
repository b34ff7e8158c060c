"""`evaluate --model ... --shards N`: shards cut on the batch boundaries give the single worker's
predictions bit for bit; one failing worker stops the others and its error is the evaluation's."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mmbench.data.tasks import get_task
from mmbench.evaluation.sharding import shard_bounds

TASK = "synthetic-synergy"


def test_shards_start_on_batch_boundaries_and_cover_every_item_once():
    assert shard_bounds(600, 64, 3) == [(0, 256), (256, 512), (512, 600)]
    assert shard_bounds(600, 256, 8) == [(0, 256), (256, 512), (512, 600)]  # never more shards than batches
    assert shard_bounds(10, 64, 4) == [(0, 10)]
    for n, bs, k in [(1, 1, 1), (999, 7, 5), (1000, 100, 3), (64, 64, 2)]:
        bounds = shard_bounds(n, bs, k)
        assert len(bounds) <= k and bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a % bs == 0 and a < b for a, b in bounds)
        assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))


def _evaluate(model, shards, batch_size=64, **kw):
    from mmbench.evaluation.evaluator import evaluate_model
    from mmbench.evaluation.sandbox.runner import SandboxConfig

    kept: dict = {}
    result = evaluate_model(get_task(TASK), f"{model}:build", None, "s", n_resamples=0, keep_predictions=kept,
                            sandbox_config=SandboxConfig(batch_size=batch_size, timeout_s=300, **kw), shards=shards)
    return result, kept


@pytest.mark.timeout(600)
def test_three_shards_give_the_single_worker_predictions_bit_for_bit(tmp_path):
    from mmbench.evaluation.submissions.contract import write_template

    model = write_template(get_task(TASK), tmp_path / "sub")  # built under a fixed seed in every worker
    one, kept_one = _evaluate(model, 1)
    three, kept_three = _evaluate(model, 3)
    assert kept_three["__ids__"] == kept_one["__ids__"]
    aliases = one.extra.get("condition_aliases", {})  # conditions whose masks equal another's run once
    conditions = [c.name for c in get_task(TASK).conditions() if c.name not in aliases]
    assert set(kept_one) - {"__ids__"} == set(conditions) and len(conditions) >= 4
    for c in conditions:
        a, b = np.asarray(kept_one[c]), np.asarray(kept_three[c])
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), c
    assert three.metrics == one.metrics


FAILING = '''
import time

BATCH = {batch}

import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, task_info):
        super().__init__()
        self.head = nn.Linear(1, task_info["outputs"])

    def forward(self, modalities, present, lengths):
        x = modalities["m0"]
        if x.shape[0] != BATCH:
            raise ValueError(f"cannot take a batch of {x.shape[0]} rows")
        time.sleep(120)  # the shards with whole batches would run for minutes
        return self.head(x[:, :1].float())


def build(task_info):
    return Model(task_info)
'''


@pytest.mark.timeout(600)
def test_one_failing_shard_stops_all_with_its_own_error(tmp_path):
    from mmbench.core.errors import SubmissionError

    from mmbench.data.splits import load_task_split
    from mmbench.evaluation.presence import distinct_with_report

    spec = get_task(TASK)
    split = load_task_split(spec, "test", None)
    present = {m: split.present[m].numpy() for m in split.modality_names}
    conds, _ = distinct_with_report(spec.conditions(), split.ids, split.modality_names, spec.missing.seed, split.name,
                                    present)
    rows = len(conds) * len(split)  # every (condition, item) row, in one mixed order
    batch = (2 * rows) // 5  # three batches: two whole ones, then the third shard's short one
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.py").write_text(FAILING.replace("{batch}", str(batch)))
    started = time.monotonic()
    with pytest.raises(SubmissionError) as caught:
        _evaluate(tmp_path / "sub" / "model.py", 3, batch_size=batch, isolation="none")
    assert time.monotonic() - started < 100  # the sleeping shards were stopped, not waited for
    message = str(caught.value)
    assert message.startswith(f"shard 3 of 3 (rows {2 * batch}-{rows - 1} of the mixed order): ")
    assert f"cannot take a batch of {rows - 2 * batch} rows" in message
