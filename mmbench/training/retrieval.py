"""Training the retrieval baseline: a :class:`~mmbench.models.dual_encoder.DualEncoder` on a
retrieval task's train split, selected on the validation split's mean recall.

`mmbench.training.trainer.train` hands retrieval tasks here, so `mmbench train coco-retrieval`,
`train_seeds` and `mmbench reproduce` train it like any baseline, from the same
:class:`~mmbench.training.trainer.TrainConfig` (fields used: seed, epochs, batch_size, lr,
weight_decay, embed_dim, hidden_dim, dropout, patience, max_grad_norm, device, precision,
eval_batch_size, data_dir, dataset_options; ``fusion`` names the model, ``dual-encoder``).

A split of a retrieval task holds one row per caption (its MiniLM embedding, its image's
EfficientNet features and presence, target = the image's gallery row). Each epoch shuffles
the captions with a Generator seeded by (seed, epoch) and takes batches of ``batch_size``;
captions whose image is missing are dropped from the loss (:func:`contrastive_loss`). After
every epoch the missing-image vector is placed opposite the training captions
(:meth:`~mmbench.models.dual_encoder.DualEncoder.place_missing_image`) and the validation gallery is embedded and scored with
:func:`mmbench.evaluation.metrics.retrieval_metrics`; the best epoch's weights (highest ``mean_recall``)
are kept, and training stops after ``patience`` epochs without improvement.

The run folder holds config.json, log.jsonl (one line per epoch), best.safetensors (weights,
config in the metadata, SHA-256 checked like every mmbench checkpoint) and metrics.json.
A run always starts from epoch 0 (these runs take seconds; there is no mid-run resume).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmbench.evaluation.evaluator import embed_gallery
from mmbench.data.samples import Split
from mmbench.core.errors import MMBenchError
from mmbench.core.source import source_hash
from mmbench.models.dual_encoder import ARCHITECTURE, DualEncoder, contrastive_loss
from mmbench.models.model import describe_inputs
from mmbench.data.tasks import TaskSpec
from mmbench.models.checkpoint import save_model
from mmbench.training.config import EpochProgress, TrainResult, epoch_generator


def dual_encoder_config(cfg: Any, spec: TaskSpec, train_split: Split) -> dict[str, Any]:
    return {"architecture": ARCHITECTURE, "task": spec.name, "target_type": spec.target.type,
            "modalities": list(spec.modalities), "inputs": describe_inputs(train_split), "fusion": cfg.fusion,
            "embed_dim": cfg.embed_dim, "hidden_dim": cfg.hidden_dim, "dropout": cfg.dropout, "seed": cfg.seed}


def validation_metrics(model: DualEncoder, split: Split, device: torch.device, batch_size: int) -> dict[str, float]:
    from mmbench.evaluation.metrics import retrieval_metrics

    image, text, index, _ = embed_gallery(model, split, device, batch_size)
    return {k: float(v) for k, v in retrieval_metrics(image, text, index).items()}


def train_retrieval(cfg: Any, out_dir: str | Path | None, progress: bool, splits: dict[str, Split], spec: TaskSpec,
                    device: torch.device, amp: torch.dtype | None) -> TrainResult:
    """One seeded run of the dual encoder; returns a TrainResult (test_metrics: the test split's recalls)."""
    from mmbench.core.io import atomic_write_json, atomic_write_text

    started = time.perf_counter()
    if cfg.fusion != ARCHITECTURE:
        raise MMBenchError(f"task {spec.name!r} is a retrieval task: its baseline is {ARCHITECTURE!r}, not fusion "
                           f"{cfg.fusion!r}")
    train_split, val_split, test_split = splits["train"], splits["validation"], splits["test"]
    if not bool(train_split.present["image"].any()):
        raise MMBenchError(f"task {spec.name!r}: no training caption has its image on disk; nothing to train on")
    torch.manual_seed(cfg.seed)
    model_config = dual_encoder_config(cfg, spec, train_split)
    model = DualEncoder(model_config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    data = train_split.to(device)
    image, present, text, rows = (data.modalities["image"], data.present["image"], data.modalities["text"],
                                  data.targets)
    run_dir = Path(out_dir) if out_dir else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", {"train": cfg.to_dict(), "model": model_config,
                                                    "source": source_hash()})
    history: list[dict[str, Any]] = []
    best_value, best_epoch, stale, best_state = -math.inf, -1, 0, None
    bar = EpochProgress(progress, cfg.epochs, f"{spec.name} {cfg.fusion} seed {cfg.seed}")
    for epoch in range(cfg.epochs):
        if stale >= cfg.patience:
            break
        perm = torch.randperm(len(data), generator=epoch_generator(cfg.seed, epoch)).to(device)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout masks
        model.train()
        loss_sum, steps = torch.zeros((), dtype=torch.float64, device=device), 0
        for start in range(0, len(perm), cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = contrastive_loss(model, image[idx], present[idx], text[idx], rows[idx])
            opt.zero_grad(set_to_none=True)
            loss.float().backward()
            if cfg.max_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            loss_sum += loss.detach().double()
            steps += 1
        model.eval()
        model.place_missing_image(text, cfg.eval_batch_size)
        val = validation_metrics(model, val_split, device, cfg.eval_batch_size)
        improved = val["mean_recall"] > best_value
        if improved:
            best_value, best_epoch, stale = val["mean_recall"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if run_dir is not None:
                save_model(run_dir / "best.safetensors", model, model_config, {"epoch": str(epoch)})
        else:
            stale += 1
        history.append({"epoch": epoch, "train_loss": float(loss_sum) / max(steps, 1), "val": val, "best": improved,
                        "logit_scale": float(model.scale().detach())})
        if run_dir is not None:
            atomic_write_text(run_dir / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        bar.advance(1, f"epoch {epoch} loss {history[-1]['train_loss']:.4f} val mean_recall {val['mean_recall']:.4f}")
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    val_metrics = validation_metrics(model, val_split, device, cfg.eval_batch_size)
    test_metrics = validation_metrics(model, test_split, device, cfg.eval_batch_size)
    seconds = time.perf_counter() - started
    if run_dir is not None:
        atomic_write_json(run_dir / "metrics.json", {"best_epoch": best_epoch, "validation": val_metrics,
                                                     "test": test_metrics, "seconds": seconds})
    return TrainResult(run_dir, cfg, model_config, best_epoch, val_metrics, test_metrics, history, model, seconds)
