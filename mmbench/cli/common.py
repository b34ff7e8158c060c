"""Helpers the command modules share: JSON output and `--set key=value` overrides."""

from __future__ import annotations

import json
from typing import Any

import typer


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def overrides(items: list[str]) -> dict[str, Any]:
    from mmbench.core.errors import SpecError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set expects key=value, got {item!r}")
        target = out
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = parse_value(value)
    return out
