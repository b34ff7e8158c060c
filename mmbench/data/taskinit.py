"""`mmbench tasks init NAME --hf PATH_OR_ID`: a task spec drafted from a Hugging Face dataset.

The dataset's features say most of a task: the id column, the target (a ``ClassLabel`` is a
multiclass or binary target with its names, a list of ``ClassLabel`` a multilabel one, a float
column a regression target), the modalities (``Image`` -> image, strings -> text, numeric
columns, lists and arrays -> features), each modality's ``present_<m>`` / ``length_<m>`` column
(as ``mmbench data export`` writes them) and the splits (the ``DatasetDict``'s split names).
What the features cannot say is written as a ``TODO: ...`` value, which the spec loader refuses
(naming the field) until it is filled in. Every field carries a comment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmbench.core.errors import DataError, MMBenchError

ID_NAMES = ("id", "uid", "idx", "key", "sample_id", "example_id", "image_id")
TARGET_NAMES = ("label", "labels", "target", "y", "class", "score", "sentiment")
VALIDATION_NAMES = ("validation", "valid", "val", "dev")
METRICS = {  # target type -> (metrics with their direction, the primary one)
    "binary": ([("accuracy", True), ("f1_macro", True)], "accuracy"),
    "multiclass": ([("accuracy", True), ("f1_macro", True)], "accuracy"),
    "multilabel": ([("f1_micro", True), ("f1_macro", True), ("f1_samples", True), ("hamming_loss", False)], "f1_micro"),
    "regression": ([("mae", False), ("corr", True)], "mae"),
}


def _flow(value: Any) -> str:
    """`value` as one line of YAML flow style."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**9, sort_keys=False).strip()[1:-1]


def _todo(text: str) -> str:
    return f"TODO: {text}"


@dataclass
class Draft:
    """What was inferred: values and, per field, the comment that says where it came from."""

    id: str | None = None
    target: str | None = None
    target_spec: dict[str, Any] = field(default_factory=dict)
    target_note: str = ""
    target_format: str | None = None
    modalities: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)


def _kind(feature: Any) -> str:
    """image, text, number, numbers (list / array of numbers), classlabel, classlabels, flag or other."""
    import datasets

    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, datasets.ClassLabel):
        return "classlabel"
    if isinstance(feature, datasets.Value):
        dtype = str(feature.dtype)
        if dtype in ("string", "large_string"):
            return "text"
        if dtype == "bool":
            return "flag"
        return "number" if re.match(r"u?int|float|double|half", dtype) else "other"
    if type(feature).__name__.startswith("Array"):
        return "numbers" if re.match(r"u?int|float|double|half", str(feature.dtype)) else "other"
    inner = getattr(feature, "feature", None)
    if inner is not None and not isinstance(feature, dict):
        kind = _kind(inner)
        return {"classlabel": "classlabels", "number": "numbers", "numbers": "numbers"}.get(kind, "other")
    return "other"


def _modality_name(column: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", column) or "m"


def _export_info(ds: Any) -> dict[str, Any]:
    """The task facts `mmbench data export` records in a split's description, if any."""
    try:
        info = json.loads(ds.info.description or "")
    except (TypeError, ValueError):
        return {}
    return info if isinstance(info, dict) and "mmbench_task" in info else {}


def _infer_target(draft: Draft, ds: Any, kinds: dict[str, str]) -> None:
    exported = _export_info(ds)
    target = next((c for c, k in kinds.items() if k in ("classlabel", "classlabels")), None)
    target = target or next((c for c in TARGET_NAMES if c in kinds), None)
    if target is None:
        draft.target = _todo(f"the target column (one of: {', '.join(kinds)})")
        draft.target_spec = {"type": _todo("multiclass, binary, multilabel or regression")}
        return
    draft.target, kind, feature = target, kinds[target], ds.features[target]
    if kind == "classlabel":
        names = list(feature.names)
        draft.target_spec = {"type": "binary" if len(names) == 2 else "multiclass", "num_classes": len(names),
                             "class_names": names}
        draft.target_note = f"from the ClassLabel column {target!r}"
    elif kind == "classlabels":
        names = list(feature.feature.names)
        draft.target_spec = {"type": "multilabel", "num_classes": len(names), "class_names": names}
        draft.target_note = f"from the list-of-ClassLabel column {target!r}"
    elif kind == "numbers" and (exported.get("target_type") == "multilabel" or getattr(feature, "length", -1) > 0):
        width = exported.get("num_classes") or getattr(feature, "length", None)
        draft.target_spec = {"type": "multilabel", "num_classes": width or _todo("the number of labels")}
        draft.target_format = "multi_hot"
        draft.target_note = f"column {target!r} holds a 0/1 vector per row"
    elif kind == "number" and (str(feature.dtype).startswith(("float", "double", "half"))
                               or exported.get("target_type") == "regression"):
        draft.target_spec = {"type": "regression"}
        draft.target_note = f"column {target!r} holds numbers"
    elif kind == "number":
        seen = sorted({v for v in ds[target] if v is not None})
        draft.target_spec = {"type": _todo(f"multiclass or binary (column {target!r} holds integers: "
                                           f"{', '.join(map(str, seen[:10]))}{', ...' if len(seen) > 10 else ''})"),
                             "num_classes": _todo(f"the number of classes (labels seen: {len(seen)})")}
    elif kind == "text":
        names = sorted({v for v in ds[target] if v is not None})
        draft.target_spec = {"type": "binary" if len(names) == 2 else "multiclass", "num_classes": len(names),
                             "class_names": names}
        draft.target_note = f"the distinct strings of column {target!r}, sorted (the index order: reorder if it matters)"
    else:
        draft.target_spec = {"type": _todo(f"the target type of column {target!r} ({type(feature).__name__})")}


def _infer(ds: Any) -> Draft:
    kinds = {c: _kind(f) for c, f in ds.features.items()}
    draft = Draft()
    draft.id = next((c for c in kinds if (c in ID_NAMES or c.endswith("_id")) and kinds[c] in ("text", "number")), None)
    _infer_target(draft, ds, kinds)
    flags = {c for c in kinds if c.startswith(("present_", "length_"))}
    scalars = []
    for column, kind in kinds.items():
        if column in (draft.id, draft.target) or column in flags:
            continue
        m = _modality_name(column)
        if kind == "image":
            draft.modalities[m], draft.notes[m] = {"column": column, "type": "image"}, "an Image column"
        elif kind == "text":
            draft.modalities[m], draft.notes[m] = {"column": column, "type": "text"}, "a string column"
        elif kind == "numbers":
            draft.modalities[m], draft.notes[m] = {"column": column, "type": "features"}, "a numeric list / array column"
        elif kind == "number":
            scalars.append(column)
        else:
            draft.skipped.append(f"{column} ({type(ds.features[column]).__name__})")
    if scalars:
        name = "tabular" if "tabular" not in draft.modalities else "tabular_columns"
        draft.modalities[name] = {"columns": scalars, "type": "features"}
        draft.notes[name] = "the numeric columns, concatenated"
    for m, spec in draft.modalities.items():
        column = spec.get("column")
        for key, prefix in (("present", "present_"), ("lengths", "length_")):
            if column and f"{prefix}{column}" in kinds:
                spec[key] = f"{prefix}{column}"
    return draft


def _infer_splits(names: list[str]) -> dict[str, str]:
    splits = {}
    if "train" in names:
        splits["train"] = "train"
    val = next((n for n in VALIDATION_NAMES if n in names), None)
    if val:
        splits["validation"] = val
    splits["test"] = "test" if "test" in names else _todo(f"the split to score (the dataset's splits: {', '.join(names)})")
    return splits


def draft_task_spec(name: str, source: str, root: Path | None = None) -> str:
    """The text of a commented task spec named `name` for the dataset at `source` (a local
    save_to_disk folder, a folder or file of Parquet / Arrow / JSON lines, or a Hub id)."""
    from mmbench.data.datasets.hf import open_hf

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise MMBenchError(f"task name {name!r}: use lower-case letters, digits, '.', '_' and '-'")
    local = Path(source).expanduser()
    if local.exists():
        where = {"path": str(local.resolve())}
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith((".", "/")):
        where = {"hub": source}
    else:
        raise DataError("not a local dataset (a save_to_disk folder, Parquet / Arrow / JSON files) nor a Hub id "
                        "(owner/name)", source)
    parts = open_hf(Path.cwd(), **where)
    if not parts:
        raise DataError("the dataset has no splits", source)
    first = next(iter(parts.values()))
    draft = _infer(first)
    splits = _infer_splits(list(parts))
    return _render(name, source, where, draft, splits, list(parts))


def _render(name: str, source: str, where: dict[str, str], d: Draft, splits: dict[str, str], names: list[str]) -> str:
    target_type = d.target_spec.get("type")
    metrics, primary = METRICS.get(target_type, METRICS["multiclass"])
    modalities = list(d.modalities) or [_todo("the modalities the model sees")]
    lines = [
        f"# Task spec drafted by `mmbench tasks init` from {source}.",
        "# Every field is described in docs/task-spec.md; `mmbench tasks show FILE` prints it resolved.",
        "# A value starting with TODO must be filled in: the spec is refused until it is.",
        f"name: {_flow(name)}  # the task's name (folders of runs and leaderboard entries use it)",
        f"description: {_flow(f'{name}: drafted from {source}')}  # one line shown by `mmbench tasks`",
        "dataset:",
        "  name: hf  # the Hugging Face datasets loader (docs/datasets.md)",
        "  options:",
    ]
    key, value = next(iter(where.items()))
    lines.append(f"    {key}: {_flow(value)}  # " + ("where the data is (absolute)" if key == "path" else "the Hub dataset id"))
    lines.append(f"    id: {_flow(d.id)}  # the id column" if d.id else
                 "    # id: COLUMN  # no id column found: rows are named <split>-<row> (give one if the data has ids)")
    lines.append(f"    target: {_flow(d.target)}  # the target column")
    if d.target_format:
        lines.append(f"    target_format: {d.target_format}  # each row's target is a 0/1 vector of num_classes values")
    lines.append("    modalities:  # name: {column(s), type: image | text | features, present: bool column, lengths: int column}")
    if not d.modalities:
        lines.append("      {}  # no image, text or numeric column found: map one as NAME: {column: COLUMN, type: ...}")
    for m, spec in d.modalities.items():
        lines.append(f"      {m}: {_flow(spec)}  # {d.notes[m]}")
    for skipped in d.skipped:
        lines.append(f"      # not mapped: {skipped}")
    if any(spec.get("type") == "text" for spec in d.modalities.values()):
        lines.append("    # text_encoder: tokens  # text as token ids, embedded by a trained encoder (default: frozen MiniLM "
                     "sentence embeddings)")
    lines.append(f"splits:  # role: the dataset's split (it has: {', '.join(names)})")
    for role, split in splits.items():
        lines.append(f"  {role}: {_flow(split)}")
    if "train" not in splits:
        lines.append("  # train: SPLIT  # no train split found: needed by `mmbench train`")
    if "validation" not in splits:
        lines.append("  # validation: SPLIT  # no validation split found: `mmbench train` needs one to pick the best epoch")
    lines.append(f"modalities: {_flow(modalities)}  # what the model sees (names from dataset.options.modalities)")
    lines.append(f"target:  # {d.target_note or 'what is predicted'}")
    for k, v in d.target_spec.items():
        lines.append(f"  {k}: {_flow(v)}")
    lines.append(f"metrics:  # for a {target_type if target_type in METRICS else 'multiclass'} target "
                 "(docs/baselines.md lists the metrics)")
    for metric, higher in metrics:
        lines.append(f"  - {{name: {metric}, higher_is_better: {'true' if higher else 'false'}}}")
    lines.append(f"primary_metric: {primary}  # ranks the leaderboard")
    lines.append("missing:  # the missing-modality conditions evaluated (docs/datasets.md)")
    lines.append("  seed: 0")
    lines.append(f"  conditions: {_flow(['clean', 'drop-each'] if len(d.modalities) > 1 else ['clean'])}")
    return "\n".join(lines) + "\n"


def todo_fields(text: str) -> list[str]:
    """The field paths of a drafted spec still holding a TODO."""
    from mmbench.data.tasks import todo_values

    return [path for path, _ in todo_values(yaml.safe_load(text))]
