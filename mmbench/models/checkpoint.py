"""Model checkpoints: weights and config in one safetensors file with a SHA-256 digest (nothing
is unpickled), and the device a run asks for. Training writes them; evaluation and
`mmbench.load_model` read them, so they live with the models, below both."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmbench.core.errors import DataError, MMBenchError
from mmbench.core.io import atomic_save_safetensors, load_safetensors
from mmbench.models.model import MultimodalModel

MODEL_FORMAT = "mmbench-model-v1"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MMBenchError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


def model_tensors(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """A model's state dict as detached, contiguous CPU tensors (keys prefixed with `prefix`)."""
    return {prefix + k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def checkpoint_digest(tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over the metadata (all keys but ``sha256``) and every tensor's name, dtype,
    shape and bytes, in name order: any changed byte of a checkpoint changes it."""
    h = hashlib.sha256(b"mmbench-checkpoint-digest-v1\0")
    meta = {k: v for k, v in metadata.items() if k != "sha256"}
    h.update(json.dumps(meta, sort_keys=True).encode() + b"\0")
    for name in sorted(tensors):
        t = tensors[name].detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype!s}\0{list(tensors[name].shape)}\0".encode())
        if t.numel():
            h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()


def save_checked(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Atomic safetensors write with the digest in the metadata."""
    meta = dict(metadata)
    meta["sha256"] = checkpoint_digest(tensors, meta)
    atomic_save_safetensors(path, tensors, meta)


def load_checked(path: str | Path, require_digest: bool = True) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Load a checkpoint and verify its digest; a truncated, corrupt or altered file raises an
    MMBenchError naming it. Without `require_digest`, files without a digest (written before
    digests existed) load unverified."""
    path = Path(path)
    try:
        tensors, meta = load_safetensors(path)
    except DataError as exc:
        if not path.exists():
            raise
        detail = str(exc).removeprefix(f"{exc.path}: ") if exc.path else str(exc)
        raise MMBenchError(f"checkpoint is corrupt or truncated and was not loaded ({detail}); "
                           "delete it to start over", path) from exc
    stored = meta.get("sha256")
    if stored is None:
        if require_digest:
            raise MMBenchError("checkpoint has no sha256 in its metadata (corrupt, or written by an mmbench without "
                               "checkpoint checksums); it was not loaded (delete it to start over)", path)
        return tensors, meta
    if checkpoint_digest(tensors, meta) != stored:
        raise MMBenchError("checkpoint is corrupt: its sha256 does not match its contents; it was not loaded "
                           "(delete it to start over)", path)
    return tensors, meta


def save_model(path: Path, model: nn.Module, model_config: dict[str, Any], extra: dict[str, str] | None = None) -> None:
    meta = {"format": MODEL_FORMAT, "config": json.dumps(model_config)} | (extra or {})
    save_checked(Path(path), model_tensors(model), meta)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[MultimodalModel, dict[str, Any]]:
    """A model saved by `save_model` (weights + config; nothing is unpickled; digest verified)."""
    tensors, meta = load_checked(path, require_digest=False)
    if meta.get("format") != MODEL_FORMAT or "config" not in meta:
        raise MMBenchError("not an mmbench model checkpoint (no config in its metadata)", path)
    config = json.loads(meta["config"])
    if config.get("architecture") == "dual-encoder":
        from mmbench.models.dual_encoder import DualEncoder

        model = DualEncoder(config)
    else:
        model = MultimodalModel(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise MMBenchError(f"checkpoint does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})", path)
    return model.to(device), config
