"""Docs tables generated from a board (mmbench.board.doctables): cells against hand-computed
means and spreads, the letters, and clear errors for a bad block."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from mmbench.board.doctables import doc_table_differences, render_doc_tables, write_doc_tables
from mmbench.board.entries import write_entry
from mmbench.core.errors import DataError
from mmbench.evaluation.results import make_result
from mmbench.evaluation.significance import item_record


def _board(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    accs = {"good": [0.95, 0.93, 0.94], "bad": [0.40, 0.45, 0.42]}
    for name, per_seed in accs.items():
        for seed, a in enumerate(per_seed):
            pred = np.where(rng.random(400) < a, y, (y + 1) % 3)
            acc = float(np.mean(pred == y))
            write_entry(tmp_path, make_result(
                task="toy", name=name, kind="predictions", seed=seed, primary_metric="accuracy", higher_is_better=True,
                metrics={"clean": {"accuracy": acc, "f1_macro": acc / 2}, "drop:a": {"accuracy": acc / 4}},
                dataset_fingerprint="f", efficiency={"params": 12345},
                extra={"test_items": item_record([f"i{k}" for k in range(400)], y, pred, "multiclass", 3)}))
    return tmp_path


def test_table_cells_letters_and_caption(tmp_path):
    from mmbench.board.entries import load_entries

    board = _board(tmp_path / "board")
    text = "intro\n<!-- board-table toy | acc=accuracy% | F1=f1_macro | seeds=per_seed% | no a=drop:a% | p=params -->\nold\n<!-- /board-table -->\nend\n"
    out = render_doc_tables(text, board)
    lines = out.splitlines()
    assert lines[0] == "intro" and lines[-1] == "end" and "old" not in out
    assert lines[2] == "| entry | letters | rank range | acc | F1 | seeds | no a | p |"
    good = sorted((e for e in load_entries(board) if e.name == "good"), key=lambda e: e.seed)
    accs = [e.metrics["clean"]["accuracy"] for e in good]
    mean, sd = statistics.mean(accs), statistics.stdev(accs)
    expect = (f"| good | a | 1 | {100 * mean:.1f} ± {100 * sd:.1f} | {mean / 2:.3f} ± {sd / 2:.3f} | "
              + ", ".join(f"{100 * a:.1f}" for a in accs) + f" | {25 * mean:.1f} ± {25 * sd:.1f} | 12,345 |")
    assert lines[4] == expect
    assert lines[5].startswith("| bad | b | 2 |") and "Two-level paired bootstrap of accuracy" in out
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    assert doc_table_differences(doc, board) == ["doc.md: board-table toy | acc=accuracy% | F1=f1_macro | seeds=per_seed% | "
                                                 "no a=drop:a% | p=params differs from the board"]
    assert write_doc_tables(doc, board) and doc_table_differences(doc, board) == []
    assert not write_doc_tables(doc, board)  # unchanged the second time


def test_bad_blocks_are_clear_errors(tmp_path):
    board = _board(tmp_path / "board")
    with pytest.raises(DataError, match="not label=key"):
        render_doc_tables("<!-- board-table toy | accuracy -->\n<!-- /board-table -->\n", board)
    with pytest.raises(DataError, match="no entries of that task"):
        render_doc_tables("<!-- board-table nope | a=accuracy -->\n<!-- /board-table -->\n", board)
    with pytest.raises(DataError, match="has no 'recall'"):
        render_doc_tables("<!-- board-table toy | r=recall -->\n<!-- /board-table -->\n", board)


def test_docs_command_refuses_missing_inputs_in_one_line(tmp_path, monkeypatch, capsys):
    from tests._cli import run_main

    board = _board(tmp_path / "board")
    rc, out, err = run_main(["leaderboard", "docs", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and "needs the Markdown file" in err and len(err.strip().splitlines()) == 1
    rc, out, err = run_main(["leaderboard", "docs", tmp_path / "nope.md", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and "nope.md" in err and "not found" in err and len(err.strip().splitlines()) == 1
