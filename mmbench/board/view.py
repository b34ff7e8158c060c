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
from mmbench.board.decisions import matrix_table, task_decisions
from mmbench.board.summary import decision_summary, retrieval_sentences, task_reference_points


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


def masks_note(results: list[Any]) -> str:
    """What the missing-modality masks of the entries were (mmbench.data.masks): a warning for
    entries scored under protocol 1, whose rate conditions could leave items with no modality;
    for the current protocol, the conditions evaluated once and the absent modalities."""
    from mmbench.data.masks import MASKS_PROTOCOL

    old = sorted({e.name for e in results if e.masks_protocol != MASKS_PROTOCOL and any(c.startswith("rate:") for c in e.metrics)})
    parts = []
    if old:
        parts.append(f"Masks protocol 1 ({len(old)} of {len({e.name for e in results})} entries): these were scored "
                     "before the current missing-modality masks; their rate:R conditions removed each modality of each "
                     "item independently with probability R, so about R^k of the items (k modalities) had none at all, "
                     "and the relative and effective robustness below rest partly on outputs for an empty input. They "
                     "stay as scored until the board is re-published by `mmbench reproduce`; under protocol "
                     f"{MASKS_PROTOCOL}, rate:R makes a share R of the items lose one modality each, never the last.")
    current = [e for e in results if e.masks_protocol == MASKS_PROTOCOL]
    if current:
        extra = current[0].extra
        if extra.get("condition_aliases"):
            parts.append("Evaluated once (equal masks on this test set): " + ", ".join(
                f"{a} = {c}" for a, c in extra["condition_aliases"].items()) + ".")
        if extra.get("absent_modalities"):
            parts.append(f"Absent from every test item: {', '.join(extra['absent_modalities'])} (no condition of its own).")
        if extra.get("nothing_present"):
            parts.append(f"{extra['nothing_present']['items']} test items have no modality in the data: scored apart, "
                         "outside every condition and robustness figure.")
    return " ".join(parts)


DECISION_NOTE = ("Each scenario is tested like the clean test set (the caption under the ranked entries): the two-level "
                 "paired bootstrap of {metric} over the test {unit}s and each entry's seeds, on the same draws in every "
                 "scenario, all pairs of the scenario Holm-adjusted. The top group holds the entries whose pair with the scenario's best has "
                 "Holm-adjusted p >= 0.05; * marks a margin over the best single-modality entry with p < 0.05. "
                 "Scenarios whose predictions equal another's for every entry are shown once. Statements that removing "
                 "a modality helps or hurts compare each entry with its own clean result on the same resamples, Holm over "
                 "the task's {family} entry-condition tests.")


def task_view(task: str, rows: list[dict[str, Any]], results: list[Any], published: list[dict[str, Any]] = (),
              board_dir: Any = None) -> dict[str, Any]:
    """The shared content of one task (``rows``: its `rank` rows in rank order; ``results``: its
    entries' Result records; ``published``: its published rows; ``board_dir``: where the
    entries' stored predictions are, for the verdicts on relative robustness)."""
    published = list(published)
    view: dict[str, Any] = {"name": task, "slug": T.slug(task), "summary": [], "entries": None, "sig_note": "",
                            "figures_main": [], "heatmap": [], "robust_table": None, "robust_figures": [],
                            "robust_note": "", "eff_table": None, "eff_note": "", "eff_figures": [], "cond_table": None,
                            "published": None, "sources": [], "chance": None, "reference_note": "",
                            "reference_points": None, "reliance_table": None, "reliance_note": "", "robust_sig_note": "",
                            "pairwise": None, "clean_only": False, "decisions": None, "decision_table": None,
                            "decision_note": ""}
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
    points = task_reference_points(results, primary)
    chance = points.chance if points is not None else None
    view["reference_note"] = points.note() if points is not None else ""
    view["reference_points"] = points.to_json() if points is not None else None
    rsig = robustness_verdicts(task, rows, results, board_dir)
    annotate_robustness_verdicts(rows, rsig)
    view["robust_sig_note"] = rsig["relative"].caption if rsig else ""
    if rsig and rsig["effective"] is not None:
        view["robust_sig_note"] += (" The letters beside effective robustness come from the same resamples "
                                    "(effective robustness is relative robustness minus the clean value, up to a constant).")
    from mmbench.board.entries import significance_note

    dec = task_decisions(task, rows, results, board_dir)
    if dec is not None and dec.scenarios:
        view["decisions"], view["decision_table"] = dec, matrix_table(dec)
        view["decision_note"] = DECISION_NOTE.format(metric=primary, family=len(dec.changes),
                                                     unit=dec.scenarios[0].verdicts.unit)
    view.update(primary=primary, hib=hib, chance=chance, summary=decision_summary(rows, points, dec) + retrieval_sentences(rows, groups),
                entries=T.entries_table(rows), sig_note=significance_note(rows), pairwise=T.pairwise_table(rows),
                robust_table=T.robustness_table(rows), reliance_table=T.reliance_table(rows),
                reliance_note=T.reliance_note(rows), eff_table=T.efficiency_table(rows),
                eff_note=devices_note(rows), cond_table=T.conditions_table(rows),
                robust_note=ROBUSTNESS_NOTE.format(primary=primary, rates=T.rate_range(rows)),
                clean_only=not any(r.get("conditions") for r in rows))
    note = masks_note(results)
    if note and not view["clean_only"]:
        view["robust_note"] = note + " " + view["robust_note"]
    if view["clean_only"]:  # e.g. retrieval: one gallery, no missing-modality condition
        view["robust_note"] = ("The entries are scored under the clean condition only (the task defines no "
                               "missing-modality condition, or they were scored without one): no robustness is measured.")
    view["figures_main"] = [F.bar_figure(task, rows, chance)]
    heat = F.heatmap_figure(task, rows, view["sig_note"] or f"{task}: pairwise differences")
    view["heatmap"] = [heat] if heat else []
    for fig in (F.tradeoff_figure(task, rows), F.robustness_figure(task, rows, rate_bands(rows, groups), chance),
                F.drop_figure(task, rows, chance)):
        if fig is not None:
            view["robust_figures"].append(fig)
    eff = F.efficiency_figure(task, rows)
    view["eff_figures"] = [eff] if eff else []
    return view


def board_json(rows: list[dict[str, Any]], results: list[Any], board_dir: Any, across: bool = True) -> str:
    """`leaderboard --format json`: ``entries`` (the ranked rows), ``decisions`` (every task's
    decision matrix, one object per scenario) and, with `across`, ``across_tasks`` (the
    cross-task ranking of :mod:`mmbench.board.across`)."""
    import json

    from mmbench.board.across import across_tasks
    from mmbench.board.entries import clean_zero

    from mmbench.board.testsets import partition_by_test_set

    results = partition_by_test_set(list(results))  # labelled as the rows are (<task>@<fingerprint> where split)
    decisions = []
    for task, task_rows in T.by_task(rows).items():
        dec = task_decisions(task, task_rows, [e for e in results if e.task == task], board_dir)
        decisions += dec.to_json() if dec else []
    doc: dict[str, Any] = {"entries": rows, "decisions": decisions}
    if across:
        doc["across_tasks"] = [a.to_json() for a in across_tasks(rows, results)]
    return json.dumps(clean_zero(doc), indent=2)
