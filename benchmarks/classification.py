"""Case 3: classification metrics on 10,000,000 predictions with 10 classes.

``mmbench.evaluation.metrics.classification_metrics`` (accuracy, macro and weighted precision / recall /
F1 from one ``np.bincount`` confusion matrix) against scikit-learn computing the same dict the
way a user would: ``accuracy_score`` and ``precision_recall_fscore_support`` with
``labels=range(10), zero_division=0`` for ``average="macro"`` and ``"weighted"``. Target: at
least 20x faster, with identical values (``==``).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks import PeakMemory, Row, Settings, timed

NUM_CLASSES = 10


def make_labels(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int64 truth with a skewed class distribution, predictions right ~70% of the time."""
    rng = np.random.default_rng(seed)
    weights = np.linspace(1.0, 3.0, NUM_CLASSES)
    y = rng.choice(NUM_CLASSES, size=n, p=weights / weights.sum())
    wrong = rng.random(n) < 0.3
    p = np.where(wrong, rng.integers(0, NUM_CLASSES, size=n), y)
    return y.astype(np.int64), p.astype(np.int64)


def sklearn_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(NUM_CLASSES))
    out = {"accuracy": float(accuracy_score(y, p))}
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(y, p, labels=labels, average=avg, zero_division=0)
        out |= {f"precision_{avg}": float(pr), f"recall_{avg}": float(rc), f"f1_{avg}": float(f1)}
    return out


def run(st: Settings) -> list[Row]:
    from mmbench.evaluation.metrics import classification_metrics

    n = st.pick(10_000_000, 10_000_000, 100_000)
    y, p = make_labels(n)
    mm_times = []
    with PeakMemory("cpu") as mem:
        got = classification_metrics(y, p, NUM_CLASSES)
    for _ in range(st.pick(7, 5, 2)):
        t0 = time.perf_counter()
        got = classification_metrics(y, p, NUM_CLASSES)
        mm_times.append(time.perf_counter() - t0)
    ref_times = []
    for _ in range(st.pick(2, 1, 1)):
        t, want, _ = timed(lambda: sklearn_metrics(y, p))
        ref_times.append(t)
    t_mm, t_ref = min(mm_times), min(ref_times)
    keys = sorted(want)
    exact = all(got[k] == want[k] for k in keys)
    diff = max(abs(got[k] - want[k]) for k in keys)
    return [Row(
        "3", f"classification metrics, {n:,} predictions x {NUM_CLASSES} classes", t_mm, t_ref, "scikit-learn", "s",
        ">= 20x, identical values", (t_ref / t_mm >= 20.0) if not st.tiny else None, exact, mem.peak_mb,
        f"max |difference| {diff:.1e}; " + ", ".join(f"{k} {got[k]:.4f}" for k in ("accuracy", "f1_macro", "f1_weighted")),
        {"metrics": got, "sklearn": want, "max_abs_diff": diff, "mmbench_times": mm_times, "sklearn_times": ref_times},
    )]
