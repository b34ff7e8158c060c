"""Isolation of submitted models (`mmbench evaluate --model`, bubblewrap): the model cannot read
a file outside its folder, the data root or its parent's /proc, and cannot reach a TCP port on
127.0.0.1; the same model without those attempts scores exactly as it does unisolated. Each
attempt is also run with `--isolation none`, where it must succeed: the attempts are real.
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
from pathlib import Path

import pytest

from mmbench.evaluation.sandbox import isolation
from _cli import run_main

TASK = "synthetic-synergy"
REASON = isolation.probe()
needs_bwrap = pytest.mark.skipif(REASON is not None, reason=f"isolation unavailable on this machine: {REASON}")

MODEL = '''
import os, socket, torch

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(32, 2)

    def forward(self, modalities, present, lengths):
        return self.lin(torch.cat([modalities["m0"], modalities["m1"]], -1))

def attempt():
{attempt}

def build():
    torch.manual_seed(0)
    try:
        leaked = attempt()
    except OSError as exc:  # denied: behave like an honest model
        print("denied:", exc)
        return Tiny()
    raise RuntimeError(f"LEAKED {{leaked!r}}")
'''

ATTEMPTS = {
    "outside-file": "    return open(SECRET).read()",
    "data-root": "    return [os.listdir(DATA), open(os.path.join(DATA, 'test_labels.csv')).read()]",
    "network": "    return socket.create_connection(('127.0.0.1', PORT), timeout=5).getsockname()",
    "parent-proc": ("    text = open(f'/proc/{PARENT}/cmdline', 'rb').read()\n"
                    "    if not text.startswith(PARENT_CMDLINE):\n"
                    "        raise PermissionError('another process')\n"
                    "    return text[:40]"),
    "nothing": "    raise OSError('no attempt')",
}


@pytest.fixture()
def world(tmp_path, monkeypatch):
    """A secret file, a data root with labels and a listening port, all outside the submission's folder."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the-secret")
    data = tmp_path / "data"
    data.mkdir()
    (data / "test_labels.csv").write_text("id,label\nsynergy-0,1\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    monkeypatch.setenv("MMBENCH_DATA", str(data))
    sub = tmp_path / "sub"
    sub.mkdir()
    consts = {"SECRET": str(secret), "DATA": str(data), "PORT": listener.getsockname()[1], "PARENT": os.getpid(),
              "PARENT_CMDLINE": Path(f"/proc/{os.getpid()}/cmdline").read_bytes()[:80]}
    yield sub, consts
    listener.close()


def write_model(sub: Path, consts: dict, attempt: str) -> str:
    head = "".join(f"{k} = {v!r}\n" for k, v in consts.items())
    (sub / "model.py").write_text(head + MODEL.format(attempt=ATTEMPTS[attempt]))
    return f"{sub / 'model.py'}:build"


def evaluate(spec: str, tmp_path: Path, monkeypatch, capsys, *extra: str):
    out = tmp_path / f"result-{len(list(tmp_path.glob('result-*')))}.json"
    rc, stdout, stderr = run_main(["evaluate", TASK, "--model", spec, "--name", "probe", "--conditions", "clean",
                                   "--bootstrap", "0", "--timeout", "120", "--output", out, *extra], monkeypatch, capsys)
    return rc, stdout, stderr, (json.loads(out.read_text()) if out.exists() else None)


@needs_bwrap
@pytest.mark.parametrize("attempt", ["outside-file", "data-root", "network", "parent-proc"])
def test_attempt_is_denied_and_the_model_scores_normally(attempt, world, tmp_path, monkeypatch, capsys):
    sub, consts = world
    spec = write_model(sub, consts, attempt)
    rc, stdout, stderr, result = evaluate(spec, tmp_path, monkeypatch, capsys)
    assert rc == 0, stderr
    assert "isolation: bubblewrap" in stdout and result["extra"]["isolation"] == "bubblewrap"
    # the same model that attempts nothing scores exactly the same
    honest = write_model(sub, consts, "nothing")
    rc, _, stderr, plain = evaluate(honest, tmp_path, monkeypatch, capsys)
    assert rc == 0, stderr
    assert result["metrics"] == plain["metrics"]
    # without isolation the attempt succeeds: the model refuses to score, naming what it got
    write_model(sub, consts, attempt)
    rc, stdout, stderr, leaked = evaluate(spec, tmp_path, monkeypatch, capsys, "--isolation", "none")
    assert rc == 1 and "LEAKED" in stderr and leaked is None, stderr
    assert "without isolation" in stderr.splitlines()[0]


@needs_bwrap
def test_entry_records_isolation_and_a_data_root_inside_the_folder_is_hidden(world, tmp_path, monkeypatch, capsys):
    sub, consts = world
    spec = write_model(sub, consts, "nothing")
    board = tmp_path / "board"
    rc, stdout, stderr, _ = evaluate(spec, tmp_path, monkeypatch, capsys, "--leaderboard", board)
    assert rc == 0, stderr
    entry = json.loads((board / TASK / "probe.json").read_text())
    assert entry["extra"]["isolation"] == "bubblewrap"
    assert entry["extra"]["submission"]["isolation"] == "bubblewrap"
    # a model whose folder holds the data root gets an empty folder in its place
    outer = tmp_path / "outer"
    (outer / "data").mkdir(parents=True)
    (outer / "data" / "test_labels.csv").write_text("id,label\n")
    monkeypatch.setenv("MMBENCH_DATA", str(outer / "data"))
    nested = write_model(outer, {**consts, "DATA": str(outer / "data")}, "data-root")
    rc, _, stderr, result = evaluate(nested, tmp_path, monkeypatch, capsys)
    assert rc == 0 and result["extra"]["isolation"] == "bubblewrap", stderr
    rc, _, stderr, _ = evaluate(nested, tmp_path, monkeypatch, capsys, "--isolation", "none")
    assert rc == 1 and "LEAKED" in stderr  # the attempt is real
    # a model straight in the shared temporary folder is refused before it runs
    import tempfile

    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    in_tmp = write_model(shared, consts, "nothing")
    rc, _, stderr, result = evaluate(in_tmp, tmp_path, monkeypatch, capsys)
    assert rc == 1 and result is None and "put the submission in a folder of its own" in stderr


def test_unavailable_isolation_warns_or_refuses(world, tmp_path, monkeypatch, capsys):
    sub, consts = world
    spec = write_model(sub, consts, "nothing")
    monkeypatch.setattr(isolation, "probe", lambda: "bwrap is not installed (apt-get install bubblewrap)")
    rc, stdout, stderr, result = evaluate(spec, tmp_path, monkeypatch, capsys, "--isolation", "required")
    assert rc == 1 and result is None
    assert stderr.strip().splitlines() == ["error: --isolation required, but bwrap is not installed (apt-get install "
                                           "bubblewrap); the model was not run"]
    rc, stdout, stderr, result = evaluate(spec, tmp_path, monkeypatch, capsys)
    assert rc == 0, stderr
    warning = [ln for ln in stderr.splitlines() if "isolation" in ln]
    assert len(warning) == 1 and warning[0].startswith("warning: model runs without isolation: bwrap is not installed")
    assert result["extra"]["isolation"] == "none" and "isolation: none" in stdout


def test_bwrap_view_holds_only_what_the_worker_needs(tmp_path):
    """The command line itself: the data root, the home folder and the checkout are never bound."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "work").mkdir()
    argv = isolation.bwrap_command(["python"], tmp_path / "work", [sub], "cpu")
    binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")]
    assert "--unshare-all" in argv and "--die-with-parent" in argv and argv[-1] == "python"
    import mmbench

    checkout = Path(mmbench.__file__).resolve().parent.parent
    assert str(checkout) not in binds and str(checkout / "mmbench") in binds
    assert str(Path.home()) not in binds and "/" not in binds
    assert argv[argv.index("--bind") + 1] == str((tmp_path / "work").resolve())
    work = (tmp_path / "work").resolve()
    assert [b for b in binds if b.startswith(str(tmp_path))] == [str(sub.resolve()), str(work), str(work / "passwd"),
                                                                 str(work / "group")]


@needs_bwrap
def test_a_hung_isolated_model_is_stopped_with_its_children(tmp_path, monkeypatch, capsys):
    """The timeout kills bwrap; its PID namespace (the model and every child it started) goes with it."""
    marker = f"{os.getpid() % 1000 + 7000}.25"  # a sleep length no other process uses
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.py").write_text(textwrap.dedent(f'''
        import subprocess, time
        def build():
            subprocess.Popen(["sleep", "{marker}"])
            time.sleep(600)
        '''))

    def running() -> list[str]:
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and marker.encode() in (proc / "cmdline").read_bytes():
                    found.append(proc.name)
            except OSError:
                pass
        return found

    import threading
    import time

    seen, done = [], threading.Event()

    def watch() -> None:  # the child does start (seen from outside the sandbox)
        while not done.is_set() and not seen:
            seen.extend(running())
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        rc, _, err = run_main(["evaluate", TASK, "--model", f"{tmp_path / 'sub' / 'model.py'}:build", "--conditions",
                               "clean", "--timeout", "8"], monkeypatch, capsys)
    finally:
        done.set()
        watcher.join()
    assert rc == 1 and "timed out after 8 s" in err
    assert seen, "the hung model's child never started"
    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(), "a child of the hung model is still running"
