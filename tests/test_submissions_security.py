"""Security of submissions: pickles are refused without being unpickled, and Python-factory
submissions run in a separate, limited process that is stopped and reported when it hangs,
exhausts memory, crashes or produces garbage, without inheriting the evaluator's secrets
or working directory. The evaluator keeps working afterwards.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import textwrap
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch

from mmbench.core.errors import MMBenchError, SubmissionError
from mmbench.evaluation.evaluator import evaluate_model
from mmbench.evaluation.scoring import evaluate_predictions
from mmbench.evaluation.sandbox.runner import SandboxConfig
from mmbench.data.tasks import get_task
from _cli import run_main

TASK = "synthetic-synergy"
SPEC = get_task(TASK)

TINY_MODEL = '''
import torch

class Tiny(torch.nn.Module):
    """Follows the model interface: (modalities, present, lengths) -> logits [B, C]."""

    def __init__(self, k=2):
        super().__init__()
        self.lin = torch.nn.Linear(32, k)

    def forward(self, modalities, present, lengths):
        return self.lin(torch.cat([modalities["m0"], modalities["m1"]], -1))
'''


def factory(tmp: Path, body: str, name: str = "sub.py") -> str:
    path = tmp / name
    path.write_text(TINY_MODEL + "\n" + textwrap.dedent(body))
    return f"{path}:build"


class Evil:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a pickle was loaded: its payload created the marker file"


@pytest.fixture()
def no_unpickling(monkeypatch):
    """Fail the test if the evaluator process unpickles anything."""
    def boom(*a, **k):
        raise AssertionError("the evaluator tried to unpickle a submission")

    class NoUnpickler(pickle.Unpickler):
        def __init__(self, *a, **k):
            boom()

    from mmbench.core.registry import DATASETS

    DATASETS.names()  # import every loader first (some define pickle.Unpickler subclasses)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    monkeypatch.setattr(torch, "load", boom)


@pytest.fixture(scope="module")
def good_predictions(tmp_path_factory):
    from mmbench.data.datasets.synthetic import SyntheticDataset

    s = SyntheticDataset(**SPEC.dataset.options).load_split("test")
    p = tmp_path_factory.mktemp("good") / "good.csv"
    pd.DataFrame({"id": s.ids, "prediction": s.targets.numpy()}).to_csv(p, index=False)
    return p


def assert_evaluator_alive(good_predictions):
    r = evaluate_predictions(SPEC, good_predictions, "alive", n_resamples=0)
    assert r.metrics["clean"]["accuracy"] == 1.0




# --------------------------------------------------------------------------------------------
# pickles
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".pkl", ".safetensors"])
def test_pickled_weights_are_refused_unloaded(suffix, tmp_path, marker, no_unpickling, good_predictions):
    w = tmp_path / f"weights{suffix}"
    w.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(SubmissionError, match="pickle") as exc:
        evaluate_model(SPEC, "baseline", w, "evil")
    assert w.name in str(exc.value)
    with pytest.raises(SubmissionError, match="pickle"):
        evaluate_model(SPEC, factory(tmp_path, "def build(): return Tiny()"), w, "evil")
    assert_evaluator_alive(good_predictions)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".pkl"])
def test_pickled_model_files_are_refused(suffix, tmp_path, marker, no_unpickling):
    m = tmp_path / f"model{suffix}"
    m.write_bytes(pickle.dumps(Evil(marker), protocol=2))
    with pytest.raises(SubmissionError, match="pickle"):
        evaluate_model(SPEC, str(m), None, "evil")


def test_torch_save_archive_is_refused(tmp_path, marker, no_unpickling):
    """torch.save's zip format holds a pickle (archive/data.pkl): refused by its layout."""
    m = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(m, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(Evil(marker)))
        zf.writestr("archive/version", "3\n")
    with pytest.raises(SubmissionError, match="pickle"):
        evaluate_model(SPEC, str(m), None, "evil")
    with pytest.raises(SubmissionError, match="pickle"):
        evaluate_model(SPEC, "baseline", m, "evil")


def test_protocol0_pickle_is_refused(tmp_path, marker, no_unpickling):
    m = tmp_path / "old.pkl"
    m.write_bytes(pickle.dumps(Evil(marker), protocol=0))
    with pytest.raises(SubmissionError, match="pickle"):
        evaluate_model(SPEC, str(m), None, "evil")


@pytest.mark.parametrize("name", ["preds.pkl", "preds.csv", "preds.parquet", "preds.jsonl"])
def test_pickled_predictions_are_refused(name, tmp_path, marker, no_unpickling):
    p = tmp_path / name
    p.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(SubmissionError, match="pickle"):
        evaluate_predictions(SPEC, p, "evil")


def test_pickle_refusal_through_cli_writes_nothing(tmp_path, marker, monkeypatch, capsys):
    w = tmp_path / "best.pt"
    w.write_bytes(pickle.dumps(Evil(marker)))
    board, out = tmp_path / "lb", tmp_path / "r.json"
    rc, stdout, stderr = run_main(["evaluate", TASK, "--model", "baseline", "--weights", w, "--name", "evil",
                                   "--leaderboard", board, "--output", out], monkeypatch, capsys)
    assert rc == 1
    assert stderr.startswith("error: ") and "best.pt" in stderr and "pickle" in stderr and len(stderr.splitlines()) == 1
    assert not board.exists() and not out.exists()


@pytest.fixture(scope="module")
def exported_program(tmp_path_factory):
    """A valid .pt2 of the tiny model (dynamic batch dimension)."""
    ns: dict = {}
    exec(TINY_MODEL, ns)
    model = ns["Tiny"]().eval()
    x = {"m0": torch.randn(4, 16), "m1": torch.randn(4, 16)}
    pres = {"m0": torch.ones(4, dtype=torch.bool), "m1": torch.ones(4, dtype=torch.bool)}
    b = torch.export.Dim("batch", min=1, max=1 << 20)
    ep = torch.export.export(model, (x, pres, {}), dynamic_shapes=({k: {0: b} for k in x}, {k: {0: b} for k in pres}, {}))
    path = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    torch.export.save(ep, path)
    return path


def _rewrite_pt2(src: Path, dst: Path, replace: dict) -> None:
    """Copy a .pt2 archive, replacing members whose name ends with a key of `replace`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new(data) if callable(new) else new
            zout.writestr(info.filename, data)


def test_pt2_with_pickled_weights_is_refused(exported_program, tmp_path, marker, no_unpickling):
    def pickled_config(data: bytes) -> bytes:
        cfg = json.loads(data)
        for meta in cfg["config"].values():
            meta["use_pickle"] = True
        return json.dumps(cfg).encode()

    evil = tmp_path / "evil.pt2"
    _rewrite_pt2(exported_program, evil, {"weights_config.json": pickled_config,
                                          "weights/weight_0": pickle.dumps(Evil(marker))})
    with pytest.raises(SubmissionError, match="pickle"):
        evaluate_model(SPEC, str(evil), None, "evil")


def test_pt2_with_raw_pickle_sample_inputs_is_refused(exported_program, tmp_path, marker, no_unpickling):
    evil = tmp_path / "evil.pt2"
    _rewrite_pt2(exported_program, evil, {"sample_inputs/model.pt": pickle.dumps(Evil(marker))})
    with pytest.raises(SubmissionError, match="raw pickle"):
        evaluate_model(SPEC, str(evil), None, "evil")


def test_pt2_sample_inputs_are_never_fully_unpickled(exported_program, tmp_path, marker, good_predictions):
    """torch.export.load falls back to torch.load(weights_only=False) when the restricted
    unpickler fails; in the sandbox worker that fallback is forced back to weights_only."""
    buf = io.BytesIO()
    torch.save({"x": Evil(marker)}, buf)  # a well-formed torch.save archive holding the payload
    evil = tmp_path / "evil.pt2"
    _rewrite_pt2(exported_program, evil, {"sample_inputs/model.pt": buf.getvalue()})
    with pytest.raises(SubmissionError, match="cannot load the exported program"):
        evaluate_model(SPEC, str(evil), None, "evil", conditions=["clean"], n_resamples=0,
                       sandbox_config=SandboxConfig(timeout_s=120))
    assert_evaluator_alive(good_predictions)


def test_valid_pt2_runs(exported_program):
    r = evaluate_model(SPEC, str(exported_program), None, "tiny-pt2", conditions=["clean", "drop:m0"], n_resamples=0,
                       sandbox_config=SandboxConfig(timeout_s=120))
    assert set(r.metrics) == {"clean", "drop:m0"} and r.kind == "model"
    assert r.efficiency and r.efficiency["params"] == 66


# --------------------------------------------------------------------------------------------
# the sandbox: hang, memory, crash, garbage, environment, working directory
# --------------------------------------------------------------------------------------------

REPORT = "REPORT_PATH"

FAILING = {
    # name: (factory body, SandboxConfig overrides, expected message regex)
    "hang": ('''
        import os, subprocess, time
        def build():
            child = subprocess.Popen(["sleep", "600"])
            open(REPORT_PATH, "w").write(f"{os.getpid()} {child.pid}")
            time.sleep(600)
        ''', {"timeout_s": 40, "isolation": "none"}, r"timed out after 40 s"),  # it reports its pids outside
    "memory-bomb-at-build": ('''
        def build():
            blob = bytearray(8 * 2**30)
            return Tiny()
        ''', {"memory_mb": 5000}, r"ran out of memory.*5000 MB"),
    "memory-bomb-in-forward": ('''
        class Greedy(Tiny):
            def forward(self, modalities, present, lengths):
                hoard = torch.ones(2**31)  # 8 GiB
                return super().forward(modalities, present, lengths)
        def build():
            return Greedy()
        ''', {"memory_mb": 5000}, r"ran out of memory"),
    "exception": ('''
        def build():
            raise ValueError("boom")
        ''', {}, r"build\(\) raised ValueError: boom"),
    "import-error": ('''
        import not_a_module_anywhere
        def build():
            return Tiny()
        ''', {}, r"importing the factory file raised ModuleNotFoundError"),
    "hard-exit": ('''
        import os
        class Quitter(Tiny):
            def forward(self, *a):
                os._exit(7)
        def build():
            return Quitter()
        ''', {}, r"exited with status 7"),
    "silent-exit": ('''
        import os
        def build():
            os._exit(0)
        ''', {}, r"without writing its outputs"),
    "segfault": ('''
        import ctypes
        def build():
            ctypes.string_at(0)
        ''', {}, r"killed by SIGSEGV"),
    "not-a-module": ('''
        def build():
            return 42
        ''', {}, r"returned int, not a torch.nn.Module"),
    "missing-function": ('''
        def make():
            return Tiny()
        ''', {}, r"no function 'build'"),
    "wrong-shape": ('''
        def build():
            return Tiny(k=7)
        ''', {}, r"has shape \[600, 7\]; expected \[600, 2\]"),
    "nan-output": ('''
        class NaNs(Tiny):
            def forward(self, *a):
                return super().forward(*a) * float("nan")
        def build():
            return NaNs()
        ''', {}, r"contains NaN or infinity"),
    "returns-a-string": ('''
        class Talker(Tiny):
            def forward(self, *a):
                return "positive"
        def build():
            return Talker()
        ''', {}, r"returned str .* expected a Tensor"),
    "garbage-outputs-file": ('''
        import atexit, os
        def scribble():
            with open(os.path.join(os.getcwd(), "outputs.safetensors"), "wb") as fh:
                fh.write(os.urandom(5000))
        atexit.register(scribble)
        def build():
            return Tiny()
        ''', {}, r"unreadable \(garbage output\)"),
    "forged-outputs": ('''
        import atexit, os
        from safetensors.torch import save_file
        def forge():
            save_file({"out": torch.zeros(600, 2), "extra": torch.zeros(1)}, os.path.join(os.getcwd(), "outputs.safetensors"))
        atexit.register(forge)
        def build():
            return Tiny()
        ''', {}, r"unexpected entries"),
}


def _pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.startswith("State:") and ("Z" in line.split()[1] or "X" in line.split()[1]) for line in fh)
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def sandbox_outcomes(tmp_path_factory):
    """Run every failing factory at once (threads: each waits on its own worker process)."""
    root = tmp_path_factory.mktemp("sandbox")

    def run(name):
        body, overrides, _ = FAILING[name]
        work = root / name
        work.mkdir()
        report = work / "report.txt"
        spec = factory(work, f"{REPORT} = {str(report)!r}\n" + textwrap.dedent(body))
        cfg = SandboxConfig(**({"timeout_s": 120} | overrides))
        started = time.monotonic()
        try:
            evaluate_model(SPEC, spec, None, "bad", conditions=["clean"], n_resamples=0, sandbox_config=cfg)
            return None, time.monotonic() - started, report
        except MMBenchError as exc:
            return exc, time.monotonic() - started, report

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run, name) for name in FAILING}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", list(FAILING))
def test_sandbox_failure_is_stopped_and_reported(name, sandbox_outcomes, good_predictions):
    exc, seconds, report = sandbox_outcomes[name]
    assert exc is not None, f"{name}: the submission was not refused"
    assert isinstance(exc, SubmissionError), type(exc)
    message = str(exc)
    import re

    assert re.search(FAILING[name][2], message), message
    assert "sub.py" in message and "\n" not in message
    if name == "hang":
        assert seconds < 40 + 30
        assert report.exists(), "the hanging factory never started"
        for pid in map(int, report.read_text().split()):
            deadline = time.monotonic() + 10
            while not _pid_gone(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _pid_gone(pid), f"process {pid} of the hung submission is still running"
    assert_evaluator_alive(good_predictions)


def test_sandbox_env_and_workdir(tmp_path, monkeypatch, good_predictions):
    monkeypatch.setenv("MMBENCH_FAKE_SECRET", "hunter2-do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AKIA-not-a-real-key")
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "seen.json"
    spec = factory(tmp_path, f'''
        import json, os, sys
        def build():
            secret = os.environ.get("MMBENCH_FAKE_SECRET")
            with open({str(report)!r}, "w") as fh:
                json.dump({{"env": dict(os.environ), "cwd": os.getcwd(), "secret": secret,
                           "files": sorted(os.listdir("."))}}, fh)
            print("\\x00\\xff garbage on stdout " * 1000)
            sys.stderr.write("noise on stderr\\n" * 1000)
            return Tiny()
        ''')
    # without isolation, so that it can write its report (tests/test_sandbox_isolation.py runs it isolated)
    r = evaluate_model(SPEC, spec, None, "env-check", conditions=["clean"], n_resamples=0,
                       sandbox_config=SandboxConfig(timeout_s=120, isolation="none"))
    assert r.metrics["clean"]["accuracy"] >= 0.0  # printing garbage on stdout/stderr is harmless
    seen = json.loads(report.read_text())
    assert seen["secret"] is None
    assert "hunter2" not in json.dumps(seen["env"]) and "AKIA" not in json.dumps(seen["env"])
    allowed = {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONDONTWRITEBYTECODE",
               "PYTHONUNBUFFERED", "PYTHONHASHSEED", "MALLOC_ARENA_MAX", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "CUDA_VISIBLE_DEVICES", "LC_CTYPE"}
    assert set(seen["env"]) <= allowed, set(seen["env"]) - allowed
    cwd = Path(seen["cwd"])
    assert cwd != tmp_path and cwd.name.startswith("mmbench-sandbox-")
    assert seen["env"]["HOME"] == str(cwd) and seen["env"]["TMPDIR"] == str(cwd)
    assert set(seen["files"]) <= {"job.json", "inputs.safetensors", "stdout.log", "stderr.log"}
    assert not cwd.exists(), "the sandbox working directory was not removed"
    # the inputs hold no targets or ids
    assert_evaluator_alive(good_predictions)


def test_sandbox_inputs_hold_no_labels(tmp_path):
    """The file handed to the worker has modality tensors and masks only."""
    from mmbench.core.io import load_safetensors
    from mmbench.evaluation.sandbox.runner import _write_inputs
    from mmbench.data.splits import load_task_split

    from mmbench.evaluation.mixing import mix_conditions

    split = load_task_split(SPEC, "test")
    mixed = mix_conditions(split, SPEC.conditions(), 0)
    _write_inputs(tmp_path / "in.safetensors", split, SPEC.conditions(), mixed, mixed.order)
    tensors, meta = load_safetensors(tmp_path / "in.safetensors")
    assert all(k.split(".")[0] in ("x", "present", "keep", "len", "order") for k in tensors)  # order: the mixed rows
    assert "synergy-" not in json.dumps(meta)


def test_sandbox_failure_through_cli_writes_nothing(tmp_path, monkeypatch, capsys, good_predictions):
    (tmp_path / "team").mkdir()  # a folder of its own: one that holds the leaderboard is refused
    spec = factory(tmp_path / "team", '''
        def build():
            raise RuntimeError("kaputt")
        ''')
    board, out = tmp_path / "lb", tmp_path / "r.json"
    rc, stdout, stderr = run_main(["evaluate", TASK, "--model", spec, "--name", "crashy", "--conditions", "clean",
                                   "--leaderboard", board, "--output", out, "--timeout", "120"], monkeypatch, capsys)
    assert rc == 1
    warning, *lines = stderr.strip().splitlines()
    assert warning.startswith("warning: no --weights")
    assert lines[0].startswith("error: ") and "sub.py" in lines[0] and "kaputt" in lines[0]
    # the model's own traceback follows, from its own file on (mmbench's worker frames are left out)
    assert lines[1] == "model stderr:" and "Traceback" in lines[2] and "worker.py" not in stderr
    assert "sub.py" in lines[3] and "RuntimeError: kaputt" in lines[-1]
    assert not board.exists() and not out.exists()
    rc, stdout, stderr = run_main(["evaluate", TASK, "--predictions", good_predictions, "--name", "after", "--allow-partial",
                                   "--leaderboard", board], monkeypatch, capsys)
    assert rc == 0, stderr
    assert (board / TASK / "after.json").exists()


def test_weights_that_do_not_fit_the_factory_model(tmp_path):
    from safetensors.torch import save_file

    w = tmp_path / "w.safetensors"
    save_file({"lin.weight": torch.zeros(3, 3)}, str(w))
    spec = factory(tmp_path, "def build():\n    return Tiny()\n")
    with pytest.raises(SubmissionError, match="weights do not fit the model"):
        evaluate_model(SPEC, spec, w, "misfit", conditions=["clean"], n_resamples=0,
                       sandbox_config=SandboxConfig(timeout_s=120))


def test_model_spec_errors(tmp_path):
    with pytest.raises(SubmissionError, match="needs --weights"):
        evaluate_model(SPEC, "baseline", None, "x")
    with pytest.raises(SubmissionError, match="name the factory function"):
        evaluate_model(SPEC, str(tmp_path / "f.py"), None, "x")
    with pytest.raises(SubmissionError, match="factory file not found"):
        evaluate_model(SPEC, str(tmp_path / "nope.py") + ":build", None, "x")
    with pytest.raises(SubmissionError, match="expected 'baseline'"):
        evaluate_model(SPEC, "resnet50", None, "x")
    w = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(w))
    with pytest.raises(SubmissionError, match="use --model baseline"):
        evaluate_model(SPEC, str(w), None, "x")
    with pytest.raises(MMBenchError, match="not an mmbench model checkpoint"):
        evaluate_model(SPEC, "baseline", w, "x")


def test_model_size_limits(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    w = tmp_path / "big.safetensors"
    save_file({"lin.weight": torch.zeros(64, 64)}, str(w))
    monkeypatch.setenv("MMBENCH_MAX_MODEL_BYTES", "1000")
    with pytest.raises(SubmissionError, match="over the upload limit.*MMBENCH_MAX_MODEL_BYTES"):
        evaluate_model(SPEC, "baseline", w, "big")
    monkeypatch.setenv("MMBENCH_MAX_MODEL_BYTES", "lots")
    with pytest.raises(SubmissionError, match="is not a number"):
        evaluate_model(SPEC, "baseline", w, "big")


def test_csv_table_reads_what_pandas_reads(tmp_path):
    """The predictions CSV is read with Python's csv module (no pandas import on the scoring
    path): every cell equals pandas' string reading of the same file (quoted commas and
    newlines, CRLF, a BOM, blank lines), and a short row is refused naming its line."""
    import pandas as pd

    from mmbench.evaluation.submissions.tables import read_table

    text = '\ufeffid,prediction,note\r\n"a,1",0.5,"two\nlines"\r\n\r\nb,-1e-3,""\r\nc,  7 ,"say ""hi"""\r\n'
    path = tmp_path / "p.csv"
    path.write_text(text, encoding="utf-8", newline="")
    table = read_table(path)
    expected = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    assert list(table.columns) == list(expected.columns) and table.rows == len(expected) == 3
    for c in expected.columns:
        assert table.columns[c].tolist() == expected[c].tolist()
    path.write_text("id,prediction\na,1\nb\n", encoding="utf-8")
    with pytest.raises(MMBenchError, match=r"row on line 3 has 1 field\(s\), the header 2"):
        read_table(path)


def test_reading_a_long_csv_field_leaves_the_csv_module_limit_as_it_was(tmp_path):
    """The csv module's field limit is process-wide: a predictions file with a long cell raises it
    for its own read only, so a dataset's CSV read later in the process is still protected."""
    import csv

    from mmbench.evaluation.submissions.tables import read_table

    before = csv.field_size_limit()
    path = tmp_path / "preds.csv"
    path.write_text("id,prediction\n" + "x" * (before + 10) + ",1\n")
    table = read_table(path)
    assert table.rows == 1 and len(table.columns["id"][0]) == before + 10
    assert csv.field_size_limit() == before
