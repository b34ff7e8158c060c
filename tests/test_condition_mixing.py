"""Batches mix conditions (mmbench.evaluation.mixing, issue 35 item 4): every (condition, item)
row of the test split in one seeded order, so no batch reveals the missing rate; the scores per
condition are identical to scoring each condition on its own, whatever the batch size."""

from __future__ import annotations

import numpy as np
import torch

from mmbench.data.masks import expand_conditions
from mmbench.data.splits import apply_condition, load_task_split
from mmbench.data.tasks import get_task
from mmbench.evaluation.evaluator import evaluate_conditions, outputs_to_predictions, predict
from mmbench.evaluation.mixing import mix_conditions
from mmbench.evaluation.scoring import score
from mmbench.models.model import build_model, describe_inputs

SPEC = get_task("synthetic-synergy")


def _model(split):
    torch.manual_seed(0)
    model = build_model({"inputs": describe_inputs(split), "fusion": "concat", "target_type": "binary",
                         "num_classes": 2, "embed_dim": 16, "hidden_dim": 16})
    return model.eval()


def test_batches_mix_conditions_in_a_seeded_order():
    split = load_task_split(SPEC, "test")
    conds = expand_conditions(["clean", "rate:0.3", "rate:0.9", "drop:m0"], SPEC.modalities)
    mixed = mix_conditions(split, conds, seed=0)
    n = len(split)
    for start in range(0, len(mixed), 64):
        batch_conds = (mixed.order[start:start + 64] // n).unique()
        assert len(batch_conds) >= 3  # every batch of 64 holds rows of at least three of the four conditions
    assert torch.equal(mix_conditions(split, conds, seed=0).order, mixed.order)
    assert not torch.equal(mix_conditions(split, conds, seed=1).order, mixed.order)
    assert sorted(mixed.order.tolist()) == list(range(len(conds) * n))


def test_scores_per_condition_do_not_depend_on_the_batches():
    split = load_task_split(SPEC, "test").subset(range(150))
    model = _model(split)
    conds = SPEC.conditions()
    alone = {c.name: score(SPEC, split.targets.numpy(),
                           outputs_to_predictions(predict(model, apply_condition(split, c, 0), batch_size=600), SPEC))
             for c in conds}
    for batch_size in (3, 64, 10_000):
        kept: dict = {}
        run = lambda s, b=batch_size: outputs_to_predictions(predict(model, s, batch_size=b), SPEC)  # noqa: E731
        mixed = evaluate_conditions(SPEC, split, run, keep_predictions=kept)
        for name, metrics in mixed.items():
            assert metrics == alone[name], (batch_size, name)
            assert np.array_equal(kept[name], outputs_to_predictions(
                predict(model, apply_condition(split, next(c for c in conds if c.name == name), 0)), SPEC))
