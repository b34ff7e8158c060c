"""Static HTML leaderboard and the `mmbench report` (HTML or Markdown).

Both are single files that work opened from disk: inline CSS, a small inline vanilla-JS
click-to-sort for every table column (no CDN, no external files) and matplotlib figures embedded
as base64 PNG data URIs. The Markdown report writes its PNGs into `<name>_files/` next to the
`.md` file and links them.

Figures use matplotlib's Agg renderer through `matplotlib.figure.Figure` (pyplot and the global
backend are never touched), fixed sizes and no PNG "Software" metadata, so the same inputs give
byte-identical files.

Sorting self-test hook: opening a page with `#sort=<column key>` (or `#sort=-<key>` for
descending) sorts every table that has that column on load; each sorted table records
`data-sorted-by` so a headless browser can check the result.
"""

from __future__ import annotations

import base64
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from mmbench.core.errors import DataError, MMBenchError
from mmbench.evaluation.results import Result

__all__ = [
    "render_leaderboard_html",
    "collect_results",
    "render_report_html",
    "render_report_markdown",
    "write_report",
    "write_results_report",
]

EFFICIENCY_KEYS = ("params", "flops_per_sample", "latency_ms_per_batch")
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf"]


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _fmt(v: Any, digits: int = 4) -> str:
    x = _num(v)
    return "-" if x is None else f"{x:.{digits}f}"


def _fmt_count(v: Any) -> str:
    x = _num(v)
    if x is None:
        return "-"
    if abs(x) >= 1e3:
        for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(x) >= scale:
                return f"{x / scale:.2f}{unit}"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:.3g}"


def _fmt_params(v: Any) -> str:
    x = _num(v)
    return "-" if x is None else f"{int(round(x)):,}"


def _rate(cond: str) -> float | None:
    if not cond.startswith("rate:"):
        return None
    try:
        return float(cond.split(":", 1)[1])
    except ValueError:
        return None


def _cond_key(cond: str) -> tuple:
    r = _rate(cond)
    if r is not None:
        return (0, r, cond)
    return (1 if cond.startswith("drop:") else 2, 0.0, cond)


def _by_task(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["task"], []).append(r)
    return out


def _metrics_of(rows: list[dict[str, Any]]) -> list[str]:
    """Clean metrics present in the rows (those `rank` gave a `<m>_std` for), primary first."""
    primary = rows[0]["primary_metric"]
    names: list[str] = [primary]
    for r in rows:
        for k in r:
            if k.endswith("_std") and k[:-4] in r and k[:-4] not in names:
                names.append(k[:-4])
    return names


def _label(row: dict[str, Any]) -> str:
    fusion = row.get("fusion")
    return f"{row['name']} ({fusion})" if fusion and fusion != row["name"] else str(row["name"])


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


# two-sided 95% Student-t quantiles by degrees of freedom (no scipy needed)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
        18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def _t95(df: int) -> float:
    if df > 120:
        return 1.960
    return _T95[max(k for k in _T95 if k <= df)]


def _ci_bounds(ci: Any) -> tuple[float, float] | None:
    if not isinstance(ci, dict):
        return None
    lo = next((_num(ci[k]) for k in ("low", "lo", "lower", "ci_low") if k in ci), None)
    hi = next((_num(ci[k]) for k in ("high", "hi", "upper", "ci_high") if k in ci), None)
    return (lo, hi) if lo is not None and hi is not None else None


# --------------------------------------------------------------------------------------------
# tables: columns (key, label, first-click direction) and cells (text, sort value)
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


def _cell(text: str, sort: Any = None, css: str = "") -> dict[str, Any]:
    s = _num(sort)
    return {"text": text, "sort": None if s is None else repr(s), "css": css}


def _best_dir(hib: bool) -> str:
    return "desc" if hib else "asc"


def _value_cell(row: dict[str, Any], key: str) -> dict[str, Any]:
    v = row.get(key)
    if key == "params":
        return _cell(_fmt_params(v), v)
    if key == "flops_per_sample":
        return _cell(_fmt_count(v), v)
    if key == "latency_ms_per_batch":
        return _cell(_fmt(v, 2), v)
    if key in ("seeds", "rank"):
        return _cell("-" if v is None else str(v), v)
    return _cell(_fmt(v), v)


def _metric_cell(row: dict[str, Any], metric: str) -> dict[str, Any]:
    if _num(row.get(metric)) is None:
        return _cell("-")
    std = _num(row.get(f"{metric}_std"))
    text = f"{row[metric]:.4f} ± {std:.4f}" if row.get("seeds", 1) > 1 and std is not None else f"{row[metric]:.4f}"
    return _cell(text, row[metric])


def _ident_columns() -> list[Column]:
    return [Column("rank", "#", "asc", "rank by the primary metric"),
            Column("name", "name", "asc", numeric=False),
            Column("fusion", "fusion", "asc", numeric=False),
            Column("seeds", "seeds", "desc", "number of seeds averaged")]


def _ident_cells(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [_value_cell(row, "rank"), _cell(str(row["name"])), _cell(str(row.get("fusion") or "-")),
            _value_cell(row, "seeds")]


def _verdict_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """Compact letters and the 95% rank interval (mmbench.evaluation.significance), when the
    task has them."""
    if not any(r.get("letters") is not None for r in rows):
        return []
    return [Column("letters", "letters", "asc", "rows sharing a letter are not distinguishable (Holm, 0.05)", numeric=False),
            Column("rank_interval", "rank 95%", "asc", "95% bootstrap interval of the rank")]


def _verdict_cells(row: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not any(r.get("letters") is not None for r in rows):
        return []
    from mmbench.board.entries import format_value

    ri = row.get("rank_interval")
    return [_cell(row.get("letters") or "-"), _cell(format_value(row, "rank_interval"), ri[0] if ri else None)]


def _conditions(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({c for r in rows for c in r.get("conditions", {})}, key=_cond_key)


def _eff_keys(rows: list[dict[str, Any]], always: Sequence[str] = ("params",)) -> list[str]:
    return [k for k in EFFICIENCY_KEYS if k in always or any(k in r for r in rows)]


_EFF_LABELS = {"params": "params", "flops_per_sample": "FLOPs/sample", "latency_ms_per_batch": "latency ms/batch"}


def _board_table(rows: list[dict[str, Any]]) -> Table:
    hib = bool(rows[0]["higher_is_better"])
    primary = rows[0]["primary_metric"]
    metrics = _metrics_of(rows)
    conds = _conditions(rows)
    effs = _eff_keys(rows)
    cols = _ident_columns() + _verdict_columns(rows)
    cols += [Column(m, m + (" (primary)" if m == primary else ""), "desc" if m != primary else _best_dir(hib),
                    "clean test set, mean ± std over seeds") for m in metrics]
    cols += [Column("auc_rate", "auc_rate", _best_dir(hib), f"normalised area under {primary} vs missing rate"),
             Column("worst_drop", "worst_drop", "asc", f"largest drop of {primary} from clean over the conditions")]
    cols += [Column(k, _EFF_LABELS[k], "asc") for k in effs]
    cols += [Column(f"{primary}@{c}", f"{primary}@{c}", _best_dir(hib), f"{primary} under condition {c}") for c in conds]
    body = []
    for r in rows:
        cells = _ident_cells(r) + _verdict_cells(r, rows) + [_metric_cell(r, m) for m in metrics]
        cells += [_value_cell(r, "auc_rate"), _value_cell(r, "worst_drop")]
        cells += [_value_cell(r, k) for k in effs]
        cells += [_cell(_fmt(r["conditions"][c]), r["conditions"][c]) if c in r.get("conditions", {}) else _cell("-")
                  for c in conds]
        body.append(cells)
    return Table(cols, body, css="board")


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str  # file stem, unique within a page
    png: bytes
    alt: str
    caption: str
    width: int
    height: int

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


_RC = {"svg.hashsalt": "mmbench", "font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
       "figure.dpi": 100, "savefig.dpi": 100, "axes.spines.top": False, "axes.spines.right": False,
       "legend.fontsize": 8, "legend.frameon": False}


def _new_figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _to_figure(fig: Any, name: str, alt: str, caption: str) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    w, h = (int(round(x * 100)) for x in fig.get_size_inches())
    return Figure(name, buf.getvalue(), alt, caption, w, h)


def _plot(fn):
    """Run a plotting function under fixed rc settings (deterministic, no global state kept)."""
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _colors(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {r["name"]: _PALETTE[i % len(_PALETTE)] for i, r in enumerate(rows)}


@_plot
def _bar_figure(task: str, rows: list[dict[str, Any]], ci: dict[str, tuple[float, float]] | None = None) -> Figure:
    """Primary metric per entry (rank order, best on top), error bars = std over seeds."""
    primary = rows[0]["primary_metric"]
    hib = rows[0]["higher_is_better"]
    n = len(rows)
    fig, (ax,) = _new_figure(5.9, min(1.3 + 0.42 * n, 12.0))
    colors = _colors(rows)
    ys = list(range(n))[::-1]
    vals = [_num(r.get(primary)) or 0.0 for r in rows]
    errs = [_num(r.get(f"{primary}_std")) or 0.0 for r in rows]
    ax.barh(ys, vals, xerr=errs, color=[colors[r["name"]] for r in rows], alpha=0.85, capsize=3,
            error_kw={"elinewidth": 1.0, "ecolor": "#333333"})
    if ci:
        ci_rows = [(y, ci[r["name"]]) for y, r in zip(ys, rows) if r["name"] in ci]
        ax.errorbar([(lo + hi) / 2 for _, (lo, hi) in ci_rows], [y - 0.27 for y, _ in ci_rows],
                    xerr=[[(hi - lo) / 2 for _, (lo, hi) in ci_rows]] * 2, fmt="none", ecolor="#111111",
                    elinewidth=1.4, capsize=4)
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="#333333", lw=1.0, marker="|", ms=7, label="± std over seeds"),
                   Line2D([], [], color="#111111", lw=1.4, marker="|", ms=9, label="95% CI")]
        fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=7)
    ax.set_yticks(ys, [_label(r) for r in rows])
    lo = min(v - e for v, e in zip(vals, errs))
    hi = max(v + e for v, e in zip(vals, errs))
    if ci:
        lo = min([lo] + [b[0] for b in ci.values()])
        hi = max([hi] + [b[1] for b in ci.values()])
    pad = max((hi - lo) * 0.15, 1e-3)
    ax.set_xlim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    ax.set_xlabel(f"{primary} ({'higher' if hib else 'lower'} is better)")
    ax.set_title(f"{task}: {primary} per entry (mean ± std over seeds)")
    ax.grid(axis="y", visible=False)
    cap = f"{task}: clean-test {primary} per entry, error bars = std over seeds"
    if ci:
        cap += "; lower black bars = 95% confidence intervals (see the metrics table)"
    return _to_figure(fig, f"{_slug(task)}-bars", f"bar chart of {primary} per entry for {task}", cap)


def _rate_points(row: dict[str, Any]) -> list[tuple[float, float]]:
    pts = {r: v for c, v in row.get("conditions", {}).items() if (r := _rate(c)) is not None and _num(v) is not None}
    if 0.0 not in pts and _num(row.get(row["primary_metric"])) is not None:
        pts[0.0] = row[row["primary_metric"]]
    return sorted(pts.items())


@_plot
def _robustness_figure(task: str, rows: list[dict[str, Any]],
                       bands: dict[str, list[tuple[float, float, float]]] | None = None) -> Figure | None:
    """Primary metric vs missing rate (clean = rate 0), one line per entry; optional ±std bands."""
    primary = rows[0]["primary_metric"]
    series = {r["name"]: _rate_points(r) for r in rows}
    if not any(len(p) >= 2 for p in series.values()):
        return None
    fig, (ax,) = _new_figure(5.9, 4.0)
    colors = _colors(rows)
    for r in rows:
        pts = series[r["name"]]
        if not pts:
            continue
        band = (bands or {}).get(r["name"])
        if band and len(band) >= 2:
            xs, ms, ss = zip(*band)
            ax.fill_between(xs, [m - s for m, s in zip(ms, ss)], [m + s for m, s in zip(ms, ss)],
                            color=colors[r["name"]], alpha=0.15, linewidth=0)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, lw=1.6, color=colors[r["name"]],
                label=_label(r))
    ax.set_xlabel("missing rate (fraction of modality inputs dropped; 0 = clean)")
    ax.set_ylabel(primary)
    ax.set_title(f"{task}: robustness to missing modalities")
    ax.legend(loc="best")
    cap = f"{task}: {primary} vs missing rate per entry" + (", bands = ±std over seeds" if bands else "")
    return _to_figure(fig, f"{_slug(task)}-robustness", f"line chart of {primary} vs missing rate for {task}", cap)


@_plot
def _efficiency_figure(task: str, rows: list[dict[str, Any]]) -> Figure | None:
    """Primary metric vs parameters and vs latency (when measured)."""
    primary = rows[0]["primary_metric"]
    keys = [k for k in ("params", "latency_ms_per_batch")
            if any(_num(r.get(k)) is not None and _num(r.get(primary)) is not None for r in rows)]
    if not keys:
        return None
    fig, axes = _new_figure(4.2 * len(keys) + 0.6, 3.8, ncols=len(keys))
    colors = _colors(rows)
    for ax, key in zip(axes, keys):
        pts = [(r, _num(r.get(key))) for r in rows if _num(r.get(key)) is not None and _num(r.get(primary)) is not None]
        for r, x in pts:
            ax.errorbar([x], [r[primary]], yerr=[_num(r.get(f"{primary}_std")) or 0.0], fmt="o", ms=6, capsize=3,
                        color=colors[r["name"]], label=_label(r))
            ax.annotate(str(r["name"]), (x, r[primary]), textcoords="offset points", xytext=(5, 4), fontsize=7)
        xs = [x for _, x in pts]
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("parameters" if key == "params" else "latency (ms per batch)")
        ax.set_ylabel(primary)
        ax.set_title(f"{primary} vs {'parameters' if key == 'params' else 'latency'}")
    what = " and ".join("parameters" if k == "params" else "latency" for k in keys)
    return _to_figure(fig, f"{_slug(task)}-efficiency", f"scatter of {primary} vs {what} for {task}",
                      f"{task}: clean-test {primary} (± std over seeds) vs {what}")


@_plot
def _confusion_figure(task: str, name: str, matrix: list[list[float]], labels: list[str]) -> Figure:
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    k = len(m)
    size = min(2.8 + 0.45 * k, 9.0)
    fig, (ax,) = _new_figure(size + 1.0, size)
    rowsum = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rowsum, out=np.zeros_like(m), where=rowsum > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.grid(False)
    if k <= 25:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{m[i, j]:g}", ha="center", va="center", fontsize=8 if k <= 12 else 6,
                        color="white" if norm[i, j] > 0.6 else "black")
    ticks = list(range(k))
    ax.set_xticks(ticks, labels, rotation=45 if max(len(s) for s in labels) > 3 else 0, ha="right" if max(len(s) for s in labels) > 3 else "center")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{task}: confusion of {name}")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of true class")
    return _to_figure(fig, f"{_slug(task)}-confusion", f"confusion matrix of {name} on {task}",
                      f"{task}: confusion matrix of the best entry {name} (counts; colour = row-normalised)")


# --------------------------------------------------------------------------------------------
# templates (package data: templates/, static/)
# --------------------------------------------------------------------------------------------


def template_loader():
    """The board's and the report's Jinja templates: package data under mmbench/board/templates/."""
    import jinja2

    return jinja2.PackageLoader("mmbench.board", "templates")


def static_text(name: str) -> str:
    """A file of mmbench/board/static/ (the pages' CSS and sorting script, inlined into each page)."""
    from importlib.resources import files

    return files("mmbench.board").joinpath("static", name).read_text(encoding="utf-8")


def _env(html: bool):
    import jinja2

    env = jinja2.Environment(loader=template_loader(), autoescape=html, undefined=jinja2.StrictUndefined,
                             trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)
    return env


def _common(title: str) -> dict[str, Any]:
    from markupsafe import Markup

    from mmbench import __version__

    return {"title": title, "version": __version__, "css": Markup(static_text("report.css")), "js": Markup(static_text("sort.js"))}


# --------------------------------------------------------------------------------------------
# the leaderboard page
# --------------------------------------------------------------------------------------------


def render_leaderboard_html(rows: list[dict[str, Any]], title: str = "mmbench leaderboard") -> str:
    """One self-contained HTML page for `leaderboard.rank()` rows: per task a sortable table
    (primary metric mean ± std, other clean metrics, robustness, efficiency, per-condition
    columns), a bar chart of the primary metric and a metric-vs-missing-rate plot."""
    tasks = []
    for task, task_rows in _by_task(rows).items():
        task_rows = sorted(task_rows, key=lambda r: r.get("rank", 0))
        figs = [_bar_figure(task, task_rows)]
        notes = []
        rob = _robustness_figure(task, task_rows)
        if rob is not None:
            figs.append(rob)
        else:
            notes.append("No missing-rate conditions (rate:R) were evaluated for this task, so there is no robustness curve.")
        from mmbench.board.entries import significance_note

        tasks.append({"name": task, "slug": _slug(task), "primary": task_rows[0]["primary_metric"],
                      "hib": bool(task_rows[0]["higher_is_better"]), "table": _board_table(task_rows),
                      "sig_note": significance_note(task_rows), "figures": figs, "notes": notes})
    ctx = _common(title) | {"tasks": tasks, "n_entries": len(rows)}
    return _env(True).get_template("board.html.j2").render(**ctx)


# --------------------------------------------------------------------------------------------
# the report: inputs
# --------------------------------------------------------------------------------------------


def _result_files(d: Path) -> list[Path]:
    """Result JSON files in a folder: a run folder's result.json; every result.json below a runs
    root; else leaderboard entries (`*.json` in the folder and its task folders, not history)."""
    if (d / "result.json").is_file():
        return [d / "result.json"]
    runs = sorted(p for p in d.rglob("result.json") if p.is_file() and "history" not in p.relative_to(d).parts)
    if runs:
        return runs
    files = [f for f in sorted(d.glob("*.json")) if f.is_file() and not f.name.startswith(".")]
    for sub in sorted(p for p in d.iterdir() if p.is_dir() and p.name != "history" and not p.name.startswith(".")):
        files += [f for f in sorted(sub.glob("*.json")) if f.is_file() and not f.name.startswith(".")]
    return files


def collect_results(inputs: Sequence[str | Path]) -> tuple[list[Result], list[Path], int]:
    """Parse every input (result/entry JSON files, run folders, runs roots, leaderboard folders)
    as `Result`s. Returns (results, files read, duplicates skipped); duplicates are results with
    the same (task, name, seed), of which the highest version / newest is kept."""
    from mmbench.board.entries import read_entry

    if not inputs:
        raise MMBenchError("no inputs given: pass result JSON files, run folders or leaderboard folders")
    files: list[Path] = []
    seen: set[Path] = set()
    for inp in inputs:
        p = Path(inp)
        if p.is_file():
            found = [p]
        elif p.is_dir():
            found = _result_files(p)
            if not found:
                raise DataError("no results found (expected result.json in run folders, or leaderboard entries "
                                "<task>/<name>.json)", p)
        else:
            raise DataError("file not found", p)
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    chosen: dict[tuple[str, str, int | None], Result] = {}
    for f in files:
        r = read_entry(f)
        k = (r.task, r.name, r.seed)
        if k not in chosen or (r.version, r.created) > (chosen[k].version, chosen[k].created):
            chosen[k] = r
    return list(chosen.values()), files, len(files) - len(chosen)


# --------------------------------------------------------------------------------------------
# the report: content
# --------------------------------------------------------------------------------------------

_CI_NOTE = ("95% CI: the evaluation's bootstrap interval over test samples (averaged over seeds), marked b; "
            "otherwise a Student-t interval of the mean over seeds, marked s.")


def _ci(group: list[Result], metric: str) -> tuple[float, float, str] | None:
    boots = [b for e in group if (b := _ci_bounds(e.confidence_intervals.get("clean", {}).get(metric)))]
    if boots:
        return (sum(b[0] for b in boots) / len(boots), sum(b[1] for b in boots) / len(boots), "b")
    vals = [e.metrics["clean"][metric] for e in group if metric in e.metrics.get("clean", {})]
    if len(vals) >= 2:
        m, s = _mean_std(vals)
        h = _t95(len(vals) - 1) * s / math.sqrt(len(vals))
        return (m - h, m + h, "s")
    return None


def _metrics_table(rows: list[dict[str, Any]], groups: dict[str, list[Result]]) -> tuple[Table, dict[str, tuple[float, float]]]:
    hib = bool(rows[0]["higher_is_better"])
    primary = rows[0]["primary_metric"]
    metrics = _metrics_of(rows)
    cols = _ident_columns()
    for m in metrics:
        d = _best_dir(hib) if m == primary else "desc"
        cols += [Column(m, m + (" (primary)" if m == primary else ""), d, "mean ± std over seeds"),
                 Column(f"{m}_ci", f"{m} 95% CI", d, "sorted by the lower bound")]
    body = []
    primary_ci: dict[str, tuple[float, float]] = {}
    for r in rows:
        cells = _ident_cells(r)
        for m in metrics:
            ci = _ci(groups[r["name"]], m)
            cells.append(_metric_cell(r, m))
            if ci is None:
                cells.append(_cell("-"))
            else:
                cells.append(_cell(f"[{ci[0]:.4f}, {ci[1]:.4f}] {ci[2]}", ci[0]))
                if m == primary:
                    primary_ci[r["name"]] = (ci[0], ci[1])
        body.append(cells)
    return Table(cols, body, css="metrics"), primary_ci


def _robust_table(rows: list[dict[str, Any]]) -> Table:
    hib = bool(rows[0]["higher_is_better"])
    primary = rows[0]["primary_metric"]
    conds = _conditions(rows)
    cols = [Column("rank", "#", "asc"), Column("name", "name", "asc", numeric=False),
            Column(primary, f"{primary}@clean", _best_dir(hib)),
            Column("auc_rate", "auc_rate", _best_dir(hib), f"normalised area under {primary} vs missing rate"),
            Column("worst_drop", "worst_drop", "asc", "largest drop from clean over the conditions")]
    cols += [Column(f"{primary}@{c}", f"{primary}@{c}", _best_dir(hib)) for c in conds]
    body = []
    for r in rows:
        cells = [_value_cell(r, "rank"), _cell(str(r["name"])), _cell(_fmt(r.get(primary)), r.get(primary)),
                 _value_cell(r, "auc_rate"), _value_cell(r, "worst_drop")]
        cells += [_cell(_fmt(r["conditions"][c]), r["conditions"][c]) if c in r.get("conditions", {}) else _cell("-")
                  for c in conds]
        body.append(cells)
    return Table(cols, body, css="robustness")


def _eff_table(rows: list[dict[str, Any]]) -> Table:
    hib = bool(rows[0]["higher_is_better"])
    primary = rows[0]["primary_metric"]
    effs = _eff_keys(rows, always=EFFICIENCY_KEYS)
    cols = [Column("rank", "#", "asc"), Column("name", "name", "asc", numeric=False),
            Column(primary, primary, _best_dir(hib))]
    cols += [Column(k, _EFF_LABELS[k], "asc") for k in effs]
    body = [[_value_cell(r, "rank"), _cell(str(r["name"])), _metric_cell(r, primary)] + [_value_cell(r, k) for k in effs]
            for r in rows]
    return Table(cols, body, css="efficiency")


def _rate_bands(rows: list[dict[str, Any]], groups: dict[str, list[Result]]) -> dict[str, list[tuple[float, float, float]]]:
    out = {}
    for r in rows:
        metric = r["primary_metric"]
        per_rate: dict[float, list[float]] = {}
        for e in groups[r["name"]]:
            for c, vals in e.metrics.items():
                rate = 0.0 if c == "clean" else _rate(c)
                if rate is not None and metric in vals:
                    per_rate.setdefault(rate, []).append(vals[metric])
        if any(len(v) > 1 for v in per_rate.values()):
            out[r["name"]] = [(x, *_mean_std(v)) for x, v in sorted(per_rate.items())]
    return out


def _confusion(group: list[Result]) -> tuple[list[list[float]] | None, list[str], str]:
    """Sum of the per-seed confusion matrices of one entry, class labels, and a reason if none."""
    mats = []
    labels: list[str] = []
    bad = 0
    for e in group:
        m = e.extra.get("confusion_matrix")
        if m is None:
            continue
        ok = (isinstance(m, list) and len(m) > 0 and all(isinstance(row, list) and len(row) == len(m) for row in m)
              and all(_num(x) is not None and x >= 0 for row in m for x in row))
        if not ok:
            bad += 1
            continue
        mats.append(m)
        names = e.extra.get("class_names")
        if not labels and isinstance(names, list) and len(names) == len(m):
            labels = [str(n) for n in names]
    if not mats:
        why = "malformed" if bad else "missing"
        return None, [], why
    k = len(mats[0])
    same = [m for m in mats if len(m) == k]
    total = [[float(sum(m[i][j] for m in same)) for j in range(k)] for i in range(k)]
    return total, labels or [str(i) for i in range(k)], ""


def _class_table(matrix: list[list[float]], labels: list[str]) -> Table:
    k = len(matrix)
    cols = [Column("class", "class", "asc", numeric=False), Column("support", "support", "desc"),
            Column("recall", "recall", "desc"), Column("precision", "precision", "desc"),
            Column("f1", "F1", "desc")]
    body = []
    for i in range(k):
        support = sum(matrix[i])
        predicted = sum(matrix[j][i] for j in range(k))
        tp = matrix[i][i]
        rec = tp / support if support else None
        prec = tp / predicted if predicted else None
        f1 = 2 * rec * prec / (rec + prec) if rec is not None and prec is not None and rec + prec > 0 else None
        body.append([_cell(labels[i]), _cell(f"{support:g}", support), _cell(_fmt(rec), rec), _cell(_fmt(prec), prec),
                     _cell(_fmt(f1), f1)])
    return Table(cols, body, css="classes")


_CHECK_NOTE = ("Mean over this run's seeds (clean test set) against the measured reference in "
               "baselines/reference.json (mean ± std over its seeds). Band: the largest difference that still "
               "reproduces, 3 standard errors of the difference of the two means (mmbench.reproduce.tolerance).")


def _significance_table(rows: list[dict[str, Any]]) -> tuple[Table | None, str]:
    """The pairwise matrix of one task (rows and columns in rank order): the cell of row A,
    column B is A - B in the direction of better, its Holm-adjusted p-value, and * where the
    pair differs (p_holm < 0.05, the board's one rule; see mmbench.evaluation.significance)."""
    if not rows or rows[0].get("letters") is None:
        return None, ""
    from mmbench.board.entries import significance_note

    names = [r["name"] for r in rows]
    columns = [Column("name", "entry (letters)", "asc", numeric=False)]
    columns += [Column(f"vs-{n}", f"vs {n}", "desc", f"difference from {n}, Holm-adjusted p; * differs") for n in names]
    body = []
    for r in rows:
        cells = [_cell(f"{r['name']} ({r['letters']})")]
        for n in names:
            t = (r.get("pairwise") or {}).get(n)
            cells.append(_cell("-") if t is None else
                         _cell(f"{t['diff']:+.4f} ({t['p_holm_display']}){' *' if t['significant'] else ''}", t["diff"]))
        body.append(cells)
    return Table(columns, body, first_is_best=False), significance_note(rows)


def _check_table(checks: Sequence[Any]) -> Table | None:
    """`mmbench reproduce`'s reference checks of one task (objects with task, fusion, metric,
    mean, reference, reference_std, band, ok and verdict; see mmbench.reproduce.Check)."""
    if not checks:
        return None
    columns = [Column("fusion", "fusion", "asc", numeric=False), Column("metric", "metric", "asc", numeric=False),
               Column("mean", "mean over seeds", "desc"), Column("reference", "reference", "desc"),
               Column("difference", "difference", "asc", "mean - reference"),
               Column("band", "band", "asc", "largest |difference| that reproduces"),
               Column("verdict", "verdict", "asc", numeric=False)]
    rows = []
    for c in checks:
        has_ref = c.reference is not None
        failed = getattr(c, "error", None) is not None  # the row failed: no mean
        rows.append([
            _cell(str(c.fusion)), _cell(str(c.metric)), _cell("-" if failed else f"{c.mean:.4f}", None if failed else c.mean),
            _cell(f"{c.reference:.4f} ± {c.reference_std:.4f}" if has_ref else "-", c.reference),
            _cell(f"{c.mean - c.reference:+.4f}" if has_ref else "-", c.mean - c.reference if has_ref else None),
            _cell(f"±{c.band:.4f}" if c.band is not None else "-", c.band),
            _cell(c.verdict),
        ])
    return Table(columns, rows, first_is_best=False)


def _report_context(results: list[Result], title: str, sources: Sequence[str | Path], skipped: int,
                    checks: Sequence[Any] = ()) -> dict[str, Any]:
    from mmbench.board.entries import rank

    if not results:
        raise MMBenchError("no results to report")
    rows = rank(results, matrix=True)
    groups: dict[tuple[str, str], list[Result]] = {}
    for e in results:
        groups.setdefault((e.task, e.name), []).append(e)
    for g in groups.values():
        g.sort(key=lambda e: (e.seed is None, e.seed or 0))
    for r in rows:  # efficiency: mean over seeds (rank() keeps the first seed's)
        group = groups[(r["task"], r["name"])]
        for k in EFFICIENCY_KEYS:
            vals = [v for e in group if e.efficiency and (v := _num(e.efficiency.get(k))) is not None]
            if vals:
                r[k] = sum(vals) / len(vals)
    tasks = []
    for task, task_rows in _by_task(rows).items():
        tg = {r["name"]: groups[(task, r["name"])] for r in task_rows}
        best = task_rows[0]
        metrics_table, primary_ci = _metrics_table(task_rows, tg)
        t: dict[str, Any] = {"name": task, "slug": _slug(task), "primary": best["primary_metric"],
                             "hib": bool(best["higher_is_better"]), "best": best["name"],
                             "metrics_table": metrics_table, "robust_table": _robust_table(task_rows),
                             "check_table": _check_table([c for c in checks if c.task == task]),
                             "sig_table": None, "sig_note": "",
                             "eff_table": _eff_table(task_rows),
                             "bar_figures": [_bar_figure(task, task_rows, primary_ci or None)],
                             "robust_figures": [], "robust_notes": [], "eff_figures": [], "eff_notes": [],
                             "confusion_figures": [], "confusion_table": None, "confusion_notes": []}
        t["sig_table"], t["sig_note"] = _significance_table(task_rows)
        rob = _robustness_figure(task, task_rows, _rate_bands(task_rows, tg))
        if rob is None:
            t["robust_notes"].append("No missing-rate conditions (rate:R) were evaluated, so there is no robustness curve.")
        else:
            t["robust_figures"].append(rob)
        eff = _efficiency_figure(task, task_rows)
        if eff is None:
            t["eff_notes"].append("No efficiency measurements (params, latency) in these results.")
        else:
            t["eff_figures"].append(eff)
        matrix, labels, why = _confusion(tg[best["name"]])
        if matrix is None:
            what = ("is malformed (expected a square list of lists of counts)" if why == "malformed"
                    else "is not recorded")
            t["confusion_notes"].append(f"Per-class confusion not available: the confusion matrix of {best['name']} "
                                        f"(extra.confusion_matrix in its results) {what}.")
        else:
            t["confusion_figures"].append(_confusion_figure(task, best["name"], matrix, labels))
            t["confusion_table"] = _class_table(matrix, labels)
            seeds = sum(1 for e in tg[best["name"]] if e.extra.get("confusion_matrix") is not None)
            if seeds > 1:
                t["confusion_notes"].append(f"Counts summed over {seeds} seeds.")
        tasks.append(t)
    return {"title": title, "tasks": tasks, "n_results": len(results), "n_entries": len(rows),
            "sources": [str(s) for s in sources], "skipped": skipped, "ci_note": _CI_NOTE, "check_note": _CHECK_NOTE,
            "failed": list(dict.fromkeys(f"{c.task} {c.fusion}: {c.error}" for c in checks
                                         if getattr(c, "error", None) is not None))}


def render_report_html(results: list[Result], title: str = "mmbench report",
                       sources: Sequence[str | Path] = (), skipped: int = 0, checks: Sequence[Any] = ()) -> str:
    """The report as one self-contained HTML page (figures embedded as data URIs); `checks`
    (from `mmbench reproduce`) add a reference-check table to each task."""
    ctx = _common(title) | _report_context(results, title, sources, skipped, checks)
    return _env(True).get_template("report.html.j2").render(**ctx)


def render_report_markdown(results: list[Result], title: str = "mmbench report", assets_dir: str = "report_files",
                           sources: Sequence[str | Path] = (), skipped: int = 0,
                           checks: Sequence[Any] = ()) -> tuple[str, dict[str, bytes]]:
    """The report as Markdown plus its figures: (text, {file name: PNG bytes}); the text links
    each figure as `<assets_dir>/<file name>`."""
    ctx = _report_context(results, title, sources, skipped, checks)
    figs: dict[str, bytes] = {}

    def link(f: Figure) -> str:
        fname = f"{f.name}.png"
        figs[fname] = f.png
        return quote(f"{assets_dir}/{fname}")

    from mmbench import __version__

    text = _env(False).get_template("report.md.j2").render(**ctx, link=link, version=__version__)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text, figs


def write_report(inputs: Sequence[str | Path], out: str | Path, title: str = "mmbench report") -> Path:
    """Read the inputs and write the report to `out`: HTML (.html/.htm) or Markdown (.md, with
    its PNGs in `<stem>_files/` beside it). Every file is written atomically."""
    out = _report_path(out)
    results, files, skipped = collect_results(inputs)
    return write_results_report(results, out, title, files, skipped)


def _report_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm", ".md"):
        raise MMBenchError(f"-o {out}: the report file must end with .html, .htm or .md")
    return out


def write_results_report(results: list[Result], out: str | Path, title: str = "mmbench report",
                         sources: Sequence[str | Path] = (), skipped: int = 0, checks: Sequence[Any] = ()) -> Path:
    """:func:`write_report` for results already in memory (`mmbench reproduce`), with its
    reference checks."""
    from mmbench.core.io import atomic_write_bytes, atomic_write_text

    out = _report_path(out)
    if out.suffix.lower() == ".md":
        assets = f"{out.stem}_files"
        text, figs = render_report_markdown(results, title, assets, sources, skipped, checks)
        for name, png in figs.items():
            atomic_write_bytes(out.parent / assets / name, png)
    else:
        text = render_report_html(results, title, sources, skipped, checks)
    atomic_write_text(out, text)
    return out
