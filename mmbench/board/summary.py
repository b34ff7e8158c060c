"""The decision summary of a task: four sentences generated from the ranked rows and their
verdicts, never written by hand.

1. **Clean winners**: the entries sharing the top letter of the compact letter display (no
   other entry is significantly better than any of them; two-level bootstrap, Holm).
2. **Robustness winners**: the same on relative robustness (mean primary metric over the missing
   rates); where the task has no robustness letters, the entry with the best mean and the
   entries within one seed standard deviation of it. Says so when the clean winner is not
   among them, with its place.
3. **Collapses**: per modality, the entries that fall to near chance when it is missing from
   every test item: they keep less than :data:`NEAR_CHANCE` of their clean margin over chance
   (entries that use only that modality are left out: they have nothing left). Chance here is
   the uniform guess, and the sentence says so with its value.
4. **Fusion vs the best single modality**: whether any fusion beats the best single-modality
   entry with a Holm-adjusted p < 0.05 in the pairwise matrix.

Chance is the expected score of a uniform guess on the task's test targets (:func:`chance_level`,
:mod:`mmbench.evaluation.reference_points`): 1/C for accuracy, 0.5 for MOSI's Acc-2. The other
reference point, the training split's majority class predicted for every test item, is shown
beside it on the page (:func:`task_reference_points`); a sentence names the one it uses.
"""

from __future__ import annotations

from typing import Any

from mmbench.board.tables import fmt, is_unimodal, num, rate_range

NEAR_CHANCE = 0.10  # keeps under 10% of its clean margin over chance


def task_reference_points(results: list[Any], metric: str) -> Any:
    """The :class:`~mmbench.evaluation.reference_points.ReferencePoints` of one task's entries on
    ``metric`` (the task spec gives the target range where it is known); None when no entry
    stores its test targets."""
    from mmbench.evaluation.reference_points import reference_points

    value_range = None
    if results:
        try:
            from mmbench.data.tasks import get_task

            value_range = get_task(results[0].task).target.range
        except Exception:  # noqa: BLE001 - a task not known here: no range (MAE's chance is then unknown)
            value_range = None
    return reference_points(results, metric, value_range)


def chance_level(results: list[Any], metric: str, higher_is_better: bool = True) -> float | None:
    """The expected ``metric`` of a uniform guess on the test targets stored with the results
    (``extra.test_items``); None when none stores them or no uniform guess is defined.
    (``higher_is_better`` is kept for callers of the earlier API.)"""
    points = task_reference_points(results, metric)
    return points.chance if points is not None else None


def _names(rows: list[dict[str, Any]], key: str) -> str:
    parts = [f"{r['name']} ({fmt(r.get(key), 3)})" for r in rows]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _top_letter_rows(rows: list[dict[str, Any]], letters_key: str, order_key: str, hib: bool) -> list[dict[str, Any]]:
    ranked = sorted(rows, key=lambda r: (num(r.get(order_key)) is None, -(num(r.get(order_key)) or 0) if hib else (num(r.get(order_key)) or 0)))
    top = str(ranked[0].get(letters_key) or "")
    if not top:
        return []
    return [r for r in ranked if set(str(r.get(letters_key) or "")) & set(top[:1])]


def retrieval_metric(name: str) -> bool:
    """Whether `name` is an image-text retrieval metric (recall@k)."""
    from mmbench.evaluation.metrics import METRICS

    info = METRICS.get(name)
    return info is not None and info.target_type == "retrieval"


def clean_sentence(rows: list[dict[str, Any]]) -> str:
    primary, hib = rows[0]["primary_metric"], bool(rows[0]["higher_is_better"])
    if rows[0].get("letters") is None:
        if retrieval_metric(primary):
            why = ("the retrieval entries store no comparable per-query records (entries made before they existed), so "
                   "the rows are not tested for significance")
        else:
            why = "the entries store no comparable per-item records, so no difference is tested"
        return f"Clean {primary}: {rows[0]['name']} ranks first ({fmt(rows[0].get(primary), 3)}); {why}."
    if len(rows) == 1:
        return f"Clean {primary}: {rows[0]['name']} ({fmt(rows[0].get(primary), 3)}) is the only entry: no pair to test."
    win = _top_letter_rows(rows, "letters", primary, hib)
    if len(win) == 1:
        return (f"Clean {primary}: {win[0]['name']} ({fmt(win[0].get(primary), 3)}) is the clean winner, "
                "significantly better than every other entry.")
    return (f"Clean {primary}: {len(win)} entries share the top letter and are not separated by the evidence: "
            f"{_names(win, primary)}.")


def robustness_sentence(rows: list[dict[str, Any]]) -> str | None:
    primary, hib = rows[0]["primary_metric"], bool(rows[0]["higher_is_better"])
    have = [r for r in rows if num(r.get("relative_robustness")) is not None]
    if not have:
        return None
    key = "relative_robustness"
    what = f"relative robustness (mean {primary} over missing rates {rate_range(rows)})"
    if any(r.get("robustness_letters") is not None for r in have):
        win = _top_letter_rows(have, "robustness_letters", key, hib)
        how = "share the top letter (same two-level test)"
        alone = "is the most robust, significantly ahead of every other entry (same two-level test)"
    else:
        best = max(have, key=lambda r: r[key]) if hib else min(have, key=lambda r: r[key])
        spread = num(best.get(f"{key}_std")) or 0.0
        win = [r for r in have if abs(r[key] - best[key]) <= spread]
        win.sort(key=lambda r: -r[key] if hib else r[key])
        how = "are within one seed standard deviation of the best (no per-item test)"
        alone = "is the most robust, more than one seed standard deviation ahead of the next (no per-item test)"
    clean = rows[0]
    if len(win) == 1:
        text = f"Under missing modalities, by {what}: {_names(win, key)} {alone}."
    else:
        text = f"Under missing modalities, by {what}: {_names(win, key)} {how}."
    if clean["name"] not in {r["name"] for r in win} and num(clean.get(key)) is not None:
        order = sorted(have, key=lambda r: -r[key] if hib else r[key])
        place = [r["name"] for r in order].index(clean["name"]) + 1
        text += (f" The clean leader {clean['name']} is not among them: its relative robustness "
                 f"{fmt(clean[key], 3)} ranks {place} of {len(order)}.")
    return text


def chance_phrase(metric: str, chance: float) -> str:
    """How every "near chance" sentence names its reference point, with its value."""
    return f"chance = a uniform guess, {metric} {fmt(chance, 3)}"


def collapse_sentences(rows: list[dict[str, Any]], chance: Any) -> list[str]:
    """``chance``: the uniform guess's value, or a ReferencePoints (its ``chance`` is used)."""
    primary, hib = rows[0]["primary_metric"], bool(rows[0]["higher_is_better"])
    chance = getattr(chance, "chance", chance)
    drops = sorted({c for r in rows for c in r.get("conditions", {}) if c.startswith("drop:")})
    if chance is None or not drops:
        return []
    out = []
    sign = 1.0 if hib else -1.0
    for c in drops:
        modality = c[5:]
        fallen = []
        for r in rows:
            clean, under = num(r.get(primary)), num(r.get("conditions", {}).get(c))
            if clean is None or under is None or str(r["name"]) == f"unimodal-{modality}":
                continue
            margin = sign * (clean - chance)
            if margin > 0 and sign * (under - chance) < NEAR_CHANCE * margin:
                fallen.append({"name": r["name"], "v": under})
        if fallen:
            verb = "falls" if len(fallen) == 1 else "fall"
            out.append(f"Without {modality}, {_names(fallen, 'v')} {verb} to near chance ({chance_phrase(primary, chance)}; "
                       f"near: keeping under {NEAR_CHANCE:.0%} of the clean margin over chance).")
        else:
            out.append(f"Without {modality}, no entry falls to near chance ({chance_phrase(primary, chance)}).")
    return out


def fusion_sentence(rows: list[dict[str, Any]]) -> str:
    primary = rows[0]["primary_metric"]
    uni = [r for r in rows if is_unimodal(r)]
    fusions = [r for r in rows if not is_unimodal(r)]
    if not uni or not fusions:
        return f"No {'single-modality' if not uni else 'fusion'} entries on this task: whether fusion helps is not measured."
    best = uni[0]  # rows are in rank order
    if best.get("letters") is None:
        return (f"The best single modality is {best['name']} ({fmt(best.get(primary), 3)}); without per-item records "
                "no fusion is tested against it.")
    wins = [f for f in fusions if (t := (f.get("pairwise") or {}).get(best["name"])) and t.get("significant")
            and num(t.get("diff")) is not None and t["diff"] > 0]
    if not wins:
        return (f"No fusion beats the best single modality, {best['name']} ({fmt(best.get(primary), 3)}), by a "
                "significant margin (Holm-adjusted p < 0.05).")
    parts = [f"{f['name']} ({(f['pairwise'][best['name']]['diff']):+.3f})" for f in wins]
    return (f"{len(wins)} of {len(fusions)} fusions beat the best single modality, {best['name']} "
            f"({fmt(best.get(primary), 3)}), significantly (Holm-adjusted p < 0.05): {', '.join(parts)}.")


TIE_RULE = ("Tie rule: recall@k is the expected value under uniformly random tie-breaking (a query with g candidates "
            "above its best relevant one and t tied with it, r of them relevant, counts 1 - C(t-r, m)/C(t, m) with "
            "m = min(max(k - g, 0), t); with one relevant, m/t); copies of a vector always tie.")


def retrieval_sentences(rows: list[dict[str, Any]], groups: dict[str, list[Any]]) -> list[str]:
    """For a retrieval task: the tie rule, how many gallery images and captions have their
    modality missing (they stay in the metric), and the top row's recall over the queries
    whose own item is present, labelled so (means over its seeds)."""
    if not rows or not retrieval_metric(rows[0]["primary_metric"]):
        return []
    out = [TIE_RULE]
    primary = rows[0]["primary_metric"]
    results = groups.get(rows[0]["name"], [])
    extras = [r.extra or {} for r in results]
    missing = next((e["missing"] for e in extras if e.get("missing")), None)
    if missing is not None:
        images, captions = extras[0].get("images"), extras[0].get("captions")
        of_i = f" of {images:,}" if isinstance(images, int) else ""
        of_c = f" of {captions:,}" if isinstance(captions, int) else ""
        out.append(f"Missing modality: {missing['images']:,}{of_i} gallery images and {missing['captions']:,}{of_c} "
                   "captions have it missing (they stay in the metric: a vector shared by many earns what a random order "
                   "of its copies gives).")
    present = [e["present_only"] for e in extras if (e.get("present_only") or {}).get("metrics", {}).get(primary) is not None]
    if present:
        value = sum(p["metrics"][primary] for p in present) / len(present)
        out.append(f"Present-only {primary} (not the ranked figure): {rows[0]['name']} scores {fmt(value, 3)} over the "
                   f"{present[0]['captions']:,} captions whose image is present and the {present[0]['images']:,} present "
                   f"images (mean over {len(present)} seed{'s' if len(present) > 1 else ''}).")
    return out


def decision_summary(rows: list[dict[str, Any]], chance: Any, decisions: Any = None) -> list[str]:
    """The task's decision sentences, in order (rows: one task's, in rank order; ``chance``: the
    uniform guess's value or the task's ReferencePoints). With the
    task's decision matrix (:class:`mmbench.board.decisions.TaskDecisions`) every scenario's
    answer comes first, one line each, then what removing each modality does by the tests."""
    from mmbench.board.decisions import change_sentences, scenario_sentence

    if not rows:
        return []
    if decisions is not None and decisions.scenarios:
        out = [scenario_sentence(s) for s in decisions.scenarios] + change_sentences(decisions, rows)
    else:
        out = [clean_sentence(rows)]
    rob = robustness_sentence(rows)
    if rob:
        out.append(rob)
    out += collapse_sentences(rows, chance)
    out.append(fusion_sentence(rows))
    return out
