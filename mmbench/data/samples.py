"""The one sample and batch format every dataset, model and evaluator shares.

A sample is a plain dict ``{"id": str, "modalities": {name: Tensor}, "present": {name: bool},
"target": Tensor}``. A missing modality has ``present[name] = False``; its slot in a batch is
filled (zeros by default) so shapes stay static, and models must read the mask, never the
fill. Variable-length modalities (audio frames, tokens) are padded along their first axis and
carry their true length in ``Batch.lengths``.

Datasets here are small enough to hold a split as stacked tensors (`Split`), so training and
evaluation gather batches by index on the device instead of running per-sample Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

Sample = dict[str, Any]


@dataclass
class Batch:
    ids: list[str]
    modalities: dict[str, Tensor]
    present: dict[str, Tensor]  # bool [B]
    targets: Tensor
    lengths: dict[str, Tensor] = field(default_factory=dict)  # long [B], sequence modalities only
    # bool [B, T], True at an observed time step: only for modalities a segment condition cut
    # (mmbench.data.segments); passed to a model whose forward takes `steps`
    steps: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def padding_mask(self, name: str) -> Tensor | None:
        """Bool [B, T], True at real time steps; None for fixed-size modalities."""
        if name not in self.lengths:
            return None
        steps = self.modalities[name].shape[1]
        return torch.arange(steps, device=self.lengths[name].device)[None, :] < self.lengths[name][:, None]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            self.ids,
            {k: move(v) for k, v in self.modalities.items()},
            {k: move(v) for k, v in self.present.items()},
            move(self.targets),
            {k: move(v) for k, v in self.lengths.items()},
            {k: move(v) for k, v in self.steps.items()},
        )


def _pad_to(t: Tensor, steps: int, fill: float) -> Tensor:
    if t.shape[0] == steps:
        return t
    pad = t.new_full((steps - t.shape[0], *t.shape[1:]), fill)
    return torch.cat([t, pad], dim=0)


def collate(
    samples: Sequence[Sample],
    shapes: dict[str, tuple[int, ...]] | None = None,
    sequence_modalities: Sequence[str] = (),
    fill: float = 0.0,
) -> Batch:
    """Stack samples into a Batch; missing slots get `fill`, sequences are padded.

    `shapes` gives each modality's per-sample shape for batches in which no sample has it
    (for a sequence modality, the shape of one time step, e.g. ``(feature_dim,)``).
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    names = sorted({n for s in samples for n in (*s["modalities"], *s["present"])} | set(shapes or {}))
    modalities: dict[str, Tensor] = {}
    present: dict[str, Tensor] = {}
    lengths: dict[str, Tensor] = {}
    for name in names:
        mask = [bool(s["present"].get(name, False)) and name in s["modalities"] for s in samples]
        real = [s["modalities"][name] for s, m in zip(samples, mask) if m]
        is_seq = name in sequence_modalities
        if real:
            ref = real[0]
        elif shapes and name in shapes:
            ref = torch.zeros((0, *shapes[name]) if is_seq else shapes[name])
        else:
            raise ValueError(f"modality {name!r} is absent from every sample and has no declared shape")
        if is_seq:
            steps = max([t.shape[0] for t in real] + [1])
            lens = [s["modalities"][name].shape[0] if m else 0 for s, m in zip(samples, mask)]
            blank = ref.new_full((steps, *ref.shape[1:]), fill)
            rows = [_pad_to(s["modalities"][name], steps, fill) if m else blank for s, m in zip(samples, mask)]
            lengths[name] = torch.tensor(lens, dtype=torch.long)
        else:
            blank = torch.full_like(ref, fill)
            rows = [s["modalities"][name] if m else blank for s, m in zip(samples, mask)]
        modalities[name] = torch.stack(rows)
        present[name] = torch.tensor(mask, dtype=torch.bool)
    targets = torch.stack([torch.as_tensor(s["target"]) for s in samples])
    return Batch([str(s["id"]) for s in samples], modalities, present, targets, lengths)


VOCABULARIES = "vocabularies"


def vocabulary_info(modality: str, text_info: dict[str, Any]) -> dict[str, Any]:
    """``{VOCABULARIES: {modality: {vocab_size, pad_id}}}`` from a text loader's info, to merge
    into ``Split.info``; empty when the info has no tokenizer facts (embeddings, not tokens)."""
    if "vocab_size" not in text_info:
        return {}
    return {VOCABULARIES: {modality: {"vocab_size": int(text_info["vocab_size"]),
                                      "pad_id": int(text_info.get("pad_id", 0))}}}


@dataclass
class Split:
    """One dataset split held as stacked tensors (index-gatherable, movable to a device).

    ``modalities[name]`` is ``[N, ...]`` with the fill value where ``present[name]`` is False;
    sequence modalities are padded along axis 1 and listed in ``lengths``. ``info`` carries
    loader facts (counts of unreadable files, class names); ``info["mode"] == "retrieval"``
    marks targets that index a retrieval gallery rather than classes; ``info[VOCABULARIES]``
    (``{modality: {"vocab_size": int, "pad_id": int}}``) gives the tokenizer of each modality
    of token ids (see :func:`vocabulary_info`), which the default token encoder embeds.
    """

    name: str
    ids: list[str]
    modalities: dict[str, Tensor]
    present: dict[str, Tensor]
    targets: Tensor
    lengths: dict[str, Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(set(self.ids)) != n:
            raise ValueError(f"split {self.name!r} has duplicate ids")
        for group in (self.modalities, self.present, self.lengths):
            for key, t in group.items():
                if t.shape[0] != n:
                    raise ValueError(f"split {self.name!r}: {key!r} has {t.shape[0]} rows for {n} ids")
        if self.targets.shape[0] != n:
            raise ValueError(f"split {self.name!r}: {self.targets.shape[0]} targets for {n} ids")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def modality_names(self) -> list[str]:
        return sorted(self.modalities)

    def __getitem__(self, i: int) -> Sample:
        mods = {}
        for name, t in self.modalities.items():
            row = t[i]
            if name in self.lengths:
                row = row[: int(self.lengths[name][i])]
            mods[name] = row
        return {
            "id": self.ids[i],
            "modalities": mods,
            "present": {k: bool(v[i]) for k, v in self.present.items()},
            "target": self.targets[i],
        }

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def batch(self, index: Tensor) -> Batch:
        """Gather rows `index` (a long tensor on this split's device) without per-sample Python."""
        idx_cpu = index.tolist() if len(self.ids) else []
        return Batch(
            [self.ids[i] for i in idx_cpu],
            {k: v.index_select(0, index) for k, v in self.modalities.items()},
            {k: v.index_select(0, index) for k, v in self.present.items()},
            self.targets.index_select(0, index),
            {k: v.index_select(0, index) for k, v in self.lengths.items()},
        )

    def to(self, device: torch.device | str) -> "Split":
        return replace(
            self,
            modalities={k: v.to(device) for k, v in self.modalities.items()},
            present={k: v.to(device) for k, v in self.present.items()},
            targets=self.targets.to(device),
            lengths={k: v.to(device) for k, v in self.lengths.items()},
        )

    def nbytes(self) -> int:
        tensors = [*self.modalities.values(), *self.present.values(), self.targets, *self.lengths.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def with_present(self, present: dict[str, Tensor], fill: float = 0.0) -> "Split":
        """A view with presence ANDed with `present`; newly missing slots are overwritten by
        `fill` so a model that ignores masks cannot read the dropped data."""
        new_present = dict(self.present)
        new_modalities = dict(self.modalities)
        new_lengths = dict(self.lengths)
        for name, keep in present.items():
            keep = keep.to(self.present[name].device, torch.bool)
            new_present[name] = self.present[name] & keep
            shape = (-1,) + (1,) * (self.modalities[name].dim() - 1)
            new_modalities[name] = torch.where(
                new_present[name].view(shape), self.modalities[name], torch.full_like(self.modalities[name][:1], fill)
            )
            if name in self.lengths:
                new_lengths[name] = torch.where(new_present[name], self.lengths[name], 0)
        return replace(self, modalities=new_modalities, present=new_present, lengths=new_lengths)

    def subset(self, index: Sequence[int] | Tensor, name: str | None = None) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        b = self.batch(index)
        return Split(name or self.name, b.ids, b.modalities, b.present, b.targets, b.lengths, dict(self.info))

    @classmethod
    def from_samples(
        cls,
        name: str,
        samples: Sequence[Sample],
        shapes: dict[str, tuple[int, ...]] | None = None,
        sequence_modalities: Sequence[str] = (),
        info: dict[str, Any] | None = None,
    ) -> "Split":
        b = collate(samples, shapes, sequence_modalities)
        return cls(name, b.ids, b.modalities, b.present, b.targets, b.lengths, info or {})

    def summary(self) -> dict[str, Any]:
        """Counts for `mmbench data info`: samples, per-modality presence, class counts."""
        out: dict[str, Any] = {
            "samples": len(self),
            "present": {k: int(v.sum()) for k, v in sorted(self.present.items())},
        }
        if self.info.get("mode") == "retrieval":  # targets are gallery rows, not classes
            out["gallery_items"] = int(torch.unique(self.targets).numel()) if len(self) else 0
        elif not self.targets.is_floating_point() and self.targets.dim() == 1 and len(self):
            counts = torch.bincount(self.targets.cpu())
            out["classes"] = {str(i): int(c) for i, c in enumerate(counts.tolist())}
        elif self.targets.dim() == 1 and len(self):
            t = self.targets.float()
            out["target"] = {"min": float(t.min()), "max": float(t.max()), "mean": float(t.mean())}
        return out
