"""docs/task-spec.md, generated from the task-spec models (every field, its type, default and
allowed values), each loader's options (from its constructor) and one example per dataset kind
(the built-in specs, and a drafted `hf` one). `python -m mmbench.data.taskdoc [FILE]` writes it;
a test checks the file is current."""

from __future__ import annotations

import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mmbench.data.tasks import HF_TASK_FIELDS, Cluster, DatasetRef, Missing, MetricRef, Splits, Target, TaskSpec, builtin_dir

MODELS: tuple[type[BaseModel], ...] = (TaskSpec, DatasetRef, Splits, Target, MetricRef, Missing, Cluster)

HF_EXAMPLE = """\
# drafted by `mmbench tasks init memes --hf /data/memes` from a DatasetDict with splits
# train / validation / test and features uid (string), image (Image), text (string),
# label (ClassLabel: benign, hateful)
name: memes
description: 'memes: drafted from /data/memes'
dataset:
  name: hf
  options:
    path: /data/memes
    id: uid
    target: label
    modalities:  # name: {column or columns, type: image | text | features, present: COLUMN, lengths: COLUMN}
      image: {column: image, type: image}
      text: {column: text, type: text}
splits:
  train: train
  validation: validation
  test: test
modalities: [image, text]
target:
  type: binary
  num_classes: 2
  class_names: [benign, hateful]
metrics:
  - {name: accuracy, higher_is_better: true}
  - {name: f1_macro, higher_is_better: true}
primary_metric: accuracy
missing:
  seed: 0
  conditions: [clean, drop-each]
"""


def type_name(annotation: Any) -> str:
    """A field's type in words: `int or null`, `list of str`, `one of: a, b`, `Target`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if origin is Literal:
        return "one of: " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default
    if isinstance(value, BaseModel):
        return "its fields' defaults"
    return f"`{value!r}`" if value not in (None, PydanticUndefined) else "null"


def _model_table(model: type[BaseModel]) -> list[str]:
    lines = [f"### {model.__name__}", "", " ".join((model.__doc__ or "").split()), "",
             "| field | type | default | meaning |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        pattern = next((m.pattern for m in info.metadata if getattr(m, "pattern", None)), None)
        low = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
        min_len = next((m.min_length for m in info.metadata if getattr(m, "min_length", None)), None)
        notes = [info.description or "", f"pattern `{pattern}`" if pattern else "",
                 f"at least {low}" if low is not None else "", f"at least {min_len} item" if min_len else ""]
        desc = "; ".join(n for n in notes if n).replace("|", "\\|")
        lines.append(f"| `{name}` | {type_name(info.annotation)} | {_default(info)} | {desc} |")
    return lines + [""]


def _loader_options() -> list[str]:
    from mmbench.core.registry import DATASETS

    lines = ["## Dataset options", "",
             "`dataset.options` are the keyword options of the loader `dataset.name` (defaults from its code; "
             "docs/datasets.md says what each does). An unknown option is refused, naming the nearest.", ""]
    for name, cls in DATASETS.items():
        params: dict[str, Any] = {}
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                for p in inspect.signature(vars(klass)["__init__"]).parameters.values():
                    if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "data_dir"):
                        params.setdefault(p.name, p.default)
        shown = ", ".join(f"`{k}`" + ("" if v is inspect.Parameter.empty else f" (`{v!r}`)") for k, v in params.items())
        lines.append(f"- **{name}**: {shown or 'none'}")
    taken = ", ".join(f"`{k}` (give `{v}`)" for k, v in HF_TASK_FIELDS.items())
    return lines + ["", f"In a task spec the `hf` loader takes these from the task's own fields, not from its "
                        f"options: {taken}.", ""]


def _examples() -> list[str]:
    lines = ["## Examples, one per dataset kind", ""]
    seen: set[str] = set()
    for path in sorted(builtin_dir("tasks").glob("*.yaml")):
        from mmbench.data.tasks import load_task_spec

        kind = load_task_spec(path).dataset.name
        if kind in seen:
            continue
        seen.add(kind)
        lines += [f"### `{kind}`: tasks/{path.name}", "", "```yaml", path.read_text(encoding="utf-8").rstrip(), "```", ""]
    return lines + ["### `hf`: a Hugging Face dataset", "", "```yaml", HF_EXAMPLE.rstrip(), "```", ""]


def task_spec_reference() -> str:
    """The text of docs/task-spec.md."""
    lines = [
        "# Task spec reference",
        "",
        "<!-- generated by `python -m mmbench.data.taskdoc docs/task-spec.md` from mmbench/data/tasks.py; "
        "tests/test_task_init.py checks it is current -->",
        "",
        "A task spec is a YAML file: built in (`tasks/`), in a folder on `MMBENCH_TASKS_PATH`, or given by path "
        "wherever a task name is taken (`mmbench data info my-task.yaml`, `mmbench train ./my-task.yaml ...`). "
        "`mmbench tasks init NAME --hf PATH_OR_ID` drafts one from a Hugging Face dataset; `mmbench tasks show "
        "NAME_OR_FILE` prints one resolved, with every default filled in.",
        "",
        "Every problem is one line `FILE: field.path: problem`: an unknown key names the nearest valid one, a "
        "value left as `TODO: ...` by `tasks init` is refused until filled in, and the cross-field checks below "
        "run when the spec is read (the ones that need the data, when it is loaded).",
        "",
        "Cross-field checks:",
        "",
        "- `target.num_classes` is required for multiclass, binary (2) and multilabel targets; a regression or "
        "retrieval target has no classes; `range` is for regression only;",
        "- `target.class_names` has `num_classes` unique names, in index order; against a `ClassLabel` target "
        "column they must be its names in its order, and `num_classes` its number of names;",
        "- a `ClassLabel` column is a multiclass or binary target, a list of `ClassLabel` a multilabel one;",
        "- `dataset.options` `num_classes`, `class_names`, `target_type` may not contradict `target`; the `hf` "
        "loader's target and splits are given once, in the task's fields;",
        "- `primary_metric` is one of `metrics`, each metric fits the target type and its `higher_is_better` is "
        "the metric's own;",
        "- `missing.conditions` and `missing.train` name the task's modalities.",
        "",
        "## Fields",
        "",
    ]
    for model in MODELS:
        lines += _model_table(model)
    lines += _loader_options() + _examples()
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    text = task_spec_reference()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
