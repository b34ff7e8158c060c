"""What a newcomer following README hit (issue 33, items 3-9): templates without the data,
`report` on `train` folders, fast COCO masks and info, names checked once with the nearest
suggestion, output text that says what it shows."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from mmbench.data.tasks import task_names
from tests._cli import run_main


# ---------------------------------------------------------------- item 3: --template without data


@pytest.mark.parametrize("task", task_names())
def test_template_is_written_for_every_task_without_its_data(task, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "no-data"
    empty.mkdir()
    rc, out, err = run_main(["evaluate", task, "--template", tmp_path / "team", "--data-dir", empty], monkeypatch, capsys,
                            env={"MMBENCH_DATA": str(empty), "MMBENCH_CACHE": str(tmp_path / "cache")})
    assert rc == 0, err
    source = (tmp_path / "team" / "model.py").read_text()
    tree = ast.parse(source)  # valid Python, whatever the reason the data was not loaded
    assert any(isinstance(n, ast.FunctionDef) and n.name == "build" for n in tree.body)
    if not task.startswith("synthetic-"):  # generated data is always there; the others' shapes come at build time
        assert 'task_info["inputs"] gives each one\'s shape' in source
    assert list(empty.iterdir()) == []  # nothing downloaded or built there


def test_data_free_template_builds_and_runs_on_any_shapes(tmp_path, monkeypatch, capsys):
    """The template written without data is the same working model: built from a task_info it
    maps a batch to the declared output shape."""
    import importlib.util

    import torch

    empty = tmp_path / "no-data"
    empty.mkdir()
    rc, _, err = run_main(["evaluate", "mosi", "--template", tmp_path / "t", "--data-dir", empty], monkeypatch, capsys,
                          env={"MMBENCH_DATA": str(empty), "MMBENCH_CACHE": str(tmp_path / "cache")})
    assert rc == 0, err
    spec = importlib.util.spec_from_file_location("tmpl_nodata", tmp_path / "t" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = {"inputs": {"text": {"shape": [384], "sequence": False}, "audio": {"shape": [5], "sequence": True},
                       "vision": {"shape": [7], "sequence": True}}, "outputs": 1, "range": [-3.0, 3.0]}
    model = module.build(info)
    mods = {"text": torch.randn(4, 384), "audio": torch.randn(4, 6, 5), "vision": torch.randn(4, 3, 7)}
    present = {m: torch.tensor([True, False, True, True]) for m in mods}
    lengths = {"audio": torch.tensor([6, 1, 2, 3]), "vision": torch.tensor([3, 3, 1, 2])}
    out = model(mods, present, lengths)
    assert out.shape == (4, 1) and bool(((out >= -3) & (out <= 3)).all())


# ---------------------------------------------------------------- item 6: names checked once, nearest suggested


def test_unknown_task_suggests_the_nearest_name(monkeypatch, capsys):
    for args in (["train", "synthetic-synergi", "--fusion", "concat"], ["data", "masks", "synthetic-synergi", "-o", "m.csv"],
                 ["evaluate", "synthetic-synergi", "--template", "x"], ["tasks", "show", "synthetic-synergi"]):
        rc, out, err = run_main(args, monkeypatch, capsys)
        assert rc == 1 and "unknown task 'synthetic-synergi'; did you mean 'synthetic-synergy'?" in err, (args, err)


def test_reproduce_refuses_an_unknown_fusion_once_before_any_work(tmp_path, monkeypatch, capsys):
    rc, out, err = run_main(["reproduce", "--suite", "quick", "--fusions", "concatt", "--out", tmp_path / "runs",
                             "--no-progress"], monkeypatch, capsys)
    assert rc == 1
    assert err.count("unknown fusion 'concatt'") == 1 and "did you mean 'concat'?" in err
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
    rc, out, err = run_main(["reproduce", "--suite", "unimodal-mosi", "--fusions", "unimodal:txt", "--out",
                             tmp_path / "runs"], monkeypatch, capsys)
    assert rc == 1 and "did you mean 'text'?" in err and not (tmp_path / "runs").exists()


def test_reproduce_help_lists_every_suite(monkeypatch, capsys):
    import yaml

    from mmbench.core.io import builtin_dir

    suites = yaml.safe_load((builtin_dir("baselines") / "suites.yaml").read_text())
    rc, out, _ = run_main(["reproduce", "--help"], monkeypatch, capsys)
    assert rc == 0
    flat = " ".join(out.split())
    for name in suites:  # the help wraps lines, possibly inside a name: compare without the breaks
        assert name in flat.replace("- ", "-"), name


# ---------------------------------------------------------------- item 4: report reads what train writes


def test_report_reads_the_folders_train_writes(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    rc, out, err = run_main(["train", "synthetic-synergy", "--fusion", "late", "--seed", "0", "--seed", "1", "--epochs",
                             "1", "--out", runs, "--no-progress"], monkeypatch, capsys)
    assert rc == 0, err
    run = runs / "synthetic-synergy" / "late" / "seed0"
    result = json.loads((run / "result.json").read_text())
    assert result["seed"] == 0 and result["name"] == "late"
    assert set(result["metrics"]) == {"clean", *[c for c in result["metrics"] if c != "clean"]} and len(result["metrics"]) > 1
    # the clean test metric train prints is the one result.json holds
    assert f"accuracy {result['metrics']['clean']['accuracy']:.4f}" in out
    for inp in (runs / "synthetic-synergy", run, runs):
        rc, out, err = run_main(["report", inp, "-o", tmp_path / "r.md"], monkeypatch, capsys)
        assert rc == 0, (inp, err)
        assert (tmp_path / "r.md").read_text().count("late") >= 1
    # item 9: a single run has no spread over seeds to show
    rc, out, err = run_main(["report", run, "-o", tmp_path / "one.html"], monkeypatch, capsys)
    assert rc == 0 and "± 0.0000" not in (tmp_path / "one.html").read_text()
    # a run folder with no result.json (cut short) is named as such, not blamed on config.json
    (run / "result.json").unlink()
    rc, out, err = run_main(["report", run, "-o", tmp_path / "r.md"], monkeypatch, capsys)
    assert rc == 1 and "run folder without result.json" in err and "config.json" not in err


# ---------------------------------------------------------------- item 5: COCO masks and info without encoding


def test_coco_retrieval_masks_encode_nothing(tmp_path, monkeypatch, capsys):
    """The masks of coco-retrieval come from the caption file and the file system: an empty
    feature cache stays empty. The data README gives the reference: 25,014 captions, of which
    the 795 of the 159 images on disk have their image."""
    import pandas as pd

    from tests._datapaths import real_data_root

    root = real_data_root()
    cache = tmp_path / "cache"
    cache.mkdir()
    rc, out, err = run_main(["data", "masks", "coco-retrieval", "-o", tmp_path / "m.csv", "--data-dir", root],
                            monkeypatch, capsys, env={"MMBENCH_CACHE": str(cache)})
    assert rc == 0, err
    table = pd.read_csv(tmp_path / "m.csv", dtype={"id": str})
    clean = table[table["condition"] == "clean"]
    assert len(clean) == 25_014 and int(clean["image"].sum()) == 795 and int(clean["text"].sum()) == 25_014
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # nothing encoded


def test_coco_match_info_counts_each_split_not_the_whole_file(tmp_path, monkeypatch, capsys):
    from tests._datapaths import real_data_root

    root = real_data_root()
    rc, out, err = run_main(["data", "info", "coco-match", "--json", "--data-dir", root], monkeypatch, capsys)
    assert rc == 0, err
    info = json.loads(out)
    splits = info["splits"]
    # every image of the caption file lands in one split; the 159 on disk are the ones paired
    assert sum(s["images"] for s in splits.values()) == 5_000
    assert sum(s["images_on_disk"] for s in splits.values()) == 159
    assert sum(s["captions"] for s in splits.values()) == 795
    # the test set: each paired test image with its own captions (positives) and mined negatives
    assert splits["test"]["captions"] < info["test_set"]["items"] < 25_014


# ---------------------------------------------------------------- item 7: latency timed one way, labelled


def test_latency_is_the_forward_on_one_cpu_thread_and_restores_threads():
    import torch

    from mmbench.data.splits import load_task_split
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.evaluator import measure_efficiency
    from mmbench.evaluation.latency import TIMED
    from mmbench.models.model import MultimodalModel
    from mmbench.training.trainer import TrainConfig, model_config_for

    spec = get_task("synthetic-synergy")
    split = load_task_split(spec, "test")
    model = MultimodalModel(model_config_for(TrainConfig(task=spec.name, fusion="concat"), spec, split))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        eff = measure_efficiency(model, split, "cpu")
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert eff["threads"] == 1 and eff["precision"] == "float32" and eff["latency_ms_per_batch"] > 0
    assert "model forward" in TIMED and "not the isolated worker's round trip" in TIMED


def test_board_says_what_latency_times_and_when_precision_was_not_recorded():
    from mmbench.board.efficiency import devices_note

    rows = [{"device": "CPU, 2 cores", "latency_ms_per_batch": 1.0, "batch_size": 64, "precision": "unknown"}]
    note = devices_note(rows)
    assert "precision unknown" not in note and "precision not recorded" in note
    assert "model's forward alone (not the isolated worker's round trip)" in note


# ---------------------------------------------------------------- item 9: output text


def test_validation_scores_say_their_split(tmp_path, monkeypatch, capsys):
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.submissions.contract import write_template

    model = write_template(get_task("synthetic-synergy"), tmp_path / "team")
    rc, out, err = run_main(["evaluate", "synthetic-synergy", "--model", f"{model}:build", "--split", "validation",
                             "--bootstrap", "0"], monkeypatch, capsys)
    assert rc == 0, err
    assert "scored on the validation split" in out.splitlines()[0]


def test_tasks_columns_line_up_for_long_names(monkeypatch, capsys):
    rc, out, _ = run_main(["tasks"], monkeypatch, capsys)
    assert rc == 0
    lines = out.splitlines()
    rows = json.loads(run_main(["tasks", "--json"], monkeypatch, capsys)[1])
    assert max(len(r["name"]) for r in rows) > 24  # the case that broke
    starts = {ln.index(" " + r["target"] + " ", len(r["name"])) for ln, r in zip(lines, rows)}
    assert len(starts) == 1, starts  # every target column starts at the same offset


def test_reproduce_prints_no_runs_of_blank_lines(tmp_path, monkeypatch, capsys):
    rc, out, err = run_main(["reproduce", "--tasks", "synthetic-synergy", "--tasks", "synthetic-unique", "--fusions",
                             "concat", "--seeds", "0", "--set", "epochs=1", "--out", tmp_path / "runs"],
                            monkeypatch, capsys)
    assert rc == 0, err
    assert "\n\n\n" not in out
    log = out.split("seeds\n", 1)[1].split("\n\n", 1)[0]  # the run lines, one per run, no blank between
    assert len(log.splitlines()) == 2, out[:500]


def test_conditions_heading_counts_the_table_columns():
    import re

    page = (Path(__file__).resolve().parent.parent / "leaderboard" / "synthetic-synergy.html").read_text()
    n = int(re.search(r"under every condition \((\d+) conditions, clean included\)", page).group(1))
    table = page[page.index('id="conditions-'):]
    header = table[: table.index("</tr>")]
    assert header.count("<th scope") == n + 2  # rank, name and the n conditions
