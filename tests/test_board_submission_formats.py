"""A CSV and a JSON-lines submission beside the shipped entries of a task: every board form
reads their stored predictions (any submission format), and the per-condition tests include them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import run_main  # noqa: E402

from mmbench.data.masks import condition_masks  # noqa: E402
from mmbench.data.tasks import get_task  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TASK = "synthetic-synergy"


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    from mmbench.data.splits import load_task_split

    spec = get_task(TASK)
    split = load_task_split(spec, "test")
    root = tmp_path_factory.mktemp("formats")
    board = root / "leaderboard"
    shutil.copytree(REPO / "leaderboard" / TASK, board / TASK, ignore=shutil.ignore_patterns("history"))
    y = split.targets.numpy()
    rows = []
    for c in spec.conditions():  # right where both modalities are kept, else class 0
        masks = condition_masks(c, split.ids, split.modality_names, spec.missing.seed, split.name)
        rows.append(pd.DataFrame({"id": split.ids, "condition": c.name,
                                  "prediction": np.where(masks["m0"] & masks["m1"], y, 0)}))
    df = pd.concat(rows, ignore_index=True)
    df.to_csv(root / "preds.csv", index=False)
    df.to_json(root / "preds.jsonl", orient="records", lines=True)
    return board


def test_csv_and_jsonl_submissions_render_on_every_board_form(board, monkeypatch, capsys):
    for name, file in (("my-csv", "preds.csv"), ("my-jsonl", "preds.jsonl")):
        rc, out, err = run_main(["evaluate", TASK, "--predictions", board.parent / file, "--name", name,
                                 "--leaderboard", board], monkeypatch, capsys)
        assert rc == 0, err
    assert (board / TASK / "predictions" / "my-csv.csv").is_file()
    assert (board / TASK / "predictions" / "my-jsonl.jsonl").is_file()
    rc, html, err = run_main(["leaderboard", TASK, "--dir", board, "--format", "html"], monkeypatch, capsys)
    assert rc == 0, err
    assert "my-csv" in html and "my-jsonl" in html
    rc, out, err = run_main(["leaderboard", "site", "--dir", board], monkeypatch, capsys)
    assert rc == 0, err
    rc, out, err = run_main(["leaderboard", "site", "--dir", board, "--check"], monkeypatch, capsys)
    assert rc == 0, err


def test_stored_predictions_read_alike_in_every_format(board):
    from mmbench.board.entries import load_entries
    from mmbench.board.stored import condition_predictions

    entries = {e.name: e for e in load_entries(board, TASK)}
    a = condition_predictions(board, entries["my-csv"])
    b = condition_predictions(board, entries["my-jsonl"])
    assert a is not None and set(a) == {c.name for c in get_task(TASK).conditions()} | {"clean"}
    for cond in a:
        np.testing.assert_array_equal(a[cond], b[cond])
    # the clean condition equals the entry's own per-item record
    np.testing.assert_array_equal(a["clean"], entries["my-csv"].extra["test_items"]["predictions"])
