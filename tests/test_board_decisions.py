"""The decision matrix, the cross-task ranking and the readable board: top groups agree with the
letters of their scenario on the shipped board; the cross-task mean rank and win rate against a
hand computation; no figure title clipped or wrapped; piped terminal output keeps every entry
name and number on one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import run_main  # noqa: E402

from mmbench.board.across import across_tasks, normalised_ranks  # noqa: E402
from mmbench.board.decisions import task_decisions  # noqa: E402
from mmbench.board.entries import load_entries, rank, render  # noqa: E402

BOARD = Path(__file__).resolve().parent.parent / "leaderboard"


@pytest.fixture(scope="module")
def shipped():
    entries = load_entries(BOARD, "avmnist") + load_entries(BOARD, "mosi")
    return entries, rank(entries, n_resamples=500)


@pytest.mark.parametrize("task", ["avmnist", "mosi"])
def test_top_group_is_the_entries_sharing_the_top_letter_of_each_scenario(shipped, task):
    entries, rows = shipped
    task_rows = [r for r in rows if r["task"] == task]
    dec = task_decisions(task, task_rows, [e for e in entries if e.task == task], BOARD, n_resamples=500)
    assert dec is not None and dec.scenarios[0].condition == "clean"
    conds = {s.condition for s in dec.scenarios}
    assert any(c.startswith("drop:") for c in conds) and any(c.startswith("rate:") for c in conds)
    for s in dec.scenarios:
        letters = {r.name: r.letters for r in s.verdicts.rows}
        top = s.verdicts.rows[0].name
        assert set(s.top_group) == {n for n, l in letters.items() if set(l) & set(letters[top])}, s.condition
        # the top entry is the best mean of the scenario, and the means are the stored metrics
        assert s.stats[top][0] == max(m for m, _, _ in s.stats.values())
        for e in entries:
            if e.task == task and s.condition in e.metrics:
                assert s.stats[e.name][2] == 5
    js = dec.to_json()
    assert [d["scenario"] for d in js][0] == "clean" and all({"letters", "mean", "std"} <= set(d["rows"][0]) for d in js)
    # the condition-vs-clean tests are one family over the task: Holm never lowers a p-value
    assert all(c.p_holm >= c.p for c in dec.changes) and len({c.condition for c in dec.changes}) == len(conds) - 1


def _row(task, name, v, hib=True):
    return {"task": task, "name": name, "primary_metric": "m", "higher_is_better": hib, "m": v}


def test_cross_task_mean_rank_and_win_rate_by_hand():
    rows = [_row("A", "x", 0.9), _row("A", "y", 0.8), _row("A", "z", 0.7),
            _row("B", "x", 0.5, False), _row("B", "y", 0.6, False),  # lower is better on B: x wins
            _row("C", "x", 0.3), _row("C", "y", 0.3), _row("C", "z", 0.1)]  # a tie on C
    out = {r.name: r for r in across_tasks(rows, [], n_resamples=200)}
    # A: x 0, y 1/2, z 1; B: x 0, y 1; C: x and y share rank 1.5 -> 1/4, z 1
    assert out["x"].mean_rank == pytest.approx((0 + 0 + 0.25) / 3)
    assert out["y"].mean_rank == pytest.approx((0.5 + 1 + 0.25) / 3)
    assert out["z"].mean_rank == pytest.approx((1 + 1) / 2)
    # x: beats y, z on A, y on B, z on C, ties y on C: 4.5 of 5
    assert out["x"].win_rate == pytest.approx(4.5 / 5) and out["x"].pairs == 5
    assert out["z"].win_rate == 0.0 and out["z"].tasks == ("A", "C")
    lo, hi = out["y"].mean_rank_interval
    assert 0.25 <= lo <= out["y"].mean_rank <= hi <= 1.0
    assert [r.name for r in across_tasks(rows, [], n_resamples=200)] == ["x", "y", "z"]
    assert list(normalised_ranks([3.0, 1.0, 2.0], True)) == [0.0, 1.0, 0.5]


def test_no_figure_title_is_clipped_or_wrapped(shipped):
    from mmbench.board.view import task_view

    entries, rows = shipped
    for task in ("avmnist", "mosi"):
        view = task_view(task, [r for r in rows if r["task"] == task], [e for e in entries if e.task == task], [], BOARD)
        figs = view["figures_main"] + view["heatmap"] + view["robust_figures"] + view["eff_figures"]
        assert {f.name.split("-", 1)[1] for f in figs} >= {"bars", "pairwise", "tradeoff", "robustness", "drop"}
        for f in figs:
            assert f.outside == (), (f.name, f.outside)


def test_piped_leaderboard_keeps_every_name_and_number_on_one_line(shipped, monkeypatch, capsys):
    rc, out, err = run_main(["leaderboard", "mosi", "--dir", BOARD], monkeypatch, capsys)
    assert rc == 0, err
    _, rows = shipped
    lines = out.splitlines()
    for r in (r for r in rows if r["task"] == "mosi"):
        mean = f"{r[r['primary_metric']]:.4f} ± {r[r['primary_metric'] + '_std']:.4f}"
        assert any(f"│ {r['name']} " in ln and mean in ln for ln in lines), r["name"]
    assert "auc_rate" not in out and "worst_drop" not in out and "relative robustness" in out


def test_a_narrow_terminal_leaves_columns_out_never_wraps(shipped):
    _, rows = shipped
    mosi = [r for r in rows if r["task"] == "mosi"]
    text = render(mosi, "table", width=100)
    table = [ln for ln in text.splitlines() if ln[:1] in "┌│├└"]
    assert table and all(len(ln) <= 100 for ln in table)
    for r in mosi:
        assert any(f"│ {r['name']} " in ln for ln in table)
    assert "left out to fit 100 columns" in text


def test_json_carries_decisions_and_across_tasks(monkeypatch, capsys):
    import json

    rc, out, err = run_main(["leaderboard", "--dir", BOARD, "--format", "json"], monkeypatch, capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert {"entries", "decisions", "across_tasks"} <= set(doc)
    assert {"name", "tasks", "mean_rank", "mean_rank_interval", "win_rate"} <= set(doc["across_tasks"][0])
    assert {"scenario", "top_group", "rows"} <= set(doc["decisions"][0])
    assert all("auc_rate" not in r and "worst_drop" not in r for r in doc["entries"])
