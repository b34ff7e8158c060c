"""Batch norm without side effects: a training-mode forward that returns the new running
statistics instead of writing them into the module's buffers.

``nn.BatchNorm*`` (and :class:`~mmbench.models.encoders.cnn.MaskedBatchNorm2d`) update
``running_mean``, ``running_var`` and ``num_batches_tracked`` in place during a training
forward. Under ``torch.func.vmap`` over stacked models those buffers are inputs of the step,
and a step that mutates its inputs is not captured whole in CUDA graphs by inductor. Here the
same update is computed out of place and handed back:

* output: ``F.batch_norm`` with the batch's statistics (no running statistics passed, so
  nothing is written), the values of the in-place forward;
* ``running_mean <- (1 - f) running_mean + f mean``, ``running_var <- (1 - f) running_var +
  f var_unbiased`` with ``f`` the module's momentum (``1 / (num_batches_tracked + 1)`` when
  it is None, as ``nn.BatchNorm`` does), ``num_batches_tracked + 1``;
* the masked batch norm with a presence mask: its static route's own pure half
  (:meth:`MaskedBatchNorm2d.static_step`), which the in-place route applies itself.

The statistics of the in-place kernel and these agree up to float rounding (ATen reduces in
another order); tests/test_multiseed.py checks runs against one-by-one training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmbench.models.encoders.cnn import MaskedBatchNorm2d

__all__ = ["RunningStats", "batch_norm_step"]

RunningStats = tuple[Tensor, Tensor, Tensor]  # running_mean, running_var, num_batches_tracked


def batch_norm_step(norm: nn.modules.batchnorm._BatchNorm, x: Tensor,
                    present: Tensor | None = None) -> tuple[Tensor, RunningStats | None]:
    """`norm`'s forward on `x` without writing its buffers: (output, new statistics).

    In eval mode, or for a norm without running statistics, it is the module's own forward
    (which writes nothing then) and the statistics are None: nothing changes."""
    if not norm.training or not norm.track_running_stats or norm.running_mean is None:
        out = type(norm).forward(norm, x, present) if isinstance(norm, MaskedBatchNorm2d) else type(norm).forward(norm, x)
        return out, None
    if isinstance(norm, MaskedBatchNorm2d) and present is not None:
        return norm.static_step(x, present)
    assert norm.running_var is not None and norm.num_batches_tracked is not None
    count = norm.num_batches_tracked + 1
    factor: float | Tensor = norm.momentum if norm.momentum is not None else 1.0 / count
    out = nn.functional.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)
    with torch.no_grad():
        dims = [0] + list(range(2, x.dim()))
        var, mean = torch.var_mean(x.detach().to(norm.running_mean.dtype), dims, correction=1)
        new_mean = norm.running_mean * (1 - factor) + factor * mean
        new_var = norm.running_var * (1 - factor) + factor * var
    return out, (new_mean, new_var, count)
