"""`evaluate --model ... --shards N`: the test items split across N sandboxed workers.

Each shard is one worker of the same isolation as a single-process evaluation
(:func:`~mmbench.evaluation.sandbox.runner.run_model` with ``rows``), on a contiguous range of
the mixed order of (condition, item) rows (mmbench.evaluation.mixing) cut on the
single-process batch boundaries (multiples of the batch size): every batch a shard's model
sees is a batch the single worker would have seen, so the gathered outputs equal the
single-process ones bit for bit. The masks and the mixed order are drawn over the whole test
set and then cut, never over a shard. On gather the rows of every shard are checked (every
(condition, item) row exactly once) before they are put back per condition. When one worker fails, the
others are stopped and the evaluation fails with that worker's error.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

import numpy as np

from mmbench.core.errors import MMBenchError, SubmissionError

__all__ = ["shard_bounds", "run_sharded"]


def shard_bounds(n: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: at most `shards` contiguous ranges covering ``0..n``, each
    starting on a batch boundary (as even as whole batches allow; no empty range)."""
    if shards < 1 or batch_size < 1:
        raise MMBenchError("--shards and the batch size must be at least 1")
    batches = math.ceil(n / batch_size)
    per = max(1, math.ceil(batches / shards))
    return [(start, min(n, start + per * batch_size)) for start in range(0, n, per * batch_size)]


def run_sharded(model_spec: Any, spec: Any, split: Any, conditions: list, device: str, config: Any, shards: int,
                efficiency: bool = True) -> Any:
    """One worker per shard, all at once; their outputs gathered into one SandboxOutput."""
    from mmbench.evaluation.sandbox.runner import Cancelled, SandboxOutput, run_model

    from mmbench.data.splits import TRAINING_MEANS
    from mmbench.evaluation.mixing import mix_conditions
    from mmbench.evaluation.sandbox.runner import ROWS, unmix_outputs

    order = mix_conditions(split, conditions, spec.missing.seed, (split.info or {}).get(TRAINING_MEANS)).order.cpu().numpy()
    bounds = shard_bounds(len(order), config.batch_size, shards)
    if len(bounds) == 1:
        return run_model(model_spec, spec, split, conditions, device, config, efficiency=efficiency)
    cancel = threading.Event()
    shard_config = replace(config, cancel=cancel)
    with ThreadPoolExecutor(max_workers=len(bounds), thread_name_prefix="mmbench-shard") as pool:
        futures = [pool.submit(run_model, model_spec, spec, split, conditions, device, shard_config,
                               efficiency and i == 0, None, b) for i, b in enumerate(bounds)]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None
                       and not isinstance(f.exception(), Cancelled)), None)
        if failed is not None:
            cancel.set()  # the other workers are stopped (their process groups killed)
            wait(futures)
            exc = failed.exception()
            i = futures.index(failed)
            if isinstance(exc, SubmissionError):
                exc.args = (f"shard {i + 1} of {len(bounds)} (rows {bounds[i][0]}-{bounds[i][1] - 1} of the mixed "
                            f"order): {exc.args[0]}", *exc.args[1:])
            raise exc
        outs = [f.result() for f in futures]
    parts = [o.outputs[ROWS] for o in outs]
    if [len(p) for p in parts] != [b - a for a, b in bounds]:
        raise MMBenchError("sharded evaluation: a shard returned the wrong number of rows")
    gathered = np.concatenate([order[a:b] for a, b in bounds])
    if not np.array_equal(np.sort(gathered), np.arange(len(conditions) * len(split))):  # none lost, none twice
        raise MMBenchError(f"sharded evaluation: the gathered rows do not match the test set "
                           f"({len(gathered)} gathered, {len(conditions) * len(split)} (condition, item) rows)")
    outputs = unmix_outputs(np.concatenate(parts, axis=0), gathered, conditions, len(split), model_spec.source)
    return SandboxOutput(outputs, outs[0].efficiency, max(o.seconds for o in outs),
                         outs[0].log_tail, outs[0].isolation)
