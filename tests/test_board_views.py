"""The decision summary on constructed boards (a clean winner that is not the robustness winner,
a fusion tied with its best single modality, a collapse to chance), the robustness verdicts
against the stored metrics, and the report and the task page agreeing on every number both show."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mmbench.board.entries import load_entries, rank, write_entry
from mmbench.board.publish import predictions_parquet
from mmbench.board.summary import chance_level, decision_summary
from mmbench.evaluation.results import make_result
from mmbench.evaluation.significance import item_record

TASK = "toy-av"
HW = {"platform": "Linux", "python": "3.11", "cpu": "x86_64", "cpu_count": 2, "torch": "2", "device": "cpu"}
N = 400
RATES = (0.1, 0.5, 0.9)
rng0 = np.random.default_rng(0)
Y = rng0.integers(0, 4, N)
IDS = [f"item-{i:04d}" for i in range(N)]


def _preds(acc: float, rng: np.random.Generator) -> np.ndarray:
    wrong = rng.random(N) >= acc
    return np.where(wrong, (Y + rng.integers(1, 4, N)) % 4, Y)


def _entry(board: Path, name: str, seed: int, clean: float, rates: dict[float, float], drops: dict[str, float | None],
           params: int):
    """One seed of an entry: predictions drawn at the given accuracies (None: a constant class,
    chance), its metrics computed from them, its predictions file stored under the board."""
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    preds = {"clean": _preds(clean, rng)}
    preds |= {f"rate:{r:g}": _preds(a, rng) for r, a in rates.items()}
    preds |= {f"drop:{m}": (np.full(N, int(np.bincount(Y).argmax())) if a is None else _preds(a, rng)) for m, a in drops.items()}
    metrics = {c: {"accuracy": float(np.mean(p == Y))} for c, p in preds.items()}
    rel = f"{TASK}/predictions/{name}__seed{seed}.parquet"
    (board / rel).parent.mkdir(parents=True, exist_ok=True)
    (board / rel).write_bytes(predictions_parquet(IDS, {c: p for c, p in preds.items() if c != "clean"} | {"clean": preds["clean"]}))
    fusion = "unimodal" if name.startswith("unimodal-") else name
    r = make_result(task=TASK, name=name, kind="baseline", fusion=fusion, seed=seed, primary_metric="accuracy",
                    higher_is_better=True, metrics=metrics, robustness={}, dataset_fingerprint="ab" * 32, hardware=HW,
                    efficiency={"params": params, "flops_per_sample": 2.0 * params, "latency_ms_per_batch": 1.0 + seed,
                                "batch_size": 64, "device": "cpu", "precision": "float32"},
                    created="2025-01-01T00:00:00+00:00", predictions_file=rel,
                    extra={"test_items": item_record(IDS, Y, preds["clean"], "multiclass", 4)})
    write_entry(board, r)


STEEP = {0.1: 0.7, 0.5: 0.4, 0.9: 0.27}  # loses most of its accuracy as inputs go missing
GENTLE = {0.1: 0.8, 0.5: 0.7, 0.9: 0.6}


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("board")
    for seed in (0, 1):
        # the clean winner collapses without audio and degrades fast; mult is the robust one
        _entry(root, "lowrank", seed, 0.95, STEEP, {"audio": None, "image": 0.6}, 5000)
        _entry(root, "mult", seed, 0.82, GENTLE, {"audio": 0.7, "image": 0.65}, 6000)
        _entry(root, "late", seed, 0.80, {0.1: 0.76, 0.5: 0.6, 0.9: 0.45}, {"audio": 0.6, "image": 0.6}, 4000)
        _entry(root, "unimodal-image", seed, 0.80, {0.1: 0.73, 0.5: 0.5, 0.9: 0.3}, {"audio": 0.8, "image": None}, 1500)
    pub = root / "published"
    pub.mkdir()
    (pub / f"{TASK}.yaml").write_text(f"task: {TASK}\nsource: a paper\nrows:\n"
                                      "  - {name: LMF, fusion: lowrank, metrics: {accuracy: 0.91}}\n"
                                      "  - {name: MulT, fusion: mult, metrics: {accuracy: 0.88}}\n")
    return root


@pytest.fixture(scope="module")
def rows(board):
    return rank(load_entries(board), n_resamples=1000)


def test_clean_winner_is_not_the_robustness_winner(board, rows):
    from mmbench.board.robustness import annotate_robustness_verdicts, robustness_verdicts

    entries = load_entries(board)
    sig = robustness_verdicts(TASK, rows, entries, board, n_resamples=1000)
    # the verdicts' point values are the stored relative and effective robustness, recomputed from the per-item predictions
    for key in ("relative", "effective"):
        for r in sig[key].rows:
            stored = next(x for x in rows if x["name"] == r.name)[f"{key}_robustness"]
            assert r.value == pytest.approx(stored, abs=1e-9), (key, r.name)
    assert [r.name for r in sig["effective"].rows][0] == "mult"  # loses least from its start
    annotate_robustness_verdicts(rows, sig)
    by = {r["name"]: r for r in rows}
    assert by["lowrank"]["letters"] == "a" and "a" not in by["mult"]["letters"]
    assert by["mult"]["robustness_letters"].startswith("a") and "a" not in by["lowrank"]["robustness_letters"]
    summary = decision_summary(rows, chance_level(entries, "accuracy", True))
    assert summary[0].startswith("Clean accuracy: lowrank (0.9") and "is the clean winner" in summary[0]
    assert summary[1].startswith("Under missing modalities, by relative robustness (mean accuracy over missing rates "
                                 "0 (clean) to 0.9): mult (0.7")
    assert "is the most robust, significantly ahead of every other entry (same two-level test)" in summary[1]
    assert "The clean leader lowrank is not among them" in summary[1]


def test_a_collapse_to_chance_is_named_per_modality(board, rows):
    entries = load_entries(board)
    chance = chance_level(entries, "accuracy", True)
    assert chance == pytest.approx(1 / 4)  # a uniform guess over the 4 classes, not the test majority
    summary = decision_summary(rows, chance)
    audio = next(s for s in summary if s.startswith("Without audio"))
    assert "chance = a uniform guess, accuracy 0.250" in audio  # the sentence names its reference point
    image = next(s for s in summary if s.startswith("Without image"))
    assert "lowrank" in audio and "falls to near chance" in audio and "mult" not in audio
    # the image-only entry has nothing left without images: it is left out, not reported as a collapse
    assert image.startswith("Without image, no entry falls to near chance")


def test_a_fusion_tied_with_its_best_modality_is_not_called_better(board, rows):
    last = decision_summary(rows, None)[-1]
    # lowrank beats image-only clearly; mult and late (0.82, 0.80 vs 0.80) do not
    assert last.startswith("1 of 3 fusions beat the best single modality, unimodal-image")
    assert "lowrank (+0.1" in last and "mult" not in last and "late" not in last
    tied = rank([e for e in load_entries(board) if e.name in ("late", "unimodal-image")], n_resamples=500)
    assert decision_summary(tied, None)[-1].startswith("No fusion beats the best single modality, unimodal-image")


class _Tables(HTMLParser):
    """{table id: rows of cell texts} and the decision summary's items."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.summary: list[str] = []
        self._table = self._cell = self._row = None
        self._li = None
        self._in_summary = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "div" and a.get("class") == "summary":
            self._in_summary = True
        elif tag == "li" and self._in_summary:
            self._li = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "li" and self._li is not None:
            self.summary.append("".join(self._li).strip())
            self._li = None
        elif tag == "div":
            self._in_summary = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._li is not None:
            self._li.append(data)


def test_report_and_task_page_agree_on_every_shared_number(board):
    from mmbench.board.report import collect_results, render_report_html
    from mmbench.board.site import render_site

    page = _Tables()
    page.feed(render_site(board)[f"{TASK}.html"])
    results, files, skipped = collect_results([board])
    report = _Tables()
    report.feed(render_report_html(results, sources=files, skipped=skipped))
    shared = sorted(set(page.tables) & set(report.tables))
    assert {f"{k}-{TASK}" for k in ("entries", "robustness", "efficiency", "conditions", "published")} <= set(shared)
    for tid in shared:
        assert page.tables[tid] == report.tables[tid], tid
    assert page.summary == report.summary and len(page.summary) >= 4
    # the robustness table carries the two-level letters in both, and the published counterpart's measured value
    head = page.tables[f"robustness-{TASK}"][0]
    assert "letters" in head and "relative robustness" in head
    pub = {r[0]: r for r in page.tables[f"published-{TASK}"][1:]}
    measured = next(r for r in page.tables[f"entries-{TASK}"][1:] if r[1] == "lowrank")
    assert pub["LMF"][3] == "lowrank" and pub["LMF"][4] == measured[4].split(" ± ")[0]
    # efficiency is the median over seeds, with the device and precision beside it
    eff = next(r for r in page.tables[f"efficiency-{TASK}"][1:] if r[1] == "lowrank")
    assert eff[5] == "1.50 (1.00-2.00)" and eff[6] == "CPU, 2 cores" and eff[7] == "float32"


def test_shipped_pages_show_no_raw_python_values():
    import re

    board = Path(__file__).resolve().parents[1] / "leaderboard"
    for page in sorted(board.glob("*.html")):
        parsed = _Tables()
        parsed.feed(page.read_text(encoding="utf-8"))
        cells = [c for rows in parsed.tables.values() for row in rows for c in row] + parsed.summary
        assert cells, page
        for c in cells:
            assert c not in ("True", "False", "None", "nan"), (page.name, c)
            assert "{'" not in c and not re.search(r"\d\.\d{7,}|\de-\d", c), (page.name, c)


def _row(name, clean, rr, rr_std=0.01, **kw):
    return {"task": "t", "name": name, "fusion": "unimodal" if name.startswith("unimodal-") else name, "seeds": 3,
            "primary_metric": "accuracy", "higher_is_better": True, "accuracy": clean, "relative_robustness": rr,
            "relative_robustness_std": rr_std, "conditions": {"rate:0.5": rr}, "letters": None, **kw}


def test_without_verdicts_the_sentences_say_so_and_use_the_seed_spread():
    rows = [_row("a", 0.9, 0.50), _row("b", 0.8, 0.70, 0.02), _row("c", 0.7, 0.69)]
    summary = decision_summary(rows, None)
    assert "no difference is tested" in summary[0]
    # b is best; c is within b's seed spread (0.02); a is the clean leader, ranked last on robustness
    assert "b (0.700) and c (0.690) are within one seed standard deviation of the best (no per-item test)" in summary[1]
    assert "The clean leader a is not among them: its relative robustness 0.500 ranks 3 of 3." in summary[1]
    assert summary[-1] == "No single-modality entries on this task: whether fusion helps is not measured."


def test_efficiency_states_where_latencies_were_measured():
    from mmbench.board.efficiency import devices_note

    same = [{"latency_ms_per_batch": 1.0, "device": "CPU, 2 cores", "precision": "float32", "batch_size": "64"}] * 2
    assert devices_note(same).startswith("All latencies on this task were measured on CPU, 2 cores; precision float32")
    mixed = same + [{"latency_ms_per_batch": 2.0, "device": "NVIDIA H200 (cuda)", "precision": "unknown", "batch_size": "64"}]
    note = devices_note(mixed)
    assert "2 different devices" in note and "compare them only within a device" in note
    # a latency the FLOPs do not explain is named, with its range over seeds
    rows = [{"name": n, "latency_ms_per_batch": lat, "flops_per_sample": fl, "device": "GPU", "precision": "float32",
             "batch_size": "64", "latency_ms_range": [lat - 1, lat + 1], "efficiency_seeds": 5}
            for n, lat, fl in (("a", 4.0, 10.0), ("b", 5.0, 12.0), ("c", 4.5, 11.0), ("slow", 20.0, 3.0), ("big", 30.0, 99.0))]
    note = devices_note(rows)
    assert "slow (20.00 ms, 19.00-21.00 ms over its 5 seeds; task median 5.00 ms)" in note and "big" not in note
