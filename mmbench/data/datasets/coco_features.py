"""Image and text features of the image-text loaders (COCO, MM-IMDb, UPMC Food-101, Hateful
Memes): decoded, resized pixels or frozen EfficientNet-Lite0 features for image files, MiniLM
embeddings or token ids for texts, stored in :class:`~mmbench.core.cache.FeatureCache`. An image
file that is absent or cannot be decoded is a missing image (zero-filled, masked), reported with
one :class:`ImageDataWarning` naming the dataset."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmbench.core.errors import DataError, SpecError
from mmbench.core.progress import StepProgress
from mmbench.data.datasets.base import IMAGE_ENCODERS, TEXT_ENCODERS, check_image_encoder, check_text_encoder

#: Bump when the meaning of a cached tensor changes.
_PIXELS_RECIPE = "rgb-short-side-resize-center-crop-v1"


class ImageDataWarning(UserWarning):
    """Some images were absent or unreadable; their image modality was masked."""


#: The name COCO's tests and users know the warning by.
CocoDataWarning = ImageDataWarning


def decode_image_file(path: str | os.PathLike, image_size: int = 224) -> Tensor:
    """uint8 RGB ``[3, S, S]``: decoded with torchvision (grayscale -> 3 channels), shorter side
    resized to S (antialiased), centre crop. Raises (RuntimeError / OSError) on unreadable files."""
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2 import functional as F

    img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    img = F.resize(img, [int(image_size)], antialias=True)
    return F.center_crop(img, [int(image_size), int(image_size)]).contiguous()


def load_image_pixels(paths: Sequence[Path], image_size: int = 224) -> tuple[Tensor, Tensor, dict[str, str]]:
    """(uint8 ``[N, 3, S, S]``, ok bool ``[N]``, {file: error} for files that failed to decode)."""
    out = torch.zeros((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    ok = torch.zeros(len(paths), dtype=torch.bool)
    problems: dict[str, str] = {}
    for i, p in enumerate(paths):
        try:
            out[i] = decode_image_file(p, image_size)
            ok[i] = True
        except Exception as exc:  # noqa: BLE001 - corrupt / truncated / not an image: masked, reported
            problems[str(p)] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return out, ok, problems


def _files_fingerprint(paths: Sequence[Path], base: Path) -> str:
    """SHA-256 over (name relative to base, size, mtime_ns) in the given order."""
    h = hashlib.sha256(b"mmbench-coco-images-v1\0")
    for p in paths:
        st = p.stat()
        try:
            name = p.relative_to(base).as_posix()
        except ValueError:
            name = p.as_posix()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def weights_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}"


def feature_cache(cache: Any) -> Any:
    from mmbench.core.cache import FeatureCache

    if cache is None or isinstance(cache, (str, os.PathLike)):
        return FeatureCache(cache)
    return cache


def _problems_tensor(problems: dict[str, str]) -> Tensor:
    """{file: error} as JSON bytes in a uint8 tensor, so it rides along in a cache entry."""
    return torch.tensor(list(json.dumps(problems, sort_keys=True).encode()), dtype=torch.uint8)


def _problems_from(t: Tensor | None) -> dict[str, str]:
    if t is None or not t.numel():
        return {}
    try:
        return json.loads(bytes(t.tolist()).decode())
    except ValueError:
        return {}


def _warn_unreadable(problems: dict[str, str], total: int, dataset: str, show: int = 3) -> None:
    if not problems:
        return
    first = "; ".join(f"{name}: {why}" for name, why in list(problems.items())[:show])
    more = f"; and {len(problems) - show} more" if len(problems) > show else ""
    warnings.warn(f"{dataset}: {len(problems)} of {total} image files could not be decoded; their image is masked "
                  f"({first}{more})", CocoDataWarning, stacklevel=3)


def image_features(files: Sequence[Path | None], image_encoder: str = "efficientnet", image_size: int = 224,
                   cache: Any = None, weights_path: str | None = None, base: Path | None = None,
                   dataset: str = "coco", image_output: str | None = None) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The image modality for `files` (None = absent): (tensor ``[N, ...]``, zero where not ok;
    ok bool ``[N]``; info with ``absent`` and ``unreadable`` counts). ``pixels`` -> normalised
    float ``[N, 3, S, S]``; ``efficientnet`` -> ``[N, 1280]``; ``torchvision:<arch>`` -> the
    backbone's `image_output` ``[N, D]`` (:mod:`mmbench.models.encoders.backbones`; its own
    preprocessing, `image_size` unused). Cached (see the module docstring); files that cannot
    be decoded are masked and warned about on every load."""
    from mmbench.models.encoders import pretrained

    check_image_encoder(image_encoder, dataset)
    image_size = int(image_size)
    if image_size < 8:
        raise SpecError(f"{dataset}: image_size must be at least 8, got {image_size}")
    rows = [i for i, f in enumerate(files) if f is not None]
    present = [Path(files[i]) for i in rows]  # type: ignore[arg-type]
    n = len(files)
    options: dict[str, Any] = {"image_size": image_size, "recipe": _PIXELS_RECIPE}
    if image_encoder == "pixels":
        namespace, dim = "coco-pixels", (3, image_size, image_size)

        def build() -> dict[str, Tensor]:
            px, ok, problems = load_image_pixels(present, image_size)
            return {"values": px, "ok": ok, "problems": _problems_tensor(problems)}
    elif image_encoder.startswith("torchvision:"):
        cache = feature_cache(cache)
        namespace, dim, options, build = _backbone_build(present, image_encoder, weights_path, image_output, cache,
                                                         dataset)
    else:
        weights = pretrained.efficientnet_weights_path(weights_path)
        namespace, dim = "coco-efficientnet-lite0", (pretrained.EFFICIENTNET_DIM,)
        options.update({"model": "efficientnet-lite0", "weights": weights_fingerprint(weights), "pooling": "mean"})

        def build() -> dict[str, Tensor]:
            px, ok, problems = load_image_pixels(present, image_size)
            feats = torch.zeros((len(present), *dim), dtype=torch.float32)
            idx = torch.nonzero(ok).flatten()
            if len(idx):
                with StepProgress(f"{dataset}: encoding images with EfficientNet-Lite0", len(idx), "images") as bar:
                    feats[idx] = pretrained.encode_images(px[idx], weights_path=weights, on_batch=bar.advance)
            return {"values": feats, "ok": ok, "problems": _problems_tensor(problems)}

    hit = None
    if present:
        cache = feature_cache(cache)
        base = base or Path(os.path.commonpath([str(p.parent) for p in present]))
        got = cache.get_or_build(namespace, _files_fingerprint(present, base), options, build,
                                 meta={"n_images": str(len(present))})
        hit = bool(cache.last_hit)
        dim = dim or tuple(got["values"].shape[1:])  # a backbone's size is its entry's
        if got["ok"].shape[0] != len(present) or got["values"].shape[1:] != dim:
            raise DataError(f"image feature cache entry {cache.last_key} does not match the {len(present)} images", cache.root)
        values = got["values"]
        values = pretrained.normalize_pixels(values) if image_encoder == "pixels" else values.float()
        ok_present = got["ok"].to(torch.bool)
        problems = _problems_from(got.get("problems"))
    else:
        if dim is None:
            from mmbench.models.encoders import backbones

            dim = (backbones.image_feature_dim(backbones.resolve_image_backbone(image_encoder, weights_path, image_output)),)
        values, ok_present, problems = torch.zeros((0, *dim)), torch.zeros(0, dtype=torch.bool), {}
    out = torch.zeros((n, *dim), dtype=torch.float32)
    ok = torch.zeros(n, dtype=torch.bool)
    if rows:
        idx = torch.tensor(rows)
        ok[idx] = ok_present
        out[idx] = torch.where(ok_present.view((-1,) + (1,) * len(dim)), values, torch.zeros(()))
    _warn_unreadable(problems, len(present), dataset)
    info = {"images": n, "absent": n - len(present), "unreadable": len(present) - int(ok_present.sum()),
            "image_encoder": image_encoder, "image_cache": "none" if hit is None else "hit" if hit else "miss"}
    return out, ok, info


def image_backbone_key(image_encoder: str, weights_path: str | None, image_output: str | None,
                       cache: Any) -> tuple[Any, dict[str, Any]]:
    """(resolved :class:`~mmbench.models.encoders.backbones.ImageBackbone`, the feature-cache key
    options: backbone, weights member, the weights file's content digest, output, transforms,
    precision)."""
    from mmbench.models.encoders import backbones

    backbone = backbones.resolve_image_backbone(image_encoder, weights_path, image_output)
    digest = cache.files_fingerprint([backbone.path], root=backbone.path.parent)
    return backbone, backbone.cache_options(digest, backbones.device_for(None))


def _backbone_build(present: Sequence[Path], image_encoder: str, weights_path: str | None,
                    image_output: str | None, cache: Any, dataset: str):
    """(namespace, feature shape, key options, build) of a torchvision backbone over files."""
    from mmbench.models.encoders import backbones

    backbone, options = image_backbone_key(image_encoder, weights_path, image_output, cache)

    def build() -> dict[str, Tensor]:
        feats, ok, problems = backbones.encode_image_sources(
            len(present), lambda i: backbones.read_image_file(present[i]), backbone,
            desc=f"{dataset}: {backbone.name} on {len(present):,} images")
        return {"values": feats, "ok": ok, "problems": _problems_tensor({str(present[i]): why for i, why in problems.items()})}

    return "image-backbone", None, options, build


# ------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------


def minilm_embeddings(texts: Sequence[str], cache: Any = None, model_path: str | None = None,
                      batch_size: int = 64, pooling: str = "mean") -> tuple[Tensor, bool]:
    """(float32 ``[N, 384]`` L2-normalised MiniLM embeddings, cache hit?). Cached by
    :func:`mmbench.data.datasets.text.text_features` (the same entries as the sentiment loaders)."""
    from mmbench.data.datasets.text import text_features
    from mmbench.models.encoders import pretrained

    texts = [str(t) for t in texts]
    if not texts:
        return torch.zeros((0, pretrained.MINILM_DIM)), False
    path = pretrained.minilm_path(model_path, option="text_model")
    got = text_features(texts, path, feature_cache(cache), max_length=128, batch_size=batch_size, pooling=pooling)
    return torch.from_numpy(got["features"]), got["info"]["cache"] == "hit"


def text_features(texts: Sequence[str], text_encoder: str = "minilm", cache: Any = None,
                  model_path: str | None = None, max_tokens: int = 64,
                  text_pooling: str = "mean") -> tuple[Tensor, Tensor | None, dict[str, Any]]:
    """The text modality: (``[N, D]`` embeddings or int64 token ids ``[N, T]``, lengths or
    None, info). `text_encoder` ``minilm`` encodes with `model_path` (default the packaged
    MiniLM); any other value but ``tokens`` is itself a local transformers model folder (BERT,
    RoBERTa, DeBERTa ...); `text_pooling` is ``mean`` (L2-normalised), ``cls`` or ``pooler``."""
    from mmbench.models.encoders import pretrained

    check_text_encoder(text_encoder, "coco")
    if text_encoder == "tokens":
        ids, lengths = pretrained.tokenize_texts(list(texts), model_path, max_length=int(max_tokens))
        return ids, lengths, {"text_encoder": "tokens"}
    folder = model_path if text_encoder == "minilm" else text_encoder
    feats, hit = minilm_embeddings(texts, cache, folder, pooling=text_pooling)
    return feats, None, {"text_encoder": text_encoder, "text_cache": "hit" if hit else "miss"}


def text_vocabulary(modality: str, text_encoder: str, model_path: str | None = None) -> dict[str, Any]:
    """The ``Split.info`` entry naming the tokenizer of a `modality` loaded by
    :func:`text_features` (``vocab_size``, ``pad_id``); empty for embeddings."""
    from mmbench.data.samples import vocabulary_info
    from mmbench.models.encoders import pretrained

    if text_encoder != "tokens":
        return {}
    return vocabulary_info(modality, pretrained.tokenizer_info(model_path))
