"""The standard model: one encoder per modality -> a registered fusion -> an MLP head.

Built from a plain config dict (JSON-serialisable, stored beside every checkpoint) so a
checkpoint is weights (safetensors) + config, never a pickled model.

Model interface (what `mmbench evaluate --model` expects of any submitted module):
``model(modalities: dict[str, Tensor], present: dict[str, Tensor], lengths: dict[str, Tensor])
-> Tensor`` of logits [B, C] for classification or predictions [B] / [B, 1] for regression;
a model whose forward takes a ``steps`` keyword also receives, under a segment condition, the
observed time steps (mmbench.data.segments).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmbench.data.samples import VOCABULARIES, Split
from mmbench.models.encoders import default_encoder_for
from mmbench.models.fusions.base import masked
from mmbench.core.registry import ENCODERS, FUSIONS


def describe_inputs(split: Split) -> dict[str, dict[str, Any]]:
    """Per-modality input description {name: {shape: per-sample shape, sequence: bool}}; a
    modality of token ids (a sequence of integer ids) adds ``tokens: true`` and, where its loader
    gives them (``Split.info["vocabularies"]``), the tokenizer's ``vocab_size`` and ``pad_id``."""
    out = {}
    vocabularies = (getattr(split, "info", None) or {}).get(VOCABULARIES) or {}
    for name in split.modality_names:
        is_seq = name in split.lengths
        values = split.modalities[name]
        shape = tuple(values.shape[2:] if is_seq else values.shape[1:])
        out[name] = {"shape": list(shape), "sequence": is_seq}
        if is_seq and not shape and not values.dtype.is_floating_point and values.dtype != torch.bool:
            out[name]["tokens"] = True
            vocab = vocabularies.get(name) or {}
            out[name].update({k: int(vocab[k]) for k in ("vocab_size", "pad_id") if k in vocab})
    return out


def num_outputs(target_type: str, num_classes: int | None) -> int:
    return 1 if target_type == "regression" else int(num_classes or 2)


class MultimodalModel(nn.Module):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        inputs: dict[str, dict] = config["inputs"]
        modalities = sorted(config.get("modalities") or inputs)
        self.modalities = modalities
        emb = int(config.get("embed_dim", 64))
        encoders = {}
        for m in modalities:
            spec = dict((config.get("encoders") or {}).get(m, {}))
            about = inputs[m]
            name = spec.pop("name", None) or default_encoder_for(tuple(about["shape"]), about["sequence"],
                                                                 bool(about.get("tokens")))
            encoder_cls = ENCODERS.get(name)
            if about.get("tokens") and getattr(encoder_cls, "takes_vocabulary", False):
                spec = {k: about[k] for k in ("vocab_size", "pad_id") if k in about} | spec
            encoders[m] = encoder_cls(tuple(about["shape"]), out_dim=emb, **spec)
        self.encoders = nn.ModuleDict(encoders)
        self.outputs = num_outputs(config["target_type"], config.get("num_classes"))
        fusion_cls = FUSIONS.get(config["fusion"])
        hidden = int(config.get("hidden_dim", 128))
        fusion_out = self.outputs if fusion_cls.late else hidden
        self.fusion = fusion_cls({m: encoders[m].out_dim for m in modalities}, fusion_out, **config.get("fusion_options", {}))
        self.used = [m for m in modalities if m in self.fusion.used_modalities()]
        if fusion_cls.late:
            self.head: nn.Module = nn.Identity()
        else:
            self.head = nn.Sequential(nn.GELU(), nn.Dropout(float(config.get("dropout", 0.1))), nn.Linear(hidden, self.outputs))

    def forward(self, modalities: dict[str, Tensor], present: dict[str, Tensor], lengths: dict[str, Tensor] | None = None,
                complete: tuple[str, ...] = (), steps: dict[str, Tensor] | None = None) -> Tensor:
        """`complete`: modalities the caller knows are present in every row (e.g. the trainer,
        from the whole split): their encoders skip the mask, so batch norm takes its fused
        kernel without reading the mask (a host sync per layer on CUDA). `steps` (the observed
        time steps under a segment condition, mmbench.data.segments) is accepted and not read:
        the baselines see the training-mean fill as data."""
        lengths = lengths or {}
        pooled, seqs, masks = {}, {}, {}
        for m in self.used:  # an encoder whose output the fusion ignores is not run
            encoder = self.encoders[m]
            enc = (encoder(modalities[m], lengths.get(m), present=None if m in complete else present[m])
                   if getattr(encoder, "uses_present", False) else encoder(modalities[m], lengths.get(m)))
            pooled[m] = masked(enc.pooled, present[m])
            if enc.sequence is not None:
                seqs[m] = masked(enc.sequence, present[m])
                masks[m] = enc.mask & present[m][:, None]
        fused = self.fusion(pooled, present, seqs or None, masks or None) if self.fusion.uses_sequences else self.fusion(pooled, present)
        out = self.head(fused)
        return out.squeeze(-1) if self.outputs == 1 else out


def used_parameter_count(model: nn.Module) -> int:
    """Parameters of the modules a model's output uses: for a :class:`MultimodalModel`, the
    encoders of the modalities its fusion reads (one for ``unimodal``), the fusion and the head;
    any other module: all its parameters."""
    if not isinstance(model, MultimodalModel):
        return int(sum(p.numel() for p in model.parameters()))
    used = [model.encoders[m] for m in model.used] + [model.fusion, model.head]
    return int(sum(p.numel() for mod in used for p in mod.parameters()))


def build_model(config: dict[str, Any]) -> MultimodalModel:
    return MultimodalModel(config)
