"""Summaries of per-condition metrics that every scoring path shares: the robustness summary
and the finiteness check. Pure numpy; imports nothing else of mmbench.evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def shared_rate(condition: str) -> float | None:
    """r of a shared-missing-rate condition ``rate:<r>``; None for any other (IMR included)."""
    if not condition.startswith("rate:"):
        return None
    try:
        return float(condition.split(":", 1)[1])
    except ValueError:
        return None


def robustness_summary(per_condition: dict[str, dict[str, float]], metric: str, higher_is_better: bool) -> dict[str, Any]:
    """Drop from clean per condition, and the normalised area under metric-vs-missing-rate
    (trapezoid over the shared rates ``rate:<r>`` evaluated, with clean as rate 0, divided by
    the rate span)."""
    out: dict[str, Any] = {"metric": metric}
    clean = per_condition.get("clean", {}).get(metric)
    if clean is not None:
        sign = 1.0 if higher_is_better else -1.0
        out["drop_from_clean"] = {c: sign * (clean - v[metric]) for c, v in per_condition.items() if c != "clean"}
        if out["drop_from_clean"]:  # with the clean condition alone the robustness is unknown: absent, not 0
            out["worst_drop"] = max(out["drop_from_clean"].values())
    rates = sorted((r, v[metric]) for c, v in per_condition.items() if (r := shared_rate(c)) is not None)
    if clean is not None and not any(r == 0.0 for r, _ in rates):
        rates = [(0.0, clean)] + rates
    if len(rates) >= 2:
        xs = np.array([r for r, _ in rates])
        ys = np.array([v for _, v in rates])
        out["auc_rate"] = float(np.trapezoid(ys, xs) / (xs[-1] - xs[0]))
        out["rates"] = {f"{r:g}": v for r, v in rates}
    return out


def check_finite_metrics(per_condition: dict[str, dict[str, float]], source: Any) -> None:
    import math

    from mmbench.core.errors import SubmissionError

    for cond, values in per_condition.items():
        for metric, v in values.items():
            if not math.isfinite(v):
                raise SubmissionError(f"metric {metric!r} under {cond!r} is not finite ({v}); predictions out of range?", source)
