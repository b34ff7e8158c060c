"""`mmbench data export`: a task's splits written as a Hugging Face dataset (``save_to_disk``).

One ``DatasetDict`` with the task's split roles ``train`` / ``validation`` / ``test`` (those the
task has). Columns, each row one sample exactly as mmbench trains and evaluates on it:

- ``id`` (string);
- ``target``: a ``ClassLabel`` with the task's class names (multiclass, binary), a float32 0/1
  list of length C (multilabel) or float32 (regression);
- per modality ``<m>``: the tensor mmbench feeds the model (frozen-encoder features, pixels,
  token ids, padded sequences), as a fixed-shape list / ``Array2D``..``Array5D`` of its dtype;
  zeros where the modality is missing;
- ``present_<m>`` (bool) and, for sequence modalities, ``length_<m>`` (int64).

``datasets.load_from_disk(DIR)`` reads it back identical (same values, dtypes and order); the
task's name, modalities and target type are in each split's ``info.description`` (JSON). The
folder is written under a temporary name and renamed, so a failed export leaves nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.samples import Split
from mmbench.core.errors import MMBenchError
from mmbench.data.tasks import TaskSpec

_VALUE_TYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64", np.dtype(np.int64): "int64",
                np.dtype(np.int32): "int32", np.dtype(np.uint8): "uint8", np.dtype(np.bool_): "bool",
                np.dtype(np.float16): "float16"}


def _array_feature(arr: np.ndarray) -> Any:
    import datasets

    value = _VALUE_TYPES.get(arr.dtype)
    if value is None:
        raise MMBenchError(f"cannot export a tensor of dtype {arr.dtype}")
    shape = arr.shape[1:]
    if len(shape) == 0:
        return datasets.Value(value)
    if len(shape) == 1:
        return datasets.List(datasets.Value(value), length=int(shape[0]))
    if len(shape) > 5:
        raise MMBenchError(f"cannot export a {len(shape)}-d tensor per sample (at most 5)")
    array_type = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D, 5: datasets.Array5D}[len(shape)]
    return array_type(shape=tuple(int(s) for s in shape), dtype=value)


def split_to_hf(spec: TaskSpec, split: Split):
    """One split as a ``datasets.Dataset`` (see the module docstring)."""
    import datasets

    columns: dict[str, Any] = {"id": list(split.ids)}
    features: dict[str, Any] = {"id": datasets.Value("string")}
    y = split.targets.cpu().numpy()
    if spec.target.type in ("multiclass", "binary"):
        names = spec.target.class_names or [str(i) for i in range(int(spec.target.num_classes))]
        features["target"] = datasets.ClassLabel(names=list(names))
        columns["target"] = y.astype(np.int64)
    else:
        features["target"] = _array_feature(y.astype(np.float32))
        columns["target"] = y.astype(np.float32)
    for m in spec.modalities:
        arr = split.modalities[m].cpu().numpy()
        features[m] = _array_feature(arr)
        columns[m] = arr
        features[f"present_{m}"] = datasets.Value("bool")
        columns[f"present_{m}"] = split.present[m].cpu().numpy().astype(bool)
        if m in split.lengths:
            features[f"length_{m}"] = datasets.Value("int64")
            columns[f"length_{m}"] = split.lengths[m].cpu().numpy().astype(np.int64)
    description = json.dumps({"mmbench_task": spec.name, "split": split.name, "modalities": list(spec.modalities),
                              "target_type": spec.target.type, "num_classes": spec.target.num_classes})
    features = datasets.Features(features)
    return datasets.Dataset.from_dict(columns, features=features,
                                      info=datasets.DatasetInfo(description=description, features=features))


def export_task(spec: TaskSpec, out: str | Path, data_dir: Any = None) -> dict[str, int]:
    """Write the task's splits to `out` as a Hugging Face DatasetDict; {role: rows}."""
    import datasets

    from mmbench.data.splits import load_task_split, task_dataset

    out = Path(out)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise MMBenchError("export folder exists and is not empty", out)
    dataset = task_dataset(spec, data_dir)
    roles = [r for r in ("train", "validation", "test") if getattr(spec.splits, r)]
    parts = {r: split_to_hf(spec, load_task_split(spec, r, data_dir, dataset)) for r in roles}
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.disable_progress_bars()
    try:
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {r: len(d) for r, d in parts.items()}
