"""The training loop: whole splits on the device, index-gathered batches, bf16 autocast on
GPUs, model selection on the validation split, early stopping, and exact resume.

Every random choice derives from the run's seed: the parameter init (torch.manual_seed(seed)
before the model is built), each epoch's shuffle and modality dropout (a Generator seeded by
(seed, epoch)) and dropout masks (torch.manual_seed re-seeded at every epoch start). Because
every epoch re-seeds, a run resumed from the checkpoint written at the end of epoch k
continues exactly as the uninterrupted run did.

A run folder holds: config.json (resolved), log.jsonl (one line per epoch), last.safetensors
(model + optimizer + progress, written atomically every epoch), best.safetensors (model
weights with the config in its metadata) and metrics.json (final validation and test metrics).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmbench.data import Split
from mmbench.errors import MMBenchError, SpecError
from mmbench.evaluation.evaluator import evaluate_conditions, outputs_to_predictions, predict, score
from mmbench.io import atomic_save_safetensors, atomic_write_json, atomic_write_text, load_safetensors
from mmbench.masks import ModalityDropout
from mmbench.models.model import MultimodalModel, describe_inputs
from mmbench.tasks import TaskSpec, get_task
from mmbench.taskdata import load_task_split, task_dataset


@dataclass
class TrainConfig:
    task: str
    fusion: str
    seed: int = 0
    epochs: int = 30
    batch_size: int = 64
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
    compile: bool = False
    eval_batch_size: int = 1024
    data_dir: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MMBenchError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _loss_fn(target_type: str):
    if target_type == "regression":
        return lambda out, y: nn.functional.l1_loss(out.float(), y.float())
    return lambda out, y: nn.functional.cross_entropy(out.float(), y.long())


def model_config_for(cfg: TrainConfig, spec: TaskSpec, train_split: Split) -> dict[str, Any]:
    return {
        "task": spec.name,
        "target_type": spec.target.type,
        "num_classes": spec.target.num_classes,
        "modalities": list(spec.modalities),
        "inputs": describe_inputs(train_split),
        "fusion": cfg.fusion,
        "fusion_options": cfg.fusion_options,
        "encoders": cfg.encoders,
        "embed_dim": cfg.embed_dim,
        "hidden_dim": cfg.hidden_dim,
        "dropout": cfg.dropout,
    }


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    state = opt.state_dict()
    tensors = {}
    for idx, st in state["state"].items():
        for key, value in st.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).clone()
    return tensors, json.dumps(state["param_groups"])


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: str) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups)})


def _model_tensors(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_model(path: Path, model: nn.Module, model_config: dict[str, Any], extra: dict[str, str] | None = None) -> None:
    meta = {"format": "mmbench-model-v1", "config": json.dumps(model_config)} | (extra or {})
    atomic_save_safetensors(path, _model_tensors(model), meta)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[MultimodalModel, dict[str, Any]]:
    """A model saved by `save_model` (weights + config; nothing is unpickled)."""
    tensors, meta = load_safetensors(path)
    if meta.get("format") != "mmbench-model-v1" or "config" not in meta:
        raise MMBenchError("not an mmbench model checkpoint (no config in its metadata)", path)
    config = json.loads(meta["config"])
    model = MultimodalModel(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise MMBenchError(f"checkpoint does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})", path)
    return model.to(device), config


def train(cfg: TrainConfig, out_dir: str | Path | None = None, progress: bool = True,
          splits: dict[str, Split] | None = None, resume: bool = True) -> TrainResult:
    """Train one (task, fusion, seed) run; with `out_dir`, write the run folder and resume from it."""
    started = time.perf_counter()
    spec = get_task(cfg.task)
    if spec.target.type == "retrieval":
        raise MMBenchError(f"task {spec.name!r} is a retrieval task: evaluate embeddings with `mmbench evaluate --predictions`")
    device = resolve_device(cfg.device)
    amp = _autocast_dtype(cfg.precision, device)
    if splits is None:
        if cfg.dataset_options:
            spec = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"options": spec.dataset.options | cfg.dataset_options})})
        dataset = task_dataset(spec, cfg.data_dir)
        splits = {role: load_task_split(spec, role, cfg.data_dir, dataset) for role in ("train", "validation", "test")}
    train_split, val_split, test_split = splits["train"], splits["validation"], splits["test"]

    torch.manual_seed(cfg.seed)
    model_config = model_config_for(cfg, spec, train_split)
    model = MultimodalModel(model_config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = _loss_fn(spec.target.type)
    dropout = ModalityDropout(cfg.modality_dropout) if cfg.modality_dropout > 0 else None
    step_model = torch.compile(model) if cfg.compile else model

    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else math.inf
    on_device = train_split.nbytes() < 0.5 * free
    data = train_split.to(device) if on_device else train_split
    if device.type == "cuda" and not on_device:
        data = Split(data.name, data.ids, {k: v.pin_memory() for k, v in data.modalities.items()},
                     {k: v.pin_memory() for k, v in data.present.items()}, data.targets.pin_memory(),
                     {k: v.pin_memory() for k, v in data.lengths.items()}, data.info)
    val_on = val_split.to(device)

    primary = spec.primary
    sign = 1.0 if primary.higher_is_better else -1.0
    run_dir = Path(out_dir) if out_dir else None
    history: list[dict[str, Any]] = []
    start_epoch, best_value, best_epoch, stale = 0, -math.inf, -1, 0
    best_state = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        last = run_dir / "last.safetensors"
        if resume and last.exists():
            tensors, meta = load_safetensors(last)
            if json.loads(meta.get("train_config", "{}")) != cfg.to_dict():
                raise MMBenchError("run folder holds a checkpoint of a different config; use another --out or delete it", run_dir)
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            _restore_optimizer(opt, tensors, meta["optimizer_groups"])
            progress_state = json.loads(meta["progress"])
            start_epoch = progress_state["epoch"] + 1
            best_value, best_epoch, stale = progress_state["best_value"], progress_state["best_epoch"], progress_state["stale"]
            best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
            history = progress_state["history"]
        else:
            atomic_write_json(run_dir / "config.json", {"train": cfg.to_dict(), "model": model_config})

    n = len(data)
    bar = _progress(progress, cfg.epochs, f"{spec.name} {cfg.fusion} seed {cfg.seed}")
    bar.advance(start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        if stale >= cfg.patience:
            break
        gen = _epoch_generator(cfg.seed, epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        model.train()
        total, count = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            index = perm[start : start + cfg.batch_size]
            batch = data.batch(index.to(data.targets.device))
            if not on_device:
                batch = batch.to(device, non_blocking=True)
            if dropout is not None:
                batch = dropout(batch, gen)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = step_model(batch.modalities, batch.present, batch.lengths)
                loss = loss_fn(out, batch.targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            total += float(loss.detach()) * len(index)
            count += len(index)
        val_pred = outputs_to_predictions(predict(model, val_on, device, cfg.eval_batch_size, amp), spec.target.type)
        val_metrics = score(spec, val_split.targets.cpu().numpy(), val_pred)
        value = val_metrics[primary.name]
        improved = sign * value > best_value
        if improved:
            best_value, best_epoch, stale = sign * value, epoch, 0
            best_state = _model_tensors(model)
        else:
            stale += 1
        record = {"epoch": epoch, "train_loss": total / max(count, 1), "val": val_metrics, "best": improved}
        history.append(record)
        if run_dir is not None:
            _write_epoch(run_dir, cfg, model, model_config, opt, record, history, best_state, best_value, best_epoch, stale, improved)
        bar.advance(1, f"epoch {epoch} loss {record['train_loss']:.4f} val {primary.name} {value:.4f}")
    bar.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    val_pred = outputs_to_predictions(predict(model, val_on, device, cfg.eval_batch_size, amp), spec.target.type)
    val_metrics = score(spec, val_split.targets.cpu().numpy(), val_pred)
    test_metrics = evaluate_conditions(
        spec, test_split,
        lambda s: outputs_to_predictions(predict(model, s, device, cfg.eval_batch_size, amp), spec.target.type),
        [c for c in spec.conditions() if c.name == "clean"] or None,
    ).get("clean", {})
    seconds = time.perf_counter() - started
    if run_dir is not None:
        atomic_write_json(run_dir / "metrics.json", {"best_epoch": best_epoch, "validation": val_metrics,
                                                     "test": test_metrics, "seconds": seconds})
    return TrainResult(run_dir, cfg, model_config, best_epoch, val_metrics, test_metrics, history, model, seconds)


def _write_epoch(run_dir, cfg, model, model_config, opt, record, history, best_state, best_value, best_epoch, stale, improved):
    if improved:
        save_model(run_dir / "best.safetensors", model, model_config, {"epoch": str(record["epoch"])})
    log = "".join(json.dumps(h) + "\n" for h in history)
    atomic_write_text(run_dir / "log.jsonl", log)
    tensors = _model_tensors(model, "model.")
    tensors |= {f"best.{k}": v for k, v in (best_state or {}).items()}
    opt_tensors, groups = _optimizer_tensors(opt)
    tensors |= opt_tensors
    meta = {
        "train_config": json.dumps(cfg.to_dict()),
        "optimizer_groups": groups,
        "progress": json.dumps({"epoch": record["epoch"], "best_value": best_value, "best_epoch": best_epoch,
                                "stale": stale, "history": history}),
    }
    atomic_save_safetensors(run_dir / "last.safetensors", tensors, meta)


class _progress:
    """A rich progress bar over epochs (silent when disabled or not a terminal)."""

    def __init__(self, enabled: bool, total: int, label: str):
        self._p = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                               TimeElapsedColumn(), transient=True)
            self._p.start()
            self._task = self._p.add_task(label, total=total, status="")

    def advance(self, k: int, status: str = "") -> None:
        if self._p is not None:
            self._p.update(self._task, advance=k, status=status)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
