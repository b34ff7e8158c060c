"""Efficiency of an entry, stated once and one way: the median over its seeds of what each
seed's evaluation measured (parameters and FLOPs of the modules the model uses; latency = the
median of timed batches after one warm-up call, see
:func:`mmbench.evaluation.evaluator.measure_efficiency`), with the device, precision and batch
size it was timed at. Fields an entry does not record are shown as unknown, never guessed.
"""

from __future__ import annotations

import math
from statistics import median
from typing import Any

KEYS = ("params", "flops_per_sample", "latency_ms_per_batch")
UNKNOWN = "unknown"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def device_label(result: Any) -> str:
    """Where a result was timed, from its efficiency record and hardware: ``NVIDIA H200 (cuda)``,
    ``CPU, 2 cores``; ``unknown`` when the entry does not say."""
    eff = result.efficiency or {}
    dev = eff.get("device")
    if not isinstance(dev, str) or not dev:
        return UNKNOWN
    hw = result.hardware or {}
    kind = dev.split(":", 1)[0]
    if kind == "cuda":
        gpu = hw.get("gpu")
        return f"{gpu} (cuda)" if isinstance(gpu, str) and gpu else "cuda GPU (model not recorded)"
    if kind == "cpu":
        cores = hw.get("cpu_count")
        return f"CPU, {cores} cores" if isinstance(cores, int) and not isinstance(cores, bool) else "CPU"
    return kind


def _one(values: list[Any]) -> Any:
    """The common value of a field over seeds, ``unknown`` when absent, ``mixed: a, b`` when not one."""
    kept = [v for v in values if v is not None and v != ""]
    vals = list(dict.fromkeys(str(v) for v in kept))
    if not vals:
        return UNKNOWN
    return kept[0] if len(vals) == 1 else "mixed: " + ", ".join(vals)  # one value keeps its type (batch size: int)


def efficiency_fields(results: list[Any]) -> dict[str, Any]:
    """One entry's efficiency over its seeds' results: the median of each measured number,
    ``efficiency_seeds`` (how many seeds measured latency), ``device``, ``precision`` and
    ``batch_size`` (unknown where not recorded)."""
    out: dict[str, Any] = {}
    for key in KEYS:
        vals = [v for r in results if (v := _num((r.efficiency or {}).get(key))) is not None]
        if vals:
            m = median(vals)
            out[key] = int(round(m)) if key == "params" else m
    lat = [v for r in results if (v := _num((r.efficiency or {}).get("latency_ms_per_batch"))) is not None]
    out["efficiency_seeds"] = len(lat)
    if len(lat) > 1:
        out["latency_ms_range"] = [min(lat), max(lat)]
    out["device"] = _one([device_label(r) if r.efficiency else None for r in results])
    out["precision"] = _one([(r.efficiency or {}).get("precision") for r in results])
    out["batch_size"] = _one([(r.efficiency or {}).get("batch_size") for r in results])
    return out


def annotate_efficiency(rows: list[dict[str, Any]], entries: list[Any]) -> list[dict[str, Any]]:
    """Set every :func:`mmbench.board.entries.rank` row's efficiency fields from all its seeds
    (in place, and returned)."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for e in entries:
        groups.setdefault((e.task, e.name), []).append(e)
    for r in rows:
        for key in KEYS:
            r.pop(key, None)
        r.update(efficiency_fields(groups[(r["task"], r["name"])]))
    return rows


def slow_entries_note(rows: list[dict[str, Any]], factor: float = 3.0) -> str:
    """One sentence naming the entries whose latency is over ``factor`` times the task's median
    on the same device while their FLOPs are at most the median: a cost the FLOPs do not
    explain (the range over seeds says whether it is one slow seed or every seed)."""
    out = []
    for dev in sorted({str(r.get("device")) for r in rows}):
        same = [r for r in rows if str(r.get("device")) == dev and _num(r.get("latency_ms_per_batch")) is not None
                and _num(r.get("flops_per_sample")) is not None]
        if len(same) < 3:
            continue
        lat = median(r["latency_ms_per_batch"] for r in same)
        flops = median(r["flops_per_sample"] for r in same)
        for r in same:
            if r["latency_ms_per_batch"] > factor * lat and r["flops_per_sample"] <= flops:
                rng = r.get("latency_ms_range")
                seeds = (f", {rng[0]:.2f}-{rng[1]:.2f} ms over its {r.get('efficiency_seeds')} seeds" if rng else "")
                out.append(f"{r['name']} ({r['latency_ms_per_batch']:.2f} ms{seeds}; task median {lat:.2f} ms)")
    if not out:
        return ""
    return ("Slower than its FLOPs explain (over " + f"{factor:g}x the median latency on its device with at most the "
            "median FLOPs): " + "; ".join(out) + ". The entries do not record why; compare such latencies with care.")


def devices_note(rows: list[dict[str, Any]]) -> str:
    """One sentence on where a task's entries were timed: one device, or several (latencies are
    then compared only within a device)."""
    devices = sorted({str(r.get("device", UNKNOWN)) for r in rows if _num(r.get("latency_ms_per_batch")) is not None})
    if not devices:
        return "No latency was measured on this task."
    precisions = sorted({str(r.get("precision", UNKNOWN)) for r in rows})
    batches = sorted({str(r.get("batch_size", UNKNOWN)) for r in rows})
    precision = (f"precision {', '.join(precisions)}" if precisions != [UNKNOWN]
                 else "precision not recorded by these entries (newer entries record it)")
    how = (f"{precision}, batch size {', '.join(batches)}; latency is the median over seeds of each seed's median "
           "timed batch after one warm-up call, timing the model's forward alone (not the isolated worker's round "
           "trip), on one CPU thread on the CPU; parameters and FLOPs count only the modules the model uses.")
    slow = slow_entries_note(rows)
    if len(devices) == 1:
        return f"All latencies on this task were measured on {devices[0]}; {how}" + (f" {slow}" if slow else "")
    return (f"Latencies on this task were measured on {len(devices)} different devices ({'; '.join(devices)}): "
            f"compare them only within a device; {how}" + (f" {slow}" if slow else ""))
