"""How the training step runs: eager, compiled, or compiled with CUDA graphs (`choose_step_mode`),
for the trainer and for the seeds trained together under vmap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from mmbench.core.errors import SpecError

if TYPE_CHECKING:
    from mmbench.training.config import TrainConfig

__all__ = ["COMPILE_MODES", "CUDA_GRAPH_ENCODERS", "CUDA_GRAPH_MIN_STEPS", "StepMode", "choose_step_mode", "compile_mode",
           "log_step_mode"]


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(cfg: TrainConfig) -> str | None:
    """The ``mode`` for ``torch.compile``: `cfg.compile_mode` with inductor; other backends take none."""
    if cfg.compile_mode not in COMPILE_MODES:
        raise SpecError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, not {cfg.compile_mode!r}")
    return None if cfg.compile_mode == "default" or cfg.compile_backend != "inductor" else cfg.compile_mode


# Measured on an H200 (2026-12-04, benchmarks case 1: AV-MNIST batch-norm CNNs, batch 40):
# per epoch of 1,375 steps eager 11.5 s, compiled with CUDA graphs 4.12 s (same validation
# accuracy), i.e. ~5.4 ms saved per step; compiling costs ~30 s (a 2-epoch synthetic run took
# 37 s compiled, 10 s eager). Below this many steps per run, eager is the faster choice.
CUDA_GRAPH_MIN_STEPS = 5_000
# encoders whose compiled step has run with CUDA graphs (cnn: the case above; mlp: `mmbench
# train synthetic-synergy --compile` on the H200). Others stay eager until measured.
CUDA_GRAPH_ENCODERS = ("CNNEncoder", "MLPEncoder")


@dataclass(frozen=True)
class StepMode:
    """How the training step runs: compiled or not, inductor's mode, and why."""

    compile: bool
    mode: str | None
    reason: str
    fallback: bool = False  # a faster mode was wanted but the step does not allow it


def choose_step_mode(cfg: TrainConfig, device: torch.device, model: nn.Module, steps: int,
                     distributed: bool = False, vectorised: bool = False, static_shapes: bool = True) -> StepMode:
    """The fastest step that gives the trainer's results for this run.

    An explicit ``cfg.compile`` is kept as asked. Otherwise (``cfg.auto_compile``) a CUDA run
    is compiled with CUDA graphs (``reduce-overhead``) when the step allows it and the run is
    long enough to repay compiling (``CUDA_GRAPH_MIN_STEPS``); elsewhere it runs eager.
    The seeds vmapped together (``vectorised``) qualify like one seed: their step is a pure
    function (batch norm hands back its new running statistics, :mod:`mmbench.models.functional_norm`,
    instead of writing the stacked buffers, which made inductor skip CUDA graphs before) where
    their shapes are static (``static_shapes``: every batch full, so one graph serves the run).
    """
    if cfg.compile:
        return StepMode(True, compile_mode(cfg), f"compile requested (mode {cfg.compile_mode})")
    if not cfg.auto_compile:
        return StepMode(False, None, "auto_compile off")
    if device.type != "cuda":
        return StepMode(False, None, f"eager on {device.type} (CUDA graphs are a CUDA feature)")
    if steps < CUDA_GRAPH_MIN_STEPS:
        return StepMode(False, None, f"eager: {steps:,} steps are too few to repay compiling "
                                     f"(CUDA graphs from {CUDA_GRAPH_MIN_STEPS:,})")
    why_not = None
    if distributed:
        why_not = "CUDA graphs are not yet measured under DistributedDataParallel"
    elif vectorised and not static_shapes:
        why_not = ("the last batch of each epoch is shorter (training rows not a multiple of batch_size): "
                   "the vmapped step would be compiled and captured twice")
    elif cfg.compile_backend != "inductor":
        why_not = f"backend {cfg.compile_backend!r} has no CUDA graphs"
    else:
        unverified = sorted({type(m).__name__ for m in getattr(model, "encoders", {}).values()}
                            - set(CUDA_GRAPH_ENCODERS))
        if unverified:
            why_not = f"encoder(s) {', '.join(unverified)} not yet measured under CUDA graphs"
    if why_not:
        return StepMode(False, None, f"eager: {why_not}", fallback=True)
    what = "the vmapped seeds' step" if vectorised else "the step"
    return StepMode(True, "reduce-overhead", f"{what} compiled with CUDA graphs ({steps:,} steps)")


def log_step_mode(mode: StepMode, what: str) -> None:
    """Fallbacks are warnings (a faster mode was not possible), choices info."""
    logger = logging.getLogger("mmbench.training")
    (logger.warning if mode.fallback else logger.info)("%s: %s", what, mode.reason)

