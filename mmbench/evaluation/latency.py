"""What a latency figure times, stated once and timed one way everywhere the board compares
latencies: the model's forward (a retrieval model: one encoder) on one batch, the median of
``repeats`` timed calls after one warm-up call, CUDA synchronised on a GPU, and on the CPU with
one torch thread (the thread count `train` and `reproduce` run the baselines at; a 2-core
machine shared with other jobs otherwise times thread contention). Not the isolated worker's
round trip (process start, loading, transfer) and not data loading. Trained baselines are timed
in-process, submitted models inside their sandbox worker, with this same function.
"""

from __future__ import annotations

import time
from typing import Any, Callable

REPEATS = 5
TIMED = ("model forward on one batch, median of 5 timed calls after a warm-up, 1 CPU thread on the CPU "
         "(not the isolated worker's round trip)")


def median_latency_ms(call: Callable[[], Any], device: Any, repeats: int = REPEATS) -> tuple[float, int | None]:
    """(median milliseconds of ``call()`` over `repeats` timed calls after one warm-up, the CPU
    thread count it ran at: 1 on the CPU, None on a GPU). Torch's thread count is restored."""
    import numpy as np
    import torch

    device = torch.device(device)
    threads = torch.get_num_threads()
    on_cpu = device.type == "cpu"
    if on_cpu:
        torch.set_num_threads(1)
    times = []
    try:
        with torch.no_grad():
            for _ in range(repeats + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                call()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return float(np.median(times[1:]) * 1000), (1 if on_cpu else None)
