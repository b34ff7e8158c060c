"""What a training run is given and what it gives back, shared by the trainer (`trainer`), the
seeds trained together (`multiseed`) and the retrieval dual encoder (`retrieval`): the run's
config and result, the seeded per-epoch generator, the autocast dtype of a precision setting,
the loss of a target type and the progress bar over epochs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmbench.core.errors import SpecError

__all__ = ["EpochProgress", "TrainConfig", "TrainResult", "autocast_dtype", "epoch_generator", "loss_fn"]


@dataclass
class TrainConfig:
    task: str
    fusion: str
    seed: int = 0
    epochs: int = 30
    batch_size: int = 64  # per process: under torchrun the global batch is batch_size x WORLD_SIZE
    lr: float = 1e-3
    weight_decay: float = 1e-2
    embed_dim: int = 64
    hidden_dim: int = 128
    dropout: float = 0.1
    fusion_options: dict[str, Any] = field(default_factory=dict)
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    patience: int = 8
    modality_dropout: float = 0.0
    max_grad_norm: float | None = 1.0
    device: str = "auto"
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 elsewhere
    memory_format: str = "auto"  # auto = channels-last CNN activations on the CPU where it pays
    bn_recalibration: int = 0  # >0: before each evaluation, batch-norm statistics from this many training rows
    compile: bool = False
    compile_backend: str = "inductor"  # torch.compile backend ("eager", "aot_eager" for quick checks)
    compile_mode: str = "default"  # inductor's mode: "reduce-overhead" adds CUDA graphs (launch-bound small models)
    auto_compile: bool = True  # on CUDA without `compile`: compile with CUDA graphs where that is faster (choose_step_mode)
    eval_batch_size: int = 1024
    data_dir: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown config field {unknown[0]!r}; known: {', '.join(sorted(known))}", source)
        for required in ("task", "fusion"):
            if not data.get(required):
                raise SpecError(f"config field {required!r} is required", source)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    run_dir: Path | None
    config: TrainConfig
    model_config: dict[str, Any]
    best_epoch: int
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    history: list[dict[str, Any]]
    model: nn.Module
    seconds: float



def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a `precision` setting (None: no autocast)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    try:
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
    except KeyError:
        raise SpecError(f"precision must be auto, bf16, fp16 or fp32, not {precision!r}") from None


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of a run's epoch: its shuffle and modality dropout draw from it."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def loss_fn(target_type: str):
    """The training loss of a target type (computed in float32)."""
    if target_type == "regression":
        return lambda out, y: nn.functional.l1_loss(out.float(), y.float())
    if target_type == "multilabel":  # one sigmoid per label
        return lambda out, y: nn.functional.binary_cross_entropy_with_logits(out.float(), y.float())
    return lambda out, y: nn.functional.cross_entropy(out.float(), y.long())


class EpochProgress:
    """A rich progress bar over epochs (silent when disabled or not a terminal)."""

    def __init__(self, enabled: bool, total: int, label: str):
        self._p = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(stderr=True)
            if not console.is_terminal:  # a log or a pipe: a transient bar would leave blank lines behind
                return
            self._p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                               TimeElapsedColumn(), transient=True, console=console)
            self._p.start()
            self._task = self._p.add_task(label, total=total, status="")

    def advance(self, k: int, status: str = "") -> None:
        if self._p is not None:
            self._p.update(self._task, advance=k, status=status)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
