"""Smoke run of the benchmark suite (`python -m benchmarks --quick --tiny`): every case
completes and every exactness check holds. Timings are not checked (they depend on the machine
and its load); `--tiny` shrinks every case so the whole run takes well under a minute."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests._datapaths import REPO, real_data_root

CASE_IDS = {"1", "2", "3", "4", "5", "6", "7"}


@pytest.mark.timeout(300)
def test_quick_tiny_run_completes_with_exact_results(tmp_path):
    data = real_data_root()
    out = tmp_path / "tmp.json"
    env = dict(os.environ, MMBENCH_DATA=str(data), MMBENCH_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--tiny", "--device", "cpu", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=290)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["exactness_ok"] is True
    assert {r["case"] for r in rows} == CASE_IDS
    errors = [r for r in rows if r["notes"].startswith("ERROR")]
    assert not errors, errors
    # every case that has an exactness check ran it and it held
    checked = {r["case"] for r in rows if r["exact"] is not None}
    assert checked >= {"1", "2", "3", "4", "5", "6", "7"}, checked
    assert all(r["exact"] for r in rows if r["exact"] is not None)
    # the table went to stdout, the machine description into the JSON
    assert "ratio" in proc.stdout and "case" in proc.stdout
    for key in ("cpu", "versions", "load_average", "date"):
        assert key in report["machine"]
    by_name = {r["name"]: r for r in rows}
    assert any(name.startswith("train concat") for name in by_name)
    assert "reproduce: vectorised == one by one" in by_name
    # case 6 runs the command --quick times (evaluate a MOSI predictions file), on a smaller file
    assert "mmbench evaluate mosi --predictions FILE" in by_name and "mmbench tasks" not in by_name
    assert all(r["mmbench_s"] is None or r["mmbench_s"] > 0 for r in rows)


def test_an_interrupted_run_writes_the_finished_cases(tmp_path, monkeypatch, capsys):
    # a device call cut by its time limit (`timeout -s INT`) must still hand back what it measured
    import types

    from benchmarks.__main__ import main

    def interrupted(st):
        raise KeyboardInterrupt

    # the case module the run imports next (import_module returns what sys.modules holds)
    monkeypatch.setitem(sys.modules, "benchmarks.retrieval", types.SimpleNamespace(run=interrupted))
    out = tmp_path / "partial.json"
    code = main(["--tiny", "--device", "cpu", "--cases", "classification,retrieval,cli_latency", "--out", str(out)])
    assert code == 130
    report = json.loads(out.read_text())
    assert report["interrupted_in"] == "retrieval"
    assert {r["case"] for r in report["rows"]} == {"3"}  # classification done; nothing after the interrupt
    assert report["exactness_ok"] is True
    assert "classification" in capsys.readouterr().out


def test_rows_are_written_as_soon_as_measured(tmp_path, monkeypatch):
    # the H200 run of 2026-12-04: case 1 measured three rows, was cut by its time box, and the
    # JSON said "rows": []. Each row is now in the file the moment its case emits it.
    import types

    from benchmarks import Row
    from benchmarks.__main__ import main

    out = tmp_path / "rows.json"
    seen_during_the_case = []

    def measures_two_then_is_cut(st):
        first = Row("1", "first", 2.0, 4.0, "ref")
        st.emit(first)
        seen_during_the_case.append([r["name"] for r in json.loads(out.read_text())["rows"]])
        second = Row("1", "second", 1.0, 3.0, "ref")
        st.emit(second)
        second.exact = True  # completed later (e.g. a slow reference): emitted again, kept once
        st.emit(second)
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "benchmarks.training", types.SimpleNamespace(run=measures_two_then_is_cut))
    code = main(["--tiny", "--device", "cpu", "--cases", "training,classification", "--out", str(out)])
    assert code == 130
    assert seen_during_the_case == [["first"]]
    report = json.loads(out.read_text())
    assert [(r["name"], r["exact"], r["ratio"]) for r in report["rows"]] == [("first", None, 2.0), ("second", True, 3.0)]
    assert report["interrupted_in"] == "training" and report["running"] is None


def test_retrieval_case_emits_its_row_before_the_naive_reference(monkeypatch):
    # mmbench's side first; the naive full sort after it, within its own budget
    import benchmarks.retrieval as retrieval
    from benchmarks import Settings

    emitted = []

    def too_slow(*args, **kwargs):
        assert [r.exact for r in emitted] == [None]  # the row is out before the reference starts
        raise TimeoutError("the naive full sort ran past its budget of 60 s")

    monkeypatch.setattr(retrieval, "naive_recalls", too_slow)
    st = Settings(tiny=True, device="cpu", log=lambda m: None, emit=emitted.append)
    (row,) = retrieval._coco_case(st)
    assert emitted == [row, row] and row.exact is None and row.ratio > 0
    assert "past its budget" in row.notes and "exactness not checked" in row.notes


def test_training_case_gpu_branches_run_on_the_cpu(monkeypatch):
    # case 1's CUDA-only branches (reproduce rows, compiled variants) with the CPU standing in
    # for the GPU, so a GPU session does not meet their first Python error: Settings.cuda
    # forced, torch.compile through the "eager" backend (which takes no mode: no CUDA graphs)
    from dataclasses import replace

    import benchmarks.training as training
    from benchmarks import Settings

    monkeypatch.setattr(Settings, "cuda", property(lambda self: True))
    real = training.train_config
    monkeypatch.setattr(training, "train_config", lambda *a, **kw: replace(real(*a, **kw), compile_backend="eager"))
    logged = []
    rows = training.run(Settings(tiny=True, device="cpu", log=logged.append, fusions=("concat",)))
    order = ["train concat (trainer,", "reproduce concat: 5 seeds at once (eager)", "train concat (trainer+compile,",
             "train concat (trainer+compile+cudagraphs,", "reproduce concat: 5 seeds at once (compiled"]
    assert len(rows) > len(order) and all(r.name.startswith(prefix) for r, prefix in zip(rows, order)), [r.name for r in rows]
    errors = [r.notes for r in rows if r.notes.startswith("ERROR")]
    assert not errors, errors
    assert all(r.ratio and r.ratio > 0 for r in rows[:5])
    assert rows[1].extra["seeds"] == [0, 1, 2, 3, 4] and rows[1].unit == "s/seed-epoch"
    assert sum(line.startswith("  row: ") for line in logged) == len(rows)  # each row logged when measured


def test_retrieval_at_scale_branch_runs_on_the_cpu(monkeypatch):
    # case 2's GPU-only "at scale" code at a small size, the CPU standing in for the GPU
    import benchmarks.retrieval as retrieval
    from benchmarks import Settings
    from mmbench.evaluation.metrics import retrieval_metrics

    monkeypatch.setattr(Settings, "cuda", property(lambda self: True))
    st = Settings(tiny=True, device="cpu", log=lambda m: None)
    (row,) = retrieval._scale_case(st)
    assert row.name == "retrieval at scale, 3,000 x 3,000 x 256 (chunk 512, chunked pass)" and row.ratio > 0
    gen = torch.Generator().manual_seed(0)  # the case's own data, scored here without chunks
    img = torch.nn.functional.normalize(torch.randn(3000, 256, generator=gen), dim=1)
    cap = torch.nn.functional.normalize(img + 0.5 * torch.randn(3000, 256, generator=gen), dim=1)
    assert row.extra["recalls"] == retrieval_metrics(img, cap, torch.arange(3000), ks=retrieval.KS, chunk_size=3000)
