"""The result record written for every evaluation (and stored as a leaderboard entry)."""

from __future__ import annotations

import datetime as _dt
import platform
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA = "mmbench-result-v1"


class Result(BaseModel):
    """Validated on write and on read, so a hand-edited entry that breaks the format is caught."""

    model_config = ConfigDict(extra="forbid")

    schema_: Literal["mmbench-result-v1"] = Field(SCHEMA, alias="schema")
    task: str
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
    kind: Literal["baseline", "model", "predictions"]
    fusion: str | None = None
    seed: int | None = None
    primary_metric: str
    higher_is_better: bool
    metrics: dict[str, dict[str, float]]
    confidence_intervals: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    robustness: dict[str, Any] = Field(default_factory=dict)
    efficiency: dict[str, Any] | None = None
    dataset_fingerprint: str
    # which test set the result was scored on (mmbench.data.testset); None in entries made before it existed
    test_set_fingerprint: str | None = None
    protocol: str | None = None
    submission_hash: str | None = None
    predictions_file: str | None = None
    mmbench_version: str
    hardware: dict[str, Any]
    created: str
    version: int = 1
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metrics")
    @classmethod
    def _has_values(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        if not v:
            raise ValueError("no metrics")
        for cond, values in v.items():
            for key, x in values.items():
                if x != x or x in (float("inf"), float("-inf")):
                    raise ValueError(f"metric {key!r} under {cond!r} is not finite")
        return v

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=False)

    @property
    def masks_protocol(self) -> int:
        """The missing-modality masks protocol the result was scored under (mmbench.data.masks;
        1 for results made before it was recorded, whose ``rate:`` conditions could empty items)."""
        return int(self.extra.get("masks_protocol", 1))

    @property
    def primary_clean(self) -> float | None:
        return self.metrics.get("clean", {}).get(self.primary_metric)


def hardware_info(device: str | None = None) -> dict[str, Any]:
    import os

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        if device and device.startswith("cuda"):
            import torch

            info["torch"] = torch.__version__
            if torch.cuda.is_available():
                info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        else:  # without importing torch (scoring a predictions file never needs it)
            info["torch"] = _torch_version()
        info["device"] = device or "cpu"
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return info


def _torch_version() -> str:
    """torch.__version__ (with its local tag, e.g. +cu130) read from torch/version.py."""
    import importlib.util
    import re
    from importlib.metadata import version
    from pathlib import Path

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise ImportError("torch")
    try:
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
        return re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M).group(1)
    except (OSError, AttributeError):
        return version("torch")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def make_result(**fields: Any) -> Result:
    from mmbench import __version__

    fields.setdefault("mmbench_version", __version__)
    fields.setdefault("hardware", hardware_info(fields.pop("device", None)))
    fields.setdefault("created", now_iso())
    from mmbench.data.masks import MASKS_PROTOCOL

    fields["extra"] = {"masks_protocol": MASKS_PROTOCOL, **(fields.get("extra") or {})}
    return Result.model_validate(fields)
