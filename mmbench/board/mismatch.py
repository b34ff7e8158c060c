"""The train/test mismatch matrix: fusions trained with modality dropout ``p_train`` and each
tested at every missing rate ``p_test`` (``mmbench reproduce --suite mismatch``).

MuteBench (Zheng et al. 2026, arXiv 2605.15235) finds that curriculum modality dropout "protects
reliably only up to the maximum dropout rate used in training". This module measures that claim
on mmbench's fusions: per task and fusion, the matrix of the primary metric (mean ± std over
seeds) with one row per ``p_train`` and one column per ``p_test`` (0 = the clean test set), and
one test per cell above the diagonal's protection: for each ``p_train = a``, each higher
``p_train = b`` and each test rate ``x > a``, H1: the model trained at ``a`` scores worse at ``x``
than the model trained at ``b``.

The test is the board's two-level paired bootstrap (:mod:`mmbench.evaluation.resampling`, as
:mod:`mmbench.evaluation.significance` uses it): each resample draws the test items, by the
task's cluster unit where the entries store one (MOSI's video; shared by every ``p_train`` model,
so the comparison is paired), and each model's seeds. The one-sided p is the normal-theory
p of the observed difference ``d`` (b minus a, in the metric's better direction) with the
two-level bootstrap's variance of the difference, ``p = 1 - Phi(d / sqrt(v))``, ``v`` from
:meth:`~mmbench.evaluation.resampling.TwoLevel.pair_variance` (the seed level averaged exactly,
a control variate at the cluster level): the board's own test, one-sided, so no verdict hangs
on the resampling seed (a counted bootstrap p would).
The p-values of one fusion's matrix are adjusted together with Holm's step-down procedure
(Holm 1979), and a cell "falls below" where ``p_holm < 0.05``. Mismatch entries are named
``<fusion>-pdrop<p_train>`` (e.g. ``concat-pdrop0.3``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from statistics import NormalDist
from pathlib import Path
from typing import Any, Sequence

from mmbench.board.reliance import with_aliases
from mmbench.board.tables import fmt, fmt_pm, mean_std

NAME = re.compile(r"^(?P<fusion>.+)-pdrop(?P<p>[0-9.]+)$")


def mismatch_name(fusion: str, p_train: float) -> str:
    """The result name of a fusion trained with modality dropout ``p_train``."""
    return f"{fusion.replace(':', '-')}-pdrop{p_train:g}"


def parse_name(name: str) -> tuple[str, float] | None:
    """(fusion, p_train) of a mismatch result name; None for any other name."""
    m = NAME.match(name)
    return (m["fusion"], float(m["p"])) if m else None


def condition_of_rate(rate: float) -> str:
    return "clean" if rate == 0 else f"rate:{rate:g}"


@dataclass
class CellTest:
    p_train: float  # the model trained with less dropout
    higher: float  # the model trained with more
    p_test: float
    diff: float  # higher minus p_train, in the metric's better direction
    p: float
    p_holm: float = 1.0

    @property
    def below(self) -> bool:
        return self.p_holm < 0.05


@dataclass
class FusionMatrix:
    task: str
    fusion: str
    metric: str
    higher_is_better: bool
    p_trains: list[float]
    p_tests: list[float]
    mean: dict[tuple[float, float], float]
    std: dict[tuple[float, float], float]
    seeds: dict[float, int]
    tests: list[CellTest] = field(default_factory=list)
    n_resamples: int = 0
    note: str = ""
    unit: str = "item"  # what the first level of the bootstrap draws (the task's cluster unit)

    def below(self, p_train: float, p_test: float) -> list[CellTest]:
        return [t for t in self.tests if t.p_train == p_train and t.p_test == p_test and t.below]

    def finding(self) -> str:
        """One sentence: how many of the cells above each model's p_train fall below a model
        trained with more dropout."""
        if not self.tests:
            return f"{self.fusion}: no test ({self.note or 'needs at least two p_train values with stored predictions'})."
        cells = {(t.p_train, t.p_test) for t in self.tests}
        fallen = {(t.p_train, t.p_test) for t in self.tests if t.below}
        n_below = sum(t.below for t in self.tests)
        return (f"{self.fusion}: at test rates above its p_train, {len(fallen)} of {len(cells)} cells fall significantly "
                f"below a model trained with more dropout ({n_below} of {len(self.tests)} comparisons; two-level "
                f"bootstrap resampled by {self.unit}, B = {self.n_resamples}, Holm over the matrix, p_holm < 0.05).")

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "fusion": self.fusion, "metric": self.metric, "higher_is_better": self.higher_is_better,
                "p_train": self.p_trains, "p_test": self.p_tests, "seeds": {f"{k:g}": v for k, v in self.seeds.items()},
                "mean": [[self.mean.get((a, x)) for x in self.p_tests] for a in self.p_trains],
                "std": [[self.std.get((a, x)) for x in self.p_tests] for a in self.p_trains],
                "tests": [{"p_train": t.p_train, "higher_p_train": t.higher, "p_test": t.p_test, "diff": t.diff,
                           "p": t.p, "p_holm": t.p_holm, "below": t.below} for t in self.tests],
                "n_resamples": self.n_resamples, "unit": self.unit, "finding": self.finding()}


def _rates(metrics: dict[str, dict[str, float]]) -> set[float]:
    from mmbench.board.robustness import rate_of

    return {r for c in metrics if (r := rate_of(c)) is not None}


def mismatch_matrices(results: Sequence[Any], board_dir: str | Path | None = None, n_resamples: int | None = None,
                      seed: int = 0) -> list[FusionMatrix]:
    """One :class:`FusionMatrix` per (task, fusion) among ``results`` named ``<fusion>-pdrop<p>``.
    The tests need the entries' stored per-condition predictions under ``board_dir`` (without
    them the matrix is given without tests)."""
    groups: dict[tuple[str, str], dict[float, list[Any]]] = {}
    for r in results:
        parsed = parse_name(r.name)
        if parsed:
            groups.setdefault((r.task, parsed[0]), {}).setdefault(parsed[1], []).append(r)
    out = []
    for (task, fusion), by_p in sorted(groups.items()):
        first = next(iter(by_p.values()))[0]
        metric, hib = first.primary_metric, bool(first.higher_is_better)
        p_trains = sorted(by_p)
        p_tests = sorted(set.intersection(*(_rates(with_aliases(r)) for rs in by_p.values() for r in rs)))
        mean, std = {}, {}
        for a in p_trains:
            for x in p_tests:
                vals = [with_aliases(r)[condition_of_rate(x)][metric] for r in by_p[a]]
                mean[(a, x)], std[(a, x)] = mean_std(vals)
        fm = FusionMatrix(task, fusion, metric, hib, p_trains, p_tests, mean, std, {a: len(v) for a, v in by_p.items()})
        _test(fm, by_p, board_dir, n_resamples, seed)
        out.append(fm)
    return out


def _test(fm: FusionMatrix, by_p: dict[float, list[Any]], board_dir: Any, n_resamples: int | None, seed: int) -> None:
    from mmbench.board.robustness import seed_condition_arrays
    from mmbench.evaluation.resampling import two_level
    from mmbench.evaluation.significance import DEFAULT_RESAMPLES, comparable_items, holm, task_clusters, task_seed

    pairs = [(a, b, x) for i, a in enumerate(fm.p_trains) for b in fm.p_trains[i + 1:] for x in fm.p_tests if x > a]
    if not pairs:
        fm.note = "fewer than two p_train values"
        return
    if board_dir is None:
        fm.note = "no stored predictions"
        return
    names = {a: mismatch_name(fm.fusion, a) for a in fm.p_trains}
    order = comparable_items(fm.task, {names[a]: rs for a, rs in by_p.items()})
    if order is None:
        fm.note = "the entries do not share their test items"
        return
    conds = [condition_of_rate(x) for x in fm.p_tests if x > 0]
    preds, y = {}, None
    for a in fm.p_trains:
        got = seed_condition_arrays(board_dir, by_p[a], conds, order)
        if got is None:
            fm.note = f"{names[a]} stores no per-condition predictions"
            return
        y, preds[a] = got
    it = by_p[fm.p_trains[0]][0].extra["test_items"]
    clusters, fm.unit = task_clusters(fm.task, order, {names[a]: rs for a, rs in by_p.items()})
    b_count = int(n_resamples or DEFAULT_RESAMPLES)
    sign = 1.0 if fm.higher_is_better else -1.0
    draws = {}
    for x in fm.p_tests:
        c = condition_of_rate(x)
        draws[x] = two_level(y, [preds[a][c] for a in fm.p_trains], fm.metric, it["target_type"], it["num_classes"],
                             b_count, task_seed(f"{fm.task}/{fm.fusion}/{x:g}", seed), clusters=clusters)
    idx = {a: k for k, a in enumerate(fm.p_trains)}
    tests = []
    for a, b, x in pairs:
        point = draws[x].point
        d = sign * float(point[idx[b]] - point[idx[a]])
        var = draws[x].pair_variance(idx[b], idx[a])[0]
        if not math.isfinite(var):
            p = 1.0
        elif var <= 1e-24:
            p = 0.0 if d > 0 else 1.0
        else:
            p = NormalDist().cdf(-d / math.sqrt(var))
        tests.append(CellTest(a, b, x, d, p))
    for t, ph in zip(tests, holm([t.p for t in tests])):
        t.p_holm = float(ph)
    fm.tests, fm.n_resamples = tests, b_count


def matrix_markdown(fm: FusionMatrix) -> str:
    """The p_train x p_test table of one fusion (``▼``: significantly below a model trained with
    more dropout at that test rate) and its finding."""
    head = "| p_train \\ p_test | " + " | ".join(f"{x:g}" for x in fm.p_tests) + " |"
    lines = [f"#### {fm.task}: {fm.fusion} ({fm.metric}, mean ± std over seeds)", "", head,
             "|---|" + "---:|" * len(fm.p_tests)]
    for a in fm.p_trains:
        cells = []
        for x in fm.p_tests:
            below = fm.below(a, x)
            mark = " ▼" + ",".join(f"{t.higher:g}" for t in below) if below else ""
            cells.append(fmt_pm(fm.mean[(a, x)], fm.std[(a, x)] if fm.seeds[a] > 1 else None, 3) + mark)
        lines.append(f"| {a:g} ({fm.seeds[a]} seeds) | " + " | ".join(cells) + " |")
    lines += ["", fm.finding(), ""]
    if fm.tests:
        lines.append("▼b: below the model trained with p_train = b at that test rate (Holm-adjusted p < 0.05).")
        worst = sorted(fm.tests, key=lambda t: t.p_holm)[:5]
        lines.append("Smallest p_holm: " + "; ".join(
            f"p_train {t.p_train:g} vs {t.higher:g} at p_test {t.p_test:g}: {t.diff:+.3f}, p_holm {fmt(t.p_holm, 4)}"
            for t in worst) + ".")
        lines.append("")
    return "\n".join(lines)


def mismatch_report(matrices: Sequence[FusionMatrix], title: str = "Train/test mismatch") -> str:
    """The Markdown report of a mismatch grid: the method in one paragraph, then each matrix."""
    intro = (f"# {title}\n\nEach fusion trained with modality dropout p_train (each modality of a training item dropped "
             "with that probability, one always kept) and tested at every missing rate p_test (0 = clean). MuteBench "
             "(arXiv 2605.15235) finds that modality dropout protects only up to the highest rate used in training; "
             "each cell above a model's p_train is tested against every model trained with more dropout (two-level "
             "paired bootstrap over test items and seeds, one-sided, Holm over the fusion's matrix).\n")
    return intro + "\n" + "\n".join(matrix_markdown(m) for m in matrices)
