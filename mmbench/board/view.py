"""One task as a reader sees it, built once for both the task's site page and the report (so the
two show the same numbers): the decision summary, the ranked entries with their verdicts, the
pairwise heat map, robustness, efficiency, the per-condition results and published figures.
"""

from __future__ import annotations

from typing import Any

from mmbench.board import figures as F
from mmbench.board import tables as T
from mmbench.board.efficiency import devices_note
from mmbench.board.robustness import annotate_robustness_verdicts, robustness_verdicts
from mmbench.board.summary import chance_level, decision_summary, retrieval_sentences


def rate_bands(rows: list[dict[str, Any]], groups: dict[str, list[Any]]) -> dict[str, list[tuple[float, float, float]]]:
    """{entry: [(rate, mean, std over seeds)]} of the primary metric (entries with several seeds)."""
    out = {}
    for r in rows:
        metric = r["primary_metric"]
        per_rate: dict[float, list[float]] = {}
        for e in groups.get(r["name"], []):
            for c, vals in e.metrics.items():
                rate = 0.0 if c == "clean" else T.rate_of(c)
                if rate is not None and metric in vals:
                    per_rate.setdefault(rate, []).append(vals[metric])
        if any(len(v) > 1 for v in per_rate.values()):
            out[r["name"]] = [(x, *T.mean_std(v)) for x, v in sorted(per_rate.items())]
    return out


ROBUSTNESS_NOTE = ("Relative robustness: the mean {primary} over the missing rates {rates} (trapezoid area under the "
                   "curve divided by the rate range; MultiBench's relative robustness without its max-min normalisation). "
                   "Effective robustness: the mean gap between the entry's curve and late fusion's curve shifted to start "
                   "at the entry's clean value (MultiBench); positive = loses less than late fusion from the same start, "
                   "so an entry near chance, with little to lose, scores high on it. Both mean ± std over seeds; "
                   "\"largest drop\" is secondary: weak entries have little to drop.")


def task_view(task: str, rows: list[dict[str, Any]], results: list[Any], published: list[dict[str, Any]] = (),
              board_dir: Any = None) -> dict[str, Any]:
    """The shared content of one task (``rows``: its `rank` rows in rank order; ``results``: its
    entries' Result records; ``published``: its published rows; ``board_dir``: where the
    entries' stored predictions are, for the verdicts on relative robustness)."""
    published = list(published)
    view: dict[str, Any] = {"name": task, "slug": T.slug(task), "summary": [], "entries": None, "sig_note": "",
                            "figures_main": [], "heatmap": [], "robust_table": None, "robust_figures": [],
                            "robust_note": "", "eff_table": None, "eff_note": "", "eff_figures": [], "cond_table": None,
                            "published": None, "sources": [], "chance": None, "robust_sig_note": "", "pairwise": None,
                            "clean_only": False}
    if published:
        primary = rows[0]["primary_metric"] if rows else None
        view["published"] = T.published_table(published, rows, primary)
        view["sources"] = list({(r["source"], r["url"]): {"source": r["source"], "url": r["url"]} for r in published}.values())
    if not rows:
        return view
    primary, hib = rows[0]["primary_metric"], bool(rows[0]["higher_is_better"])
    groups: dict[str, list[Any]] = {}
    for e in results:
        groups.setdefault(e.name, []).append(e)
    chance = chance_level(results, primary, hib)
    rsig = robustness_verdicts(task, rows, results, board_dir)
    annotate_robustness_verdicts(rows, rsig)
    view["robust_sig_note"] = rsig["relative"].caption if rsig else ""
    if rsig and rsig["effective"] is not None:
        view["robust_sig_note"] += (" The letters beside effective robustness come from the same resamples "
                                    "(effective robustness is relative robustness minus the clean value, up to a constant).")
    from mmbench.board.entries import significance_note

    view.update(primary=primary, hib=hib, chance=chance, summary=decision_summary(rows, chance) + retrieval_sentences(rows, groups),
                entries=T.entries_table(rows), sig_note=significance_note(rows), pairwise=T.pairwise_table(rows),
                robust_table=T.robustness_table(rows), eff_table=T.efficiency_table(rows),
                eff_note=devices_note(rows), cond_table=T.conditions_table(rows),
                robust_note=ROBUSTNESS_NOTE.format(primary=primary, rates=T.rate_range(rows)),
                clean_only=not any(r.get("conditions") for r in rows))
    if view["clean_only"]:  # e.g. retrieval: one gallery, no missing-modality condition
        view["robust_note"] = ("The entries are scored under the clean condition only (the task defines no "
                               "missing-modality condition, or they were scored without one): no robustness is measured.")
    view["figures_main"] = [F.bar_figure(task, rows, chance)]
    heat = F.heatmap_figure(task, rows, view["sig_note"] or f"{task}: pairwise differences")
    view["heatmap"] = [heat] if heat else []
    for fig in (F.robustness_figure(task, rows, rate_bands(rows, groups), chance), F.drop_figure(task, rows, chance)):
        if fig is not None:
            view["robust_figures"].append(fig)
    eff = F.efficiency_figure(task, rows)
    view["eff_figures"] = [eff] if eff else []
    return view
