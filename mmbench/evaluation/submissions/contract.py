"""The call contract of a submitted model, stated once: the one-line expected call (checked in
the worker before any data is run), the template `mmbench evaluate TASK --template DIR` writes,
and :func:`export_submission`, which writes a `.pt2` with the right signature.

Classification, binary, multi-label and regression tasks call, for every batch of every condition::

    model(modalities, present, lengths) -> Tensor [B, C]   (regression: [B] or [B, 1])

- ``modalities``: ``{name: float Tensor [B, *shape]}`` (a sequence modality: ``[B, T, *shape]``,
  zero-padded to the longest sequence of the batch); a missing modality's rows are zero-filled;
- ``present``: ``{name: bool Tensor [B]}``, False where the modality is missing in that row;
- ``lengths``: ``{name: int64 Tensor [B]}``, the valid time steps, for sequence modalities only
  (an empty dict when the task has none);
- the output: logits (multiclass, binary: argmax, or softmax of label 1 for AUROC; multi-label:
  sigmoid per label) or the real value (regression), as floating point.

Retrieval tasks call ``encode_image(image[, present]) -> [B, D]`` and
``encode_text(text[, present][, lengths]) -> [B, D]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmbench.core.errors import MMBenchError

CALL = "model(modalities: dict[str, Tensor [B, ...]], present: dict[str, bool Tensor [B]], " \
       "lengths: dict[str, int64 Tensor [B]])"
RETRIEVAL_CALL = "encode_image(image [B, ...][, present bool [B]]) -> [B, D] and " \
                 "encode_text(text [B, ...][, present][, lengths int64 [B]]) -> [B, D]"


def output_shape(target_type: str, outputs: int) -> str:
    return "float Tensor [B] or [B, 1]" if target_type == "regression" else f"float Tensor [B, {outputs}]"


def expected_call(task_info: dict[str, Any]) -> str:
    """The call mmbench makes, in one line, for a task described by the worker's `task_info`."""
    if task_info.get("target_type") == "retrieval":
        return RETRIEVAL_CALL
    return f"{CALL} -> {output_shape(task_info['target_type'], int(task_info.get('outputs') or 1))}"


TEMPLATE = '''"""A submission for task {task}:

    mmbench evaluate {task} --model model.py:build --limit 4        # quick check: outputs on 4 items
    mmbench evaluate {task} --model model.py:build --weights weights.safetensors

mmbench calls, for every batch of every missing-modality condition,

    {call}

modalities ({modalities}): {inputs}. A missing modality's rows are zero-filled and marked
False in `present`: read the mask, never the zeros. `lengths` holds the valid time steps of
the sequence modalities ({sequences}). Output: {output}.

build(task_info) receives {{"task", "target_type", "num_classes", "modalities", "inputs": {{name:
{{"shape", "sequence"}}}}, "outputs", "range"}} (range: a regression task's [low, high], else None).
Save trained weights with safetensors.torch.save_file(model.state_dict(), "weights.safetensors"), or write a .pt2 with
mmbench.export_submission(model, "{task}", "model.pt2").
"""

import math

import torch
from torch import nn


class Model(nn.Module):
    """Each present modality encoded (sequences: mean over valid steps), averaged, then a linear head."""

    def __init__(self, task_info, hidden=64):
        super().__init__()
        inputs = task_info["inputs"]
        self.names = sorted(inputs)
        self.sequence = {{m: bool(inputs[m]["sequence"]) for m in self.names}}
        dims = {{m: math.prod(inputs[m]["shape"]) for m in self.names}}
        self.encoders = nn.ModuleDict({{m: nn.Linear(dims[m], hidden) for m in self.names}})
        self.head = nn.Linear(hidden, task_info["outputs"])
        self.range = task_info.get("range")  # a regression task's [low, high]: predictions outside it are refused

    def forward(self, modalities, present, lengths):
        total, count = 0.0, 0.0
        for m in self.names:
            x = modalities[m].float()
            if self.sequence[m]:
                steps = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[m][:, None]
                x = (x.flatten(2) * steps[..., None]).sum(1) / lengths[m].clamp(min=1)[:, None]
            h = torch.relu(self.encoders[m](x.flatten(1)))
            p = present[m].float()[:, None]
            total, count = total + h * p, count + p
        out = self.head(total / count.clamp(min=1.0))
        return out.clamp(*self.range) if self.range else out


def build(task_info):
    return Model(task_info)
'''

RETRIEVAL_TEMPLATE = '''"""A retrieval submission for task {task}:

    mmbench evaluate {task} --model model.py:build --limit 4        # quick check
    mmbench evaluate {task} --model model.py:build --weights weights.safetensors

mmbench calls, batch by batch, on every gallery image and every caption (rows in a random order),

    {call}

inputs: {inputs}. A missing image is zero-filled with present=False: return an embedding for it
anyway (a learned vector). Embeddings of both modalities share the dimension D; rows must not
be all zero. They are compared by cosine similarity.
"""

import math

import torch
from torch import nn


class DualEncoder(nn.Module):
    def __init__(self, task_info, dim=128):
        super().__init__()
        inputs = task_info["inputs"]
        self.image = nn.Linear(math.prod(inputs["image"]["shape"]), dim)
        self.text = nn.Linear(math.prod(inputs["text"]["shape"]), dim)
        self.missing_image = nn.Parameter(torch.randn(dim))

    def encode_image(self, image, present):
        z = self.image(image.flatten(1).float())
        return torch.where(present[:, None], z, self.missing_image.expand_as(z))

    def encode_text(self, text, present):
        return self.text(text.flatten(1).float())


def build(task_info):
    return DualEncoder(task_info)
'''


def _describe(inputs: dict[str, dict[str, Any]]) -> str:
    unknown = [d["why"] for d in inputs.values() if d.get("shape") is None]
    if unknown:  # written without the data: the shapes come with task_info at build time
        return (f"{', '.join(sorted(inputs))}, each [B, *shape] or, for a sequence, [B, T, *shape]; "
                f"task_info[\"inputs\"] gives each one's shape and whether it is a sequence (the data was "
                f"not loaded when this file was written: {unknown[0]})")
    return "; ".join(f"{m} [B, {'T, ' if d['sequence'] else ''}{', '.join(map(str, d['shape']))}]"
                     for m, d in sorted(inputs.items()))


def template_source(spec: Any, inputs: dict[str, dict[str, Any]]) -> str:
    """The text of a working `model.py` for the task, given its inputs (``describe_inputs``)."""
    from mmbench.models.model import num_outputs

    if spec.target.type == "retrieval":
        return RETRIEVAL_TEMPLATE.format(task=spec.name, call=RETRIEVAL_CALL, inputs=_describe(inputs))
    outputs = num_outputs(spec.target.type, spec.target.num_classes)
    if any(d["shape"] is None for d in inputs.values()):
        sequences = 'task_info["inputs"][name]["sequence"] says which'
    else:
        sequences = ", ".join(m for m, d in sorted(inputs.items()) if d["sequence"]) or "none here: lengths is empty"
    return TEMPLATE.format(task=spec.name, call=expected_call({"target_type": spec.target.type, "outputs": outputs}),
                           modalities=", ".join(sorted(inputs)), inputs=_describe(inputs), sequences=sequences,
                           output=output_shape(spec.target.type, outputs))


def write_template(spec: Any, folder: Path, data_dir: Any = None) -> Path:
    """Write `folder`/model.py for the task (refuses to overwrite one). The template's code reads
    every shape from ``task_info`` when it is built, so it needs no data; its docstring states
    the inputs' shapes, read from the task's validation split (its first rows) where that split
    loads here, else says that the shapes come with ``task_info`` (a coco-retrieval without
    train2017, a task whose data is not downloaded yet)."""
    from mmbench.core.io import atomic_write_text

    path = Path(folder) / "model.py"
    if path.exists():
        raise MMBenchError("a model.py is already there; give another --template folder", path)
    atomic_write_text(path, template_source(spec, _template_inputs(spec, data_dir)))
    return path


def _template_inputs(spec: Any, data_dir: Any) -> dict[str, dict[str, Any]]:
    """``describe_inputs`` of the validation (else test) split; without the data, each modality
    with ``shape`` None and ``why`` (the one-line reason the split did not load)."""
    from mmbench.data.splits import load_task_split
    from mmbench.models.model import describe_inputs

    role = "validation" if spec.splits.validation else "test"
    try:
        return describe_inputs(load_task_split(spec, role, data_dir))
    except (MMBenchError, OSError) as exc:
        why = " ".join(str(exc).split()).replace("\\", "/").replace('"', "'")  # inside the template's docstring
        return {m: {"shape": None, "sequence": None, "why": why} for m in spec.modalities}


def export_submission(model: Any, task: str, path: str | Path, data_dir: Any = None, rows: int = 4) -> Path:
    """Export `model` (``forward(modalities, present, lengths)``) as a `.pt2` for ``--model``:
    traced on the first `rows` rows of the task's validation split, with a dynamic batch
    dimension (sequences keep the split's padded length), saved with torch.export."""
    import torch

    from mmbench.data.splits import load_task_split
    from mmbench.data.tasks import get_task

    spec = get_task(task)
    if spec.target.type == "retrieval":
        raise MMBenchError("a retrieval model exports two programs: use mmbench.save_retrieval_program")
    split = load_task_split(spec, "validation" if spec.splits.validation else "test", data_dir)
    b = split.batch(torch.arange(min(rows, len(split))))
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    dynamic = tuple({m: {0: batch} for m in part} for part in (b.modalities, b.present, b.lengths))
    model.eval()
    ep = torch.export.export(model, (b.modalities, b.present, b.lengths), dynamic_shapes=dynamic)
    path = Path(path)
    torch.export.save(ep, str(path))
    return path
