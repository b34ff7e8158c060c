"""The board's tables: formatting of values, sortable table models (columns with a first-click
direction, cells with a text and a sort value) and the tables a task page and the report share
(ranked entries, robustness, efficiency, per-condition results, published figures).

Every cell's text is formatted here, never a raw Python value: numbers at fixed precision,
missing values as ``-``, unknown fields as ``unknown``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def num(v: Any) -> float | None:
    """A finite number, else None (bools and strings are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def fmt(v: Any, digits: int = 4) -> str:
    x = num(v)
    if x is None:
        return "-"
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0000"


def fmt_pm(v: Any, std: Any, digits: int = 4) -> str:
    """``mean ± std`` (just the mean without a std)."""
    x, s = num(v), num(std)
    if x is None:
        return "-"
    return fmt(x, digits) if s is None else f"{fmt(x, digits)} ± {s:.{digits}f}"


def fmt_count(v: Any) -> str:
    x = num(v)
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:.3g}"


def fmt_params(v: Any) -> str:
    x = num(v)
    return "-" if x is None else f"{int(round(x)):,}"


def fmt_interval(ri: Any) -> str:
    """A rank interval ``[best, worst]`` as ``3`` or ``1-4``."""
    if not isinstance(ri, (list, tuple)) or len(ri) != 2:
        return "-"
    return str(ri[0]) if ri[0] == ri[1] else f"{ri[0]}-{ri[1]}"


def rate_of(cond: str) -> float | None:
    if not cond.startswith("rate:"):
        return None
    try:
        return float(cond.split(":", 1)[1])
    except ValueError:
        return None


def cond_key(cond: str) -> tuple:
    """Conditions in reading order: missing rates ascending, then drop-one, then patterns."""
    r = rate_of(cond)
    if r is not None:
        return (0, r, cond)
    return (1 if cond.startswith("drop:") else 2, 0.0, cond)


def by_task(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["task"], []).append(r)
    return out


def metrics_of(rows: list[dict[str, Any]]) -> list[str]:
    """Clean metrics present in the rows (those `rank` gave a `<m>_std` for), primary first."""
    primary = rows[0]["primary_metric"]
    names: list[str] = [primary]
    skip = {"relative_robustness", "effective_robustness"}
    for r in rows:
        for k in r:
            if k.endswith("_std") and k[:-4] in r and k[:-4] not in names and k[:-4] not in skip:
                names.append(k[:-4])
    return names


def label(row: dict[str, Any]) -> str:
    fusion = row.get("fusion")
    return f"{row['name']} ({fusion})" if fusion and fusion != row["name"] and fusion != "unimodal" else str(row["name"])


def is_unimodal(row: dict[str, Any]) -> bool:
    return row.get("fusion") == "unimodal" or str(row["name"]).startswith("unimodal-")


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def conditions(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({c for r in rows for c in r.get("conditions", {})}, key=cond_key)


def rate_range(rows: list[dict[str, Any]]) -> str:
    """``0 (clean) to 0.9`` for the missing rates a task's rows were evaluated at."""
    rates = sorted({x for r in rows for c in r.get("conditions", {}) if (x := rate_of(c)) is not None})
    return f"0 (clean) to {rates[-1]:g}" if rates else "0 (clean) only"


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


@dataclass
class Column:
    key: str
    label: str
    dir: str = "asc"  # direction of the first click
    title: str = ""
    numeric: bool = True


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[dict[str, Any]]]
    css: str = ""
    first_is_best: bool = True  # rows ranked: the first is highlighted

    def markdown(self) -> str:
        esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = ["| " + " | ".join(esc(c.label) for c in self.columns) + " |",
                 "|" + "|".join("---:" if c.numeric else "---" for c in self.columns) + "|"]
        lines += ["| " + " | ".join(esc(cell["text"]) for cell in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def column(self, key: str) -> list[str]:
        """The texts of one column (by key), top to bottom."""
        i = [c.key for c in self.columns].index(key)
        return [row[i]["text"] for row in self.rows]


def cell(text: str, sort: Any = None) -> dict[str, Any]:
    s = num(sort)
    return {"text": text, "sort": None if s is None else repr(s)}


def best_dir(hib: bool) -> str:
    return "desc" if hib else "asc"


def metric_cell(row: dict[str, Any], metric: str) -> dict[str, Any]:
    """``mean ± std`` over seeds (the mean alone for a single run)."""
    if num(row.get(metric)) is None:
        return cell("-")
    std = row.get(f"{metric}_std") if row.get("seeds", 1) > 1 else None
    return cell(fmt_pm(row[metric], std), row[metric])


def _ident(rows: list[dict[str, Any]]) -> tuple[list[Column], Any]:
    """#, name, letters and rank interval (when the task has verdicts): the row's identity."""
    verdicts = any(r.get("letters") is not None for r in rows)
    cols = [Column("rank", "#", "asc", "rank by the primary metric"), Column("name", "name", "asc", numeric=False)]
    if verdicts:
        cols += [Column("letters", "letters", "asc", "entries sharing a letter are not distinguishable "
                        "(two-level bootstrap, Holm-adjusted p < 0.05)", numeric=False),
                 Column("rank_interval", "rank range", "asc", "1 + entries significantly better to n - entries "
                        "significantly worse: the ranks the letters leave open (family-wise alpha 0.05)")]

    def cells(r: dict[str, Any]) -> list[dict[str, Any]]:
        out = [cell(str(r["rank"]), r["rank"]), cell(label(r))]
        if verdicts:
            ri = r.get("rank_interval")
            out += [cell(str(r.get("letters") or "-")), cell(fmt_interval(ri), ri[0] if ri else None)]
        return out

    return cols, cells


def entries_table(rows: list[dict[str, Any]]) -> Table:
    """Ranked entries: identity, the primary metric (mean ± std over seeds), seeds, the other
    clean metrics."""
    hib = bool(rows[0]["higher_is_better"])
    primary = rows[0]["primary_metric"]
    cols, ident = _ident(rows)
    others = metrics_of(rows)[1:]
    cols += [Column(primary, f"{primary} (primary)", best_dir(hib), "clean test set, mean ± std over seeds"),
             Column("seeds", "seeds", "desc", "training seeds averaged; † single run: seed variance unknown")]
    cols += [Column(m, m, "desc", "clean test set, mean ± std over seeds") for m in others]
    body = []
    for r in rows:
        seeds = f"{r['seeds']}{'†' if r.get('seed_variance_known') is False else ''}"
        body.append(ident(r) + [metric_cell(r, primary), cell(seeds, r["seeds"])] + [metric_cell(r, m) for m in others])
    return Table(cols, body, css="entries")


def drop_conditions(rows: list[dict[str, Any]]) -> list[str]:
    return [c for c in conditions(rows) if c.startswith("drop:")]


def robustness_table(rows: list[dict[str, Any]]) -> Table:
    """Robustness: relative and effective robustness (mean ± std over seeds, MultiBench's
    definitions; letters from the same two-level test where the task has them), the primary
    metric without each modality, and the largest drop (secondary)."""
    hib = bool(rows[0]["higher_is_better"])
    primary = rows[0]["primary_metric"]
    drops = drop_conditions(rows)
    rletters = any(r.get("robustness_letters") is not None for r in rows)
    cols = [Column("rank", "#", "asc"), Column("name", "name", "asc", numeric=False),
            Column(primary, f"{primary} clean", best_dir(hib)),
            Column("relative_robustness", "relative robustness", best_dir(hib),
                   f"mean {primary} over the missing rates {rate_range(rows)} (trapezoid area / range)")]
    if rletters:
        cols.append(Column("robustness_letters", "letters", "asc", "the two-level test on relative robustness",
                           numeric=False))
    cols.append(Column("effective_robustness", "effective robustness", best_dir(hib),
                       "mean gap to late fusion's curve shifted to the entry's clean value"))
    eletters = any(r.get("effective_letters") is not None for r in rows)
    if eletters:
        cols.append(Column("effective_letters", "letters", "asc", "the two-level test on effective robustness",
                           numeric=False))
    cols += [Column(c, f"without {c[5:]}", best_dir(hib), f"{primary} with {c[5:]} missing from every test item")
             for c in drops]
    cols.append(Column("worst_drop", "largest drop", "asc", "secondary: each seed's largest drop from clean over the conditions, averaged over seeds"))
    body = []
    for r in rows:
        cells = [cell(str(r["rank"]), r["rank"]), cell(label(r)), cell(fmt(r.get(primary)), r.get(primary)),
                 cell(fmt_pm(r.get("relative_robustness"), r.get("relative_robustness_std")), r.get("relative_robustness"))]
        if rletters:
            cells.append(cell(str(r.get("robustness_letters") or "-")))
        cells.append(cell(fmt_pm(r.get("effective_robustness"), r.get("effective_robustness_std")),
                          r.get("effective_robustness")))
        if eletters:
            cells.append(cell(str(r.get("effective_letters") or "-")))
        cells += [cell(fmt(r["conditions"].get(c)), r["conditions"].get(c)) for c in drops]
        cells.append(cell(fmt(r.get("worst_drop")), r.get("worst_drop")))
        body.append(cells)
    return Table(cols, body, css="robustness")


def efficiency_table(rows: list[dict[str, Any]]) -> Table:
    """Efficiency, one way: medians over seeds, with the device, precision and batch size."""
    hib = bool(rows[0]["higher_is_better"])
    primary = rows[0]["primary_metric"]
    cols = [Column("rank", "#", "asc"), Column("name", "name", "asc", numeric=False),
            Column(primary, primary, best_dir(hib)),
            Column("params", "params", "asc", "parameters of the modules the model uses"),
            Column("flops_per_sample", "FLOPs/sample", "asc"),
            Column("latency_ms_per_batch", "latency ms/batch (range)", "asc",
                   "median over seeds of the median timed batch (min-max over seeds)"),
            Column("device", "device", "asc", numeric=False), Column("precision", "precision", "asc", numeric=False),
            Column("batch_size", "batch", "asc", numeric=False)]
    body = [[cell(str(r["rank"]), r["rank"]), cell(label(r)), cell(fmt(r.get(primary)), r.get(primary)),
             cell(fmt_params(r.get("params")), r.get("params")), cell(fmt_count(r.get("flops_per_sample")), r.get("flops_per_sample")),
             cell(fmt(r.get("latency_ms_per_batch"), 2) + (f" ({r['latency_ms_range'][0]:.2f}-{r['latency_ms_range'][1]:.2f})"
                 if r.get("latency_ms_range") else ""), r.get("latency_ms_per_batch")),
             cell(str(r.get("device", "unknown"))), cell(str(r.get("precision", "unknown"))),
             cell(str(r.get("batch_size", "unknown")))] for r in rows]
    return Table(cols, body, css="efficiency")


def _cond_label(c: str) -> str:
    if c.startswith("rate:"):
        return f"rate {c[5:]}"
    if c.startswith("drop:"):
        return f"without {c[5:]}"
    if c.startswith("pattern:"):
        return f"only {c[8:]}"
    return c


def conditions_table(rows: list[dict[str, Any]]) -> Table:
    """The primary metric under every evaluated condition (mean over seeds)."""
    hib = bool(rows[0]["higher_is_better"])
    primary = rows[0]["primary_metric"]
    conds = conditions(rows)
    cols = [Column("rank", "#", "asc"), Column("name", "name", "asc", numeric=False),
            Column("clean", "clean", best_dir(hib))]
    cols += [Column(c, _cond_label(c), best_dir(hib), f"{primary} under condition {c}") for c in conds]
    body = [[cell(str(r["rank"]), r["rank"]), cell(label(r)), cell(fmt(r.get(primary)), r.get(primary))]
            + [cell(fmt(r["conditions"].get(c)), r["conditions"].get(c)) for c in conds] for r in rows]
    return Table(cols, body, css="conditions")


PUBLISHED_SKIP = {"task", "name", "published", "source", "url", "note", "fusion"}


def published_table(pub: list[dict[str, Any]], measured: list[dict[str, Any]], primary: str | None) -> Table:
    """Published figures beside mmbench's own: each published row, the mmbench method it
    corresponds to (``fusion`` in the published table) and that entry's measured value."""
    metrics = list(dict.fromkeys(([primary] if primary and any(primary in r for r in pub) else [])
                                 + [k for r in pub for k in r if k not in PUBLISHED_SKIP]))
    by_name = {r["name"]: r for r in measured}
    cols = [Column("name", "published method", "asc", numeric=False), Column("status", "status", "asc", numeric=False)]
    cols += [Column(m, m, "desc") for m in metrics]
    cols += [Column("fusion", "mmbench counterpart", "asc", numeric=False)]
    if primary:
        cols.append(Column("measured", f"measured {primary}", "desc", "the counterpart's mean over seeds"))
    cols.append(Column("source", "source", "asc", numeric=False))
    body = []
    for r in pub:
        twin = by_name.get(r.get("fusion") or "")
        cells = [cell(r["name"]), cell("published, not re-run")] + [cell(fmt(r.get(m)), r.get(m)) for m in metrics]
        cells.append(cell(str(r.get("fusion") or "-")))
        if primary:
            cells.append(cell(fmt(twin.get(primary)) if twin else "-", twin.get(primary) if twin else None))
        cells.append(cell(r["source"] + (f" ({r['note']})" if r.get("note") else "")))
        body.append(cells)
    return Table(cols, body, css="published", first_is_best=False)


def pairwise_table(rows: list[dict[str, Any]]) -> Table | None:
    """The pairwise matrix of one task (rows and columns in rank order): the cell of row A,
    column B is A - B in the direction of better, its interval at the pair's Holm level (it
    excludes 0 exactly when the pair differs), its Holm-adjusted p-value, and * where the pair
    differs (p_holm < 0.05, the board's one rule; see mmbench.evaluation.significance)."""
    if not rows or rows[0].get("letters") is None:
        return None
    names = [r["name"] for r in rows]
    columns = [Column("name", "entry (letters)", "asc", numeric=False)]
    columns += [Column(f"vs-{n}", f"vs {n}", "desc", f"difference from {n} [interval at the pair's Holm level], "
                        "Holm-adjusted p; * differs") for n in names]
    body = []
    for r in rows:
        cells = [cell(f"{r['name']} ({r['letters']})")]
        for n in names:
            t = (r.get("pairwise") or {}).get(n)
            cells.append(cell("-") if t is None else
                         cell(f"{t['diff']:+.4f} [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}] ({t['p_holm_display']})"
                              f"{' *' if t['significant'] else ''}", t["diff"]))
        body.append(cells)
    return Table(columns, body, first_is_best=False)
