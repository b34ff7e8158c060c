"""Declarative task specs (`tasks/*.yaml`), validated with pydantic.

A spec names the dataset and its options, the splits, the modalities, the target type, the
metric list (primary metric and direction) and the missing-modality conditions to evaluate.
Built-in specs ship in the repository's `tasks/` folder (inside the wheel as
`mmbench/_builtin/tasks`); more come from folders listed in `MMBENCH_TASKS_PATH`
(os.pathsep-separated) and from the `mmbench.tasks` entry-point group (a callable returning
a folder or a list of spec files).
"""

from __future__ import annotations

import os
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


class DatasetRef(_Strict):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class Splits(_Strict):
    train: str | None = None
    validation: str | None = None
    test: str


class Target(_Strict):
    type: TargetType
    num_classes: int | None = Field(default=None, ge=2)
    class_names: list[str] | None = None
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _classes(self) -> "Target":
        if self.type in ("multiclass", "binary", "multilabel") and self.num_classes is None:
            raise ValueError(f"num_classes is required for a {self.type} target")
        if self.type == "binary" and self.num_classes != 2:
            raise ValueError("a binary target has num_classes 2")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for {self.num_classes} classes")
        return self


class MetricRef(_Strict):
    name: str
    higher_is_better: bool


class Missing(_Strict):
    seed: int = 0
    conditions: list[str] = Field(default_factory=lambda: ["clean"])
    # a condition applied to the train and validation splits for training (e.g. missing:both:0.7)
    train: str | None = None


class TaskSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    dataset: DatasetRef
    splits: Splits
    modalities: list[str] = Field(min_length=1)
    target: Target
    metrics: list[MetricRef] = Field(min_length=1)
    primary_metric: str
    missing: Missing = Field(default_factory=Missing)
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
            raise ValueError(f"primary_metric {self.primary_metric!r} is not in metrics ({', '.join(names)})")
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


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_task_spec(data: Any, source: str = "<spec>") -> TaskSpec:
    if not isinstance(data, dict):
        raise SpecError("a task spec must be a YAML mapping", source)
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise SpecError(f"field '{_field_path(err['loc'])}': {err['msg']}{more}", source) from None
    _check_metrics(spec, source)
    return spec.model_copy(update={"source": source})


def _check_metrics(spec: TaskSpec, source: str) -> None:
    from mmbench.evaluation.metrics import METRICS

    for i, metric in enumerate(spec.metrics):
        info = METRICS.get(metric.name)
        if info is None:
            raise SpecError(f"field 'metrics.{i}.name': unknown metric {metric.name!r}; known: {', '.join(sorted(METRICS))}", source)
        allowed = {info.target_type, *info.also} | ({"multiclass", "binary"} if info.target_type == "multiclass" else set())
        if spec.target.type not in allowed:
            raise SpecError(f"field 'metrics.{i}.name': {metric.name!r} is a {info.target_type} metric, task target is {spec.target.type}", source)
        if metric.higher_is_better != info.higher_is_better:
            raise SpecError(f"field 'metrics.{i}.higher_is_better': {metric.name!r} is {'higher' if info.higher_is_better else 'lower'}-is-better", source)


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


@lru_cache(maxsize=1)
def _all_specs() -> dict[str, TaskSpec]:
    specs: dict[str, TaskSpec] = {}
    for path in _spec_files():
        spec = load_task_spec(path)
        if spec.name in specs:
            raise SpecError(f"task {spec.name!r} is defined twice (also in {specs[spec.name].source})", path)
        specs[spec.name] = spec
    return specs


def task_names() -> list[str]:
    return sorted(_all_specs())


def get_task(name_or_path: str) -> TaskSpec:
    """A registered task by name, or a spec file by path."""
    if name_or_path.endswith((".yaml", ".yml")):
        return load_task_spec(name_or_path)
    specs = _all_specs()
    if name_or_path not in specs:
        raise MMBenchError(f"unknown task {name_or_path!r}; known: {', '.join(sorted(specs))}")
    return specs[name_or_path]
