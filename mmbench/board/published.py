"""Published reference rows: figures from papers and other tools' tables, kept apart from
mmbench's own entries in `<board>/published/<task>.yaml`.

They are shown on the board marked "published, not re-run" with their source; they are never
ranked among measured entries and never verified (there is nothing to recompute them from).
A file::

    task: mosi
    source: MMSA, results/result-stat.md (mean of 5 seeds)
    url: https://github.com/thuiar/MMSA/blob/master/results/result-stat.md
    note: other features than mmbench's; compare ordering and gaps
    rows:
      - {name: TFN, fusion: tensor, metrics: {acc2_non0: 0.7908, f1_non0: 0.7911}}

``fusion`` (optional) names the mmbench method the published one corresponds to (TFN = tensor,
LMF = lowrank, MulT = mult): the report and the task page show that entry's measured value
beside the published one. Metric values use mmbench's scale (fractions for accuracies and recalls).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmbench.core.errors import DataError

PUBLISHED_DIR = "published"


class PublishedRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    metrics: dict[str, float] = Field(min_length=1)
    note: str | None = None
    fusion: str | None = Field(default=None, min_length=1, max_length=100)  # mmbench's counterpart method


class PublishedTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    source: str = Field(min_length=1)
    url: str | None = None
    note: str | None = None
    rows: list[PublishedRow] = Field(min_length=1)


def read_published(path: str | Path) -> PublishedTable:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"unreadable published table: {' '.join(str(exc).split())}", path) from None
    try:
        table = PublishedTable.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(f"invalid published table: field '{'.'.join(map(str, err['loc']))}': {err['msg']}", path) from None
    for row in table.rows:
        bad = [k for k, v in row.metrics.items() if v != v or v in (float("inf"), float("-inf"))]
        if bad:
            raise DataError(f"invalid published table: row {row.name!r}: metric {bad[0]!r} is not finite", path)
    return table


def load_published(board_dir: str | Path, task: str | None = None) -> list[PublishedTable]:
    folder = Path(board_dir) / PUBLISHED_DIR
    if not folder.is_dir():
        return []
    tables = [read_published(p) for p in sorted(folder.glob("*.yaml"))]
    return [t for t in tables if task is None or t.task == task]


def published_rows(tables: list[PublishedTable]) -> list[dict[str, Any]]:
    """Flat rows for display: task, name, each metric, source, url, note; `published` True."""
    out = []
    for t in tables:
        for r in t.rows:
            note = "; ".join(x for x in (r.note, t.note) if x)
            out.append({"task": t.task, "name": r.name, "published": True, **r.metrics,
                        "source": t.source, "url": t.url, "note": note, "fusion": r.fusion})
    return out


def render_published(rows: list[dict[str, Any]]) -> str:
    """Plain-text lines for the terminal board, after the ranked table."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        lines.append(f"{task}: published figures, not re-run by mmbench (not ranked, not verified)")
        for r in (r for r in rows if r["task"] == task):
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in r.items()
                                if k not in ("task", "name", "published", "source", "url", "note", "fusion"))
            lines.append(f"  {r['name']:<12} {metrics}  [{r['source']}]")
    return "\n".join(lines)
