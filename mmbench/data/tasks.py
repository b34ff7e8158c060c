"""Declarative task specs (`tasks/*.yaml`), validated with pydantic.

A spec names the dataset and its options, the splits, the modalities, the target type, the
metric list (primary metric and direction) and the missing-modality conditions to evaluate.
Built-in specs ship in the repository's `tasks/` folder (inside the wheel as
`mmbench/_builtin/tasks`); more come from folders listed in `MMBENCH_TASKS_PATH`
(os.pathsep-separated) and from the `mmbench.tasks` entry-point group (a callable returning
a folder or a list of spec files).
"""

from __future__ import annotations

import difflib
import os
import re
import typing
import warnings
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmbench.core.errors import MMBenchError, SpecError

TargetType = Literal["multiclass", "binary", "regression", "retrieval", "multilabel"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Cross-field checks raise ValueError("<field>: <problem>"); the field is relative to the model
# that raised it, and `parse_task_spec` joins it onto the model's place in the spec.


class DatasetRef(_Strict):
    """Which loader reads the data (`mmbench data info NAME` lists a loader's splits)."""

    name: str = Field(description="a registered dataset loader (the built-in ones are listed under Dataset options "
                                  "below; more come through the mmbench.datasets entry points)")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the loader (docs/datasets.md "
                                    "lists each loader's); an unknown one is refused, naming the nearest")

    @model_validator(mode="after")
    def _given_once(self) -> "DatasetRef":
        if self.name == "hf":  # the hf loader takes these from the task itself
            for key, place in HF_TASK_FIELDS.items():
                if key in self.options:
                    raise ValueError(f"options.{key}: give it once, as the task's {place} (the hf loader reads it from there)")
        return self


# hf options that a task spec gives in its own fields instead: option -> the task field
HF_TASK_FIELDS = {"target_type": "target.type", "class_names": "target.class_names",
                  "num_classes": "target.num_classes", "splits": "splits"}


class Splits(_Strict):
    """Which of the dataset's splits plays each role."""

    train: str | None = Field(default=None, description="the split trained on (needed by `mmbench train`)")
    validation: str | None = Field(default=None, description="the split that picks the best epoch")
    test: str = Field(description="the split scored by `mmbench evaluate` and the leaderboard")


class Target(_Strict):
    """What is predicted."""

    type: TargetType = Field(description="multiclass (one class index), binary (two classes), multilabel (a 0/1 "
                                         "vector), regression (one number) or retrieval (image-caption matching)")
    num_classes: int | None = Field(default=None, ge=2, description="number of classes (multiclass, binary: 2, "
                                    "multilabel: labels)")
    class_names: list[str] | None = Field(default=None, description="one name per class index, in index order; for a "
                                          "ClassLabel column, its names in the same order")
    range: tuple[float, float] | None = Field(default=None, description="regression: the [low, high] range of the "
                                              "target (predictions are clipped to it)")

    @model_validator(mode="after")
    def _classes(self) -> "Target":
        classed = self.type in ("multiclass", "binary", "multilabel")
        if classed and self.num_classes is None:
            raise ValueError(f"num_classes: required for a {self.type} target")
        if self.type == "binary" and self.num_classes != 2:
            raise ValueError(f"num_classes: a binary target has 2 classes, not {self.num_classes} (use multiclass)")
        if not classed:
            for key in ("num_classes", "class_names"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: a {self.type} target has no classes")
        elif self.range is not None:
            raise ValueError(f"range: only a regression target has a range, not a {self.type} one")
        if self.class_names is not None:
            if len(self.class_names) != self.num_classes:
                raise ValueError(f"class_names: {len(self.class_names)} names for {self.num_classes} classes")
            if len(set(self.class_names)) != len(self.class_names):
                raise ValueError("class_names: the names must be unique")
        return self


class MetricRef(_Strict):
    """One metric computed on every condition."""

    name: str = Field(description="a metric of the target type (docs/baselines.md lists them; `mmbench.METRICS`)")
    higher_is_better: bool = Field(description="the metric's direction; must match the metric's own")


class Missing(_Strict):
    """The missing-modality protocol (docs/datasets.md)."""

    seed: int = Field(default=0, description="seed of the random masks")
    conditions: list[str] = Field(default_factory=lambda: ["clean"], description="conditions evaluated: clean, "
                                  "drop:M, drop-each, rate:P, pattern:M+N, patterns, missing:M:P")
    train: str | None = Field(default=None, description="one condition applied to the train and validation splits for "
                              "training (e.g. missing:both:0.7)")


class Cluster(_Strict):
    """The resampling unit of the board's tests: test items with one key are drawn together
    (a video's clips, a recording's pairs), since they are not independent. Default: the item."""

    unit: str = Field(pattern=r"^[a-z][a-z -]*$", description="what one cluster is, in words (the caption says "
                      "'resampled by video')")
    id_pattern: str | None = Field(default=None, description="a regular expression over the item's id: the key is "
                                   "its first group (`^(.+)_[0-9]+$`: a MOSI clip id without its clip number); an "
                                   "id it does not match is an error")
    field: Literal["target"] | None = Field(default=None, description="a field of the item that is its key: `target` "
                                            "(a retrieval caption's gallery image)")

    @model_validator(mode="after")
    def _one_rule(self) -> "Cluster":
        if (self.id_pattern is None) == (self.field is None):
            raise ValueError("id_pattern: give exactly one of id_pattern and field")
        if self.id_pattern is not None:
            try:
                groups = re.compile(self.id_pattern).groups
            except re.error as exc:
                raise ValueError(f"id_pattern: not a regular expression ({exc})") from None
            if groups < 1:
                raise ValueError("id_pattern: needs a group, the part of the id that is the key: e.g. ^(.+)_[0-9]+$")
        return self

    def keys(self, ids: Any, targets: Any) -> list[str]:
        """Each item's cluster key. An id the pattern does not match raises SpecError."""
        if self.field == "target":
            return [str(t) for t in (targets.tolist() if hasattr(targets, "tolist") else targets)]
        rule = re.compile(self.id_pattern)
        out = []
        for i in ids:
            m = rule.search(str(i))
            if m is None or m.group(1) is None:
                raise SpecError(f"cluster.id_pattern {self.id_pattern!r} does not match the test id {str(i)!r}")
            out.append(m.group(1))
        return out


class TaskSpec(_Strict):
    """A task: `tasks/*.yaml`, a folder on `MMBENCH_TASKS_PATH`, or a spec file given by path."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="the task's name: lower-case letters, digits, "
                      "'.', '_' and '-'")
    description: str = Field(default="", description="one line shown by `mmbench tasks`")
    dataset: DatasetRef
    splits: Splits
    modalities: list[str] = Field(min_length=1, description="the modalities the model sees, by the loader's names")
    target: Target
    metrics: list[MetricRef] = Field(min_length=1)
    primary_metric: str = Field(description="the metric that ranks the leaderboard; one of metrics")
    missing: Missing = Field(default_factory=Missing)
    cluster: Cluster | None = Field(default=None, description="the resampling unit of the board's paired tests (null: "
                                    "every test item is its own)")
    source: str | None = Field(default=None, exclude=True)

    @field_validator("modalities")
    @classmethod
    def _unique_modalities(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("modalities must be unique")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TaskSpec":
        names = [m.name for m in self.metrics]
        if self.primary_metric not in names:
            raise ValueError(f"primary_metric: {self.primary_metric!r} is not in metrics ({', '.join(names)})")
        for key, place in (("num_classes", "num_classes"), ("class_names", "class_names"), ("target_type", "type")):
            mine, theirs = self.dataset.options.get(key), getattr(self.target, place)
            if mine is not None and theirs is not None and (list(mine) if key == "class_names" else mine) != theirs:
                raise ValueError(f"dataset.options.{key}: {mine!r} differs from target.{place} {theirs!r}")
        from mmbench.data.masks import expand_conditions

        try:
            expand_conditions(self.missing.conditions, self.modalities)
        except SpecError as exc:
            raise ValueError(f"missing.conditions: {exc}") from None
        if self.missing.train is not None:
            try:
                expand_conditions([self.missing.train], self.modalities)
            except SpecError as exc:
                raise ValueError(f"missing.train: {exc}") from None
        return self

    @property
    def primary(self) -> MetricRef:
        return next(m for m in self.metrics if m.name == self.primary_metric)

    def conditions(self):
        from mmbench.data.masks import expand_conditions

        return expand_conditions(self.missing.conditions, self.modalities)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`Target`, `list[MetricRef]`, `Missing | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_of, typing.get_args(annotation)) if m is not None), None)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = TaskSpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field is not None else None
    return model


def nearest(word: str, choices: Any) -> str:
    """'; did you mean X?' for the closest of `choices`, else the list of them."""
    choices = sorted(map(str, choices))
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f" (one of: {', '.join(choices)})"


def _error_line(err: dict) -> str:
    """One pydantic error as `field.path: problem`."""
    loc = tuple(err["loc"])
    path = ".".join(map(str, loc))
    if err["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        fields = [f for f, info in model.model_fields.items() if not info.exclude] if model else []
        return f"{path}: unknown field" + (nearest(str(loc[-1]), fields) if fields else "")
    msg = err["msg"].removeprefix("Value error, ")
    head, sep, rest = msg.partition(": ")
    if sep and head.replace(".", "").replace("_", "").isalnum() and " " not in head:  # "<field>: problem"
        path, msg = ".".join(p for p in (path, head) if p), rest
    return f"{path or '(top level)'}: {msg}"


def todo_values(data: Any, path: str = "") -> list[tuple[str, str]]:
    """(field path, text) of every value `mmbench tasks init` left as a `TODO: ...`."""
    if isinstance(data, str):
        return [(path, data)] if data.startswith("TODO:") else []
    if isinstance(data, dict):
        return [t for k, v in data.items() for t in todo_values(v, f"{path}.{k}" if path else str(k))]
    if isinstance(data, list):
        return [t for i, v in enumerate(data) for t in todo_values(v, f"{path}.{i}")]
    return []


def parse_task_spec(data: Any, source: str = "<spec>") -> TaskSpec:
    """A validated spec; any problem is one `SpecError` line `SOURCE: field.path: problem`."""
    if not isinstance(data, dict):
        raise SpecError("a task spec must be a YAML mapping", source)
    todo = todo_values(data)
    if todo:
        more = f" (and {len(todo) - 1} more TODOs)" if len(todo) > 1 else ""
        raise SpecError(f"{todo[0][0]}: still a TODO, fill it in: {todo[0][1]}{more}", source)
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        # a misspelt key is also a missing one: name the misspelling first
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SpecError(_error_line(errors[0]) + more, source) from None
    _check_metrics(spec, source)
    return spec.model_copy(update={"source": source})


def _check_metrics(spec: TaskSpec, source: str) -> None:
    from mmbench.evaluation.metrics import METRICS

    for i, metric in enumerate(spec.metrics):
        info = METRICS.get(metric.name)
        if info is None:
            raise SpecError(f"metrics.{i}.name: unknown metric {metric.name!r}{nearest(metric.name, METRICS)}", source)
        allowed = {info.target_type, *info.also} | ({"multiclass", "binary"} if info.target_type == "multiclass" else set())
        if spec.target.type not in allowed:
            raise SpecError(f"metrics.{i}.name: {metric.name!r} is a {info.target_type} metric, task target is {spec.target.type}", source)
        if metric.higher_is_better != info.higher_is_better:
            raise SpecError(f"metrics.{i}.higher_is_better: {metric.name!r} is {'higher' if info.higher_is_better else 'lower'}-is-better", source)


# libyaml's safe loader where PyYAML has it (the same YAML, several times faster: every command
# that names a task reads all task specs)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_task_spec(path: str | Path) -> TaskSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("task spec file not found", path) from None
    except UnicodeDecodeError:
        raise SpecError("task spec is not UTF-8 text", path) from None
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}".replace("\n", " "), path) from None
    return parse_task_spec(data, str(path))


def builtin_dir(kind: str) -> Path:
    """`tasks` or `baselines`: the repository folder in a checkout, the packaged copy in a wheel."""
    package = Path(__file__).resolve().parent.parent  # the mmbench package folder
    packaged = package / "_builtin" / kind
    return packaged if packaged.is_dir() else package.parent / kind


def _spec_files() -> list[Path]:
    dirs = [builtin_dir("tasks")]
    dirs += [Path(p) for p in os.environ.get("MMBENCH_TASKS_PATH", "").split(os.pathsep) if p]
    files = [f for d in dirs if d.is_dir() for f in sorted(d.glob("*.yaml"))]
    for ep in entry_points(group="mmbench.tasks"):
        found = ep.load()()
        found = [found] if isinstance(found, (str, Path)) else found
        for item in map(Path, found):
            files += sorted(item.glob("*.yaml")) if item.is_dir() else [item]
    return files


def _broken_name(path: Path) -> str:
    """The name a spec that failed to load claims (its `name:` if readable, else the file stem)."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            return data["name"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    return path.stem


@lru_cache(maxsize=1)
def _registered() -> tuple[dict[str, TaskSpec], dict[str, SpecError]]:
    """({name: spec} of every valid spec, {name: its error} of every broken one). A broken spec
    is warned about once (naming its file) and does not hide the others; using it raises its error."""
    specs: dict[str, TaskSpec] = {}
    broken: dict[str, SpecError] = {}
    for path in _spec_files():
        try:
            spec = load_task_spec(path)
            if spec.name in specs:
                raise SpecError(f"name: task {spec.name!r} is defined twice (also in {specs[spec.name].source})", path)
        except SpecError as exc:
            broken.setdefault(_broken_name(path), exc)
            warnings.warn(f"skipping task spec: {exc}", stacklevel=2)
            continue
        specs[spec.name] = spec
    return specs, broken


def _all_specs() -> dict[str, TaskSpec]:
    return _registered()[0] | _from_paths


_all_specs.cache_clear = _registered.cache_clear  # type: ignore[attr-defined]

# specs given by path in this process, by name: a command that takes a spec file passes its
# name on (run folders, training configs), and this finds it again
_from_paths: dict[str, TaskSpec] = {}


def task_names() -> list[str]:
    return sorted(_all_specs())


def is_spec_path(name_or_path: str | Path) -> bool:
    return str(name_or_path).endswith((".yaml", ".yml"))


def get_task(name_or_path: str | Path) -> TaskSpec:
    """A registered task by name, or a spec file by path (relative or absolute). A spec read by
    path is known by its name for the rest of the process; it may not reuse a registered
    task's name with other content."""
    if is_spec_path(name_or_path):
        spec = load_task_spec(name_or_path)
        other = _registered()[0].get(spec.name)
        if other is not None and other.model_dump() != spec.model_dump():
            raise SpecError(f"name: {spec.name!r} is already the name of the task in {other.source}; rename this one",
                            spec.source)
        _from_paths[spec.name] = spec
        return spec
    name = str(name_or_path)
    specs, broken = _registered()
    if name in _from_paths:
        return _from_paths[name]
    if name in specs:
        return specs[name]
    if name in broken:
        raise broken[name]
    hint = " (a spec file is given by its path, ending .yaml)" if Path(name).exists() else ""
    raise MMBenchError(f"unknown task {name!r}; known: {', '.join(task_names())}{hint}")
