"""The board's figures: matplotlib's Agg renderer through ``matplotlib.figure.Figure`` (pyplot
and the global backend are never touched), fixed sizes and rc settings and no PNG "Software"
metadata, so the same inputs give byte-identical PNGs.

Every entry of a task has one style on every figure of the task: a colour of the colour-blind-safe
Okabe-Ito palette and a distinct marker, solid lines for fusions and dashed for single-modality
entries. Line charts hold at most :data:`PANEL_LINES` lines per panel (small multiples, in rank
order) and name each line at its end; scatters label their points. Bars start at 0; a dotted
line marks the task's chance level where it is known. Every title fits its canvas
(:func:`texts_outside` finds any text that does not).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

from mmbench.board.tables import fmt_count, is_unimodal, label, num, rate_of, rate_range, slug

# Okabe & Ito's colour-blind-safe palette (yellow left out: unreadable on white); entries beyond
# it repeat a colour with another marker, and no panel shows more than PANEL_LINES of them
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
PANEL_LINES = 6
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d", "H", "8"]


@dataclass
class Figure:
    name: str  # file stem, unique within a page
    png: bytes
    alt: str
    caption: str
    width: int
    height: int
    outside: tuple[str, ...] = ()  # texts drawn (partly) outside the canvas: clipped in the PNG

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


_RC = {"svg.hashsalt": "mmbench", "font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
       "figure.dpi": 100, "savefig.dpi": 100, "axes.spines.top": False, "axes.spines.right": False,
       "legend.fontsize": 8, "legend.frameon": False}


def new_figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def to_figure(fig: Any, name: str, alt: str, caption: str) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    w, h = (int(round(x * 100)) for x in fig.get_size_inches())
    return Figure(name, buf.getvalue(), alt, caption, w, h, texts_outside(fig, canvas.get_renderer()))


def texts_outside(fig: Any, renderer: Any) -> tuple[str, ...]:
    """The titles, axis labels, legend entries and annotations of a drawn figure whose box
    leaves the canvas (clipped in the PNG), and any title broken over several lines. Tick
    labels are left out: matplotlib keeps undrawn ones beyond the axis limits."""
    w, h = fig.bbox.width, fig.bbox.height
    texts = list(fig.texts) + [t for lg in fig.legends for t in lg.get_texts()]
    titles = []
    for ax in fig.axes:
        titles.append(ax.title)
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.get_legend() is not None:
            texts += list(ax.get_legend().get_texts())
    out = []
    for t in texts:
        if not t.get_visible() or not t.get_text().strip():
            continue
        box = t.get_window_extent(renderer)
        if box.x0 < -1 or box.y0 < -1 or box.x1 > w + 1 or box.y1 > h + 1 or (t in titles and "\n" in t.get_text()):
            out.append(t.get_text())
    return tuple(out)


def plot(fn):
    """Run a plotting function under fixed rc settings (deterministic, no global state kept)."""
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def styles(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{entry name: matplotlib style}: distinct colour and marker per entry (rank order), dashed
    lines for single-modality entries."""
    return {r["name"]: {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
                        "linestyle": "--" if is_unimodal(r) else "-"} for i, r in enumerate(rows)}


def _chance_line(ax: Any, chance: float | None, horizontal: bool = True) -> None:
    if chance is None:
        return
    (ax.axhline if horizontal else ax.axvline)(chance, color="#444444", linestyle=":", linewidth=1.3,
                                               label=f"chance, uniform guess ({chance:.3f})")


@plot
def bar_figure(task: str, rows: list[dict[str, Any]], chance: float | None = None) -> Figure:
    """Primary metric per entry (rank order, best on top), bars from 0, error bars = std over seeds."""
    primary = rows[0]["primary_metric"]
    hib = rows[0]["higher_is_better"]
    n = len(rows)
    st = styles(rows)
    fig, (ax,) = new_figure(6.2, min(1.4 + 0.36 * n, 12.0))
    ys = list(range(n))[::-1]
    vals = [num(r.get(primary)) or 0.0 for r in rows]
    errs = [num(r.get(f"{primary}_std")) or 0.0 for r in rows]
    ax.barh(ys, vals, xerr=errs, color=[st[r["name"]]["color"] for r in rows], alpha=0.9, capsize=3,
            hatch=["//" if is_unimodal(r) else "" for r in rows], edgecolor="#ffffff", linewidth=0,
            error_kw={"elinewidth": 1.0, "ecolor": "#333333"})
    _chance_line(ax, chance, horizontal=False)
    ax.set_yticks(ys, [label(r) for r in rows])
    lo = min([0.0] + [v - e for v, e in zip(vals, errs)])
    hi = max([v + e for v, e in zip(vals, errs)] + [chance or 0.0])
    ax.set_xlim(lo, hi * 1.05 if hi > 0 else 1.0)
    ax.set_xlabel(f"{primary} ({'higher' if hib else 'lower'} is better); axis from 0")
    ax.set_title(f"clean {primary} per entry (mean ± std over seeds)")
    ax.grid(axis="y", visible=False)
    if chance is not None:
        ax.legend(loc="lower right")
    cap = (f"{task}: clean-test {primary} per entry, error bars = std over seeds, hatched = single modality"
           + (f", dotted line = chance, a uniform guess ({chance:.3f})" if chance is not None else ""))
    return to_figure(fig, f"{slug(task)}-bars", f"bar chart of {primary} per entry for {task}", cap)


def rate_points(row: dict[str, Any]) -> list[tuple[float, float]]:
    pts = {r: v for c, v in row.get("conditions", {}).items() if (r := rate_of(c)) is not None and num(v) is not None}
    if 0.0 not in pts and num(row.get(row["primary_metric"])) is not None:
        pts[0.0] = row[row["primary_metric"]]
    return sorted(pts.items())


def _end_labels(ax: Any, ends: list[tuple[str, tuple[float, float], str]], top: float) -> None:
    """Name each line at its last point, nudged apart vertically so that labels do not overlap."""
    gap = 0.055 * top
    placed: list[float] = []
    for name, (x, y), colour in sorted(ends, key=lambda e: -e[1][1]):
        yy = y
        while any(abs(yy - p) < gap for p in placed):
            yy -= gap / 2
        placed.append(yy)
        ax.text(x + 0.02, yy, name, fontsize=8.5, color=colour, ha="left", va="center")


@plot
def robustness_figure(task: str, rows: list[dict[str, Any]], bands: dict[str, list[tuple[float, float, float]]] | None = None,
                      chance: float | None = None) -> Figure | None:
    """Primary metric vs missing rate (clean = rate 0), one styled line per entry, ±std bands
    over seeds, the chance line; the legend outside the axes."""
    primary = rows[0]["primary_metric"]
    series = {r["name"]: rate_points(r) for r in rows}
    if not any(len(p) >= 2 for p in series.values()):
        return None
    st = styles(rows)
    drawn = [r for r in rows if series[r["name"]]]
    panels = [drawn[i:i + PANEL_LINES] for i in range(0, len(drawn), PANEL_LINES)]
    fig, axes = new_figure(5.2 * len(panels) + 0.6, 4.4, ncols=len(panels))
    top = max(p[1] for pts in series.values() for p in pts)
    for k, (ax, panel) in enumerate(zip(axes, panels)):
        for r in panel:
            pts = series[r["name"]]
            s = st[r["name"]]
            band = (bands or {}).get(r["name"])
            if band and len(band) >= 2:
                xs, ms, ss = zip(*band)
                ax.fill_between(xs, [m - d for m, d in zip(ms, ss)], [m + d for m, d in zip(ms, ss)], color=s["color"],
                                alpha=0.08, linewidth=0)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ms=5, lw=1.6, **s)
        _end_labels(ax, [(r["name"], series[r["name"]][-1], st[r["name"]]["color"]) for r in panel], top)
        _chance_line(ax, chance)
        ax.set_xlabel("missing rate")
        ax.set_ylabel(primary if k == 0 else "")
        ax.set_ylim(0, top * 1.05)
        xs = sorted({p[0] for r in panel for p in series[r["name"]]})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlim(right=xs[-1] * 1.35)
        ax.set_title(f"ranks {k * PANEL_LINES + 1}-{k * PANEL_LINES + len(panel)} (clean order)")
    ax = axes[0]
    fig.suptitle(f"{primary} vs missing rate ({rate_range(rows)}), at most {PANEL_LINES} entries per panel")
    cap = (f"{task}: {primary} vs missing rate ({rate_range(rows)}) per entry; solid = fusion, dashed = single "
           f"modality{', bands = ±std over seeds' if bands else ''}"
           + (f", dotted line = chance, a uniform guess ({chance:.3f})" if chance is not None else ""))
    return to_figure(fig, f"{slug(task)}-robustness", f"line chart of {primary} vs missing rate for {task}", cap)


def _point_labels(ax: Any, points: list[tuple[str, float, float, float, str]]) -> None:
    """Label each point to its right, moving a label down (with a thin leader line) until it
    overlaps no label placed before it (in display pixels, 8-point text)."""
    fig = ax.figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # settle the layout: label positions are in display pixels
    to_px = ax.transData.transform
    placed: list[tuple[float, float, float, float]] = []
    line_h = 11.0
    for name, x, y, xerr, colour in sorted(points, key=lambda p: -p[2]):
        px, py = to_px((x + xerr, y))  # right of the point's error bar
        w = 5.2 * len(name) + 4
        dy = 0.0
        while any(px + 6 < b[2] and px + 6 + w > b[0] and py - dy - line_h / 2 < b[3] and py - dy + line_h / 2 > b[1]
                  for b in placed):
            dy += line_h / 2
        placed.append((px + 6, py - dy - line_h / 2, px + 6 + w, py - dy + line_h / 2))
        ax.annotate(name, (x + xerr, y), xytext=(6, -dy), textcoords="offset pixels", fontsize=8, color=colour,
                    va="center", arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.5} if dy > line_h else None)


@plot
def tradeoff_figure(task: str, rows: list[dict[str, Any]]) -> Figure | None:
    """MultiBench's robustness trade-off: clean primary metric against relative and against
    effective robustness, one labelled point per entry with its std over seeds on both axes."""
    primary = rows[0]["primary_metric"]
    keys = [k for k in ("relative_robustness", "effective_robustness")
            if sum(num(r.get(k)) is not None and num(r.get(primary)) is not None for r in rows) >= 2]
    if not keys:
        return None
    st = styles(rows)
    fig, axes = new_figure(5.4 * len(keys), 4.4, ncols=len(keys))
    for ax, key in zip(axes, keys):
        pts = [r for r in rows if num(r.get(key)) is not None and num(r.get(primary)) is not None]
        for r in pts:
            s = st[r["name"]]
            ax.errorbar([r[primary]], [r[key]], xerr=[num(r.get(f"{primary}_std")) or 0.0],
                        yerr=[num(r.get(f"{key}_std")) or 0.0], fmt=s["marker"], ms=6, capsize=2, color=s["color"],
                        elinewidth=0.8)
        ax.margins(x=0.18, y=0.12)
        _point_labels(ax, [(r["name"], r[primary], r[key], num(r.get(f"{primary}_std")) or 0.0, st[r["name"]]["color"])
                           for r in pts])
        ax.set_xlabel(f"clean {primary}")
        ax.set_ylabel(key.replace("_", " "))
        ax.set_title(f"clean {primary} vs {key.replace('_', ' ')}")
    return to_figure(fig, f"{slug(task)}-tradeoff", f"scatter of clean {primary} against robustness for {task}",
                     f"{task}: the robustness trade-off (MultiBench): clean {primary} against relative and effective "
                     "robustness, one point per entry, bars = std over seeds; up and right is better")


@plot
def drop_figure(task: str, rows: list[dict[str, Any]], chance: float | None = None) -> Figure | None:
    """Grouped bars: per entry, the primary metric clean and with each modality missing."""
    primary = rows[0]["primary_metric"]
    drops = sorted({c for r in rows for c in r.get("conditions", {}) if c.startswith("drop:")})
    if not drops:
        return None
    groups = ["clean"] + drops
    colours = ["#4c4c4c"] + PALETTE
    n = len(rows)
    width = 0.8 / len(groups)
    fig, (ax,) = new_figure(max(6.0, 0.75 * n + 2.5), 4.2)
    for k, g in enumerate(groups):
        xs = [i + (k - (len(groups) - 1) / 2) * width for i in range(n)]
        vals = [num(r.get(primary)) if g == "clean" else num(r.get("conditions", {}).get(g)) for r in rows]
        ax.bar([x for x, v in zip(xs, vals) if v is not None], [v for v in vals if v is not None], width=width,
               color=colours[k % len(colours)], label="clean" if g == "clean" else f"without {g[5:]}")
    _chance_line(ax, chance)
    ax.set_xticks(range(n), [r["name"] for r in rows], rotation=35, ha="right")
    ax.set_ylim(bottom=0)
    ax.set_ylabel(primary)
    ax.set_title(f"{primary} with one modality missing (mean over seeds)")
    ax.grid(axis="x", visible=False)
    fig.legend(loc="outside right upper")
    cap = (f"{task}: {primary} per entry on the clean test set and with each modality removed from every test "
           f"item; bars from 0" + (f", dotted line = chance, a uniform guess ({chance:.3f})" if chance is not None else ""))
    return to_figure(fig, f"{slug(task)}-drop", f"grouped bar chart of {primary} with each modality missing for {task}", cap)


@plot
def efficiency_figure(task: str, rows: list[dict[str, Any]]) -> Figure | None:
    """Primary metric vs parameters and vs latency (when measured), entries in a legend."""
    primary = rows[0]["primary_metric"]
    keys = [k for k in ("params", "latency_ms_per_batch")
            if any(num(r.get(k)) is not None and num(r.get(primary)) is not None for r in rows)]
    if not keys:
        return None
    st = styles(rows)
    fig, axes = new_figure(4.0 * len(keys) + 2.2, 3.8, ncols=len(keys))
    for ax, key in zip(axes, keys):
        pts = [(r, num(r.get(key))) for r in rows if num(r.get(key)) is not None and num(r.get(primary)) is not None]
        for r, x in pts:
            s = st[r["name"]]
            ax.errorbar([x], [r[primary]], yerr=[num(r.get(f"{primary}_std")) or 0.0], fmt=s["marker"], ms=6, capsize=3,
                        color=s["color"])
        xs = [x for _, x in pts]
        if min(xs) > 0 and max(xs) / min(xs) > 3:  # sizes spread over a decade pile up on a linear axis
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_count(v)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        elif key == "params":  # 100k, 1.5M: tick labels that do not run into each other
            from matplotlib.ticker import FuncFormatter, MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_count(v)))
        ax.set_xlabel("parameters used" if key == "params" else "latency (ms per batch, median over seeds)")
        ax.set_ylabel(primary)
        ax.set_title(f"{primary} vs {'parameters' if key == 'params' else 'latency'}")
        ax.margins(x=0.15)
        _point_labels(ax, [(r["name"], x, r[primary], 0.0, st[r["name"]]["color"]) for r, x in pts])
    what = " and ".join("parameters" if k == "params" else "latency" for k in keys)
    return to_figure(fig, f"{slug(task)}-efficiency", f"scatter of {primary} vs {what} for {task}",
                     f"{task}: clean-test {primary} (± std over seeds) vs {what}")


@plot
def heatmap_figure(task: str, rows: list[dict[str, Any]], caption: str) -> Figure | None:
    """The pairwise matrix as a heat map: cell (A, B) = A - B in the direction of better,
    coloured by the difference, ``*`` where the pair differs (Holm-adjusted p < 0.05)."""
    import numpy as np

    names = [r["name"] for r in rows]
    if len(names) < 2 or not any(r.get("pairwise") for r in rows):
        return None
    n = len(names)
    d = np.full((n, n), np.nan)
    sig = np.zeros((n, n), dtype=bool)
    for i, r in enumerate(rows):
        for j, other in enumerate(names):
            t = (r.get("pairwise") or {}).get(other)
            if t is not None and num(t.get("diff")) is not None:
                d[i, j] = t["diff"]
                sig[i, j] = bool(t.get("significant"))
    lim = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 1.0
    size = min(3.0 + 0.62 * n, 12.0)
    fig, (ax,) = new_figure(size + 1.4, size)
    im = ax.imshow(np.ma.masked_invalid(d), cmap="RdBu", vmin=-lim, vmax=lim)
    ax.grid(False)
    for i in range(n):
        for j in range(n):
            if np.isfinite(d[i, j]):
                text = f"{d[i, j]:+.3f}"
                text = "0.000" if float(text) == 0 else text  # no "-0.000"
                ax.text(j, i, f"{text}{'*' if sig[i, j] else ''}", ha="center", va="center",
                        fontsize=8 if n <= 14 else 7.5, color="white" if abs(d[i, j]) > 0.6 * lim else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("B")
    ax.set_ylabel("A")
    ax.set_title(f"A - B ({rows[0]['primary_metric']}, direction of better); * differs")
    fig.colorbar(im, ax=ax, shrink=0.8, label="difference")
    return to_figure(fig, f"{slug(task)}-pairwise", f"heat map of pairwise differences for {task}", caption)


@plot
def confusion_figure(task: str, name: str, matrix: list[list[float]], labels: list[str]) -> Figure:
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    k = len(m)
    size = min(2.8 + 0.45 * k, 9.0)
    fig, (ax,) = new_figure(size + 1.0, size)
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
    long = max(len(s) for s in labels) > 3
    ax.set_xticks(ticks, labels, rotation=45 if long else 0, ha="right" if long else "center")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{task}: confusion of {name}")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of true class")
    return to_figure(fig, f"{slug(task)}-confusion", f"confusion matrix of {name} on {task}",
                     f"{task}: confusion matrix of the best entry {name} (counts; colour = row-normalised)")
