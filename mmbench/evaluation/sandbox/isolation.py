"""Filesystem, process and network isolation of the sandbox worker, with bubblewrap.

`bwrap` (Debian/Ubuntu package ``bubblewrap``, the sandbox Flatpak uses) starts the worker in
new user, mount, PID, IPC, UTS, cgroup and network namespaces, with every capability dropped.
The worker's whole filesystem is built from scratch:

- ``/usr`` (and the ``/lib``, ``/bin`` ... links to it) read-only: the system libraries;
- the Python environment read-only: the virtual environment (``sys.prefix``), the interpreter
  it was made from (``sys.base_prefix``) and mmbench's own package folder (nothing else of the
  checkout it sits in);
- the submission read-only: a factory's folder (it may import its own modules), a ``.pt2``
  file, a weights file;
- a private, empty ``/tmp`` and the job's working directory (the pipe: inputs in, outputs out);
- a fresh ``/proc`` (its own PID namespace: the parent's processes are not there) and a
  minimal ``/dev`` (null, zero, random, urandom, tty, shm); for a CUDA run the NVIDIA device
  nodes and ``/sys`` read-only.

Nothing else exists inside: not the data root, not the home folder, not the leaderboard, not
``/etc`` (but for a one-user ``passwd`` and ``group``); the network namespace has only its own loopback, so no host or local port answers.

`resolve(mode)` turns the ``--isolation`` choice (``auto``, ``required``, ``none``) into the
isolation used: ``auto`` falls back to none, with a one-line warning, where bwrap is missing
or cannot create namespaces (a container started without them, for instance); ``required``
refuses then.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mmbench.core.errors import MMBenchError, SubmissionError

MODES = ("auto", "required", "none")
BUBBLEWRAP = "bubblewrap"
NONE = "none"
APT_PACKAGE = "bubblewrap"


@dataclass(frozen=True)
class Isolation:
    used: str  # "bubblewrap" or "none"
    warning: str | None = None  # one line when auto fell back to none


def _system_links() -> list[str]:
    """bwrap arguments recreating /lib, /lib64, /bin, /sbin as the host has them (links into /usr or folders)."""
    args: list[str] = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        p = Path(top)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), top]
        elif p.is_dir():
            args += ["--ro-bind", top, top]
    return args


def _base_args() -> list[str]:
    return ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev", "--ro-bind", "/usr", "/usr", *_system_links()]


@functools.lru_cache(maxsize=1)
def probe() -> str | None:
    """None when bwrap can start a process in new namespaces here; else why not, in words."""
    exe = shutil.which("bwrap")
    if exe is None:
        return f"bwrap is not installed (apt-get install {APT_PACKAGE})"
    try:
        proc = subprocess.run([exe, *_base_args(), "--", "/usr/bin/true"] if Path("/usr/bin/true").exists()
                              else [exe, *_base_args(), "--", "/bin/true"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run ({exc})"
    if proc.returncode != 0:
        why = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
        return f"bwrap cannot create namespaces here ({why})"
    return None


def resolve(mode: str) -> Isolation:
    """The isolation to use for ``--isolation MODE``; raises for ``required`` when unavailable."""
    if mode not in MODES:
        raise MMBenchError(f"--isolation {mode!r}: choose one of {', '.join(MODES)}")
    if mode == NONE:
        return Isolation(NONE, "warning: model runs without isolation (--isolation none): it can read your files and use the network")
    problem = probe()
    if problem is None:
        return Isolation(BUBBLEWRAP)
    if mode == "required":
        raise SubmissionError(f"--isolation required, but {problem}; the model was not run")
    return Isolation(NONE, f"warning: model runs without isolation: {problem}; it can read your files and use the "
                           "network (--isolation required refuses instead)")


def _real(p: str | Path) -> Path:
    return Path(os.path.realpath(p))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_submission_folder(folder: Path) -> None:
    """Refuse to show the worker a folder that holds the home folder or is a shared temporary folder."""
    import tempfile

    folder = _real(folder)
    shared = {Path("/"), _real(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")}
    if folder in shared or _inside(_real(Path.home()), folder):
        raise SubmissionError("the submission's folder is shared with other files (a temporary folder, the home folder); "
                              "put the submission in a folder of its own (it is shown to the model, read-only)", folder)


def hidden_inside(readable: list[Path], denied: dict[str, Path]) -> list[Path]:
    """The denied folders (the data root, the leaderboard) that lie inside a readable folder:
    the worker gets an empty folder in their place."""
    out = []
    for path in denied.values():
        rp = _real(path)
        if rp.is_dir() and any(_inside(rp, _real(r)) for r in readable):
            out.append(rp)
    return out


def python_paths() -> list[Path]:
    """What the worker needs to run Python and mmbench: the environment and mmbench's package folder."""
    import mmbench

    paths = [_real(sys.prefix), _real(sys.base_prefix), _real(Path(sys.executable).parent)]
    paths.append(_real(Path(mmbench.__file__).parent))
    out: list[Path] = []
    for p in paths:
        if not p.exists() or _inside(p, Path("/usr")) or any(_inside(p, q) for q in out):
            continue
        out = [q for q in out if not _inside(q, p)] + [p]
    return out


def _gpu_args() -> list[str]:
    args = []
    for dev in sorted(Path("/dev").glob("nvidia*")):
        args += ["--dev-bind-try", str(dev), str(dev)]
    if args:
        args += ["--ro-bind-try", "/sys", "/sys"]
    return args


def bwrap_command(argv: list[str], workdir: Path, readable: list[Path], device: str,
                  hidden: list[Path] | None = None) -> list[str]:
    """The command running `argv` in the worker's view: `readable` (files or folders) read-only,
    `workdir` writable (and the working directory), `hidden` folders inside those empty,
    everything else absent."""
    exe = shutil.which("bwrap")
    if exe is None:
        raise SubmissionError(f"bwrap is not installed (apt-get install {APT_PACKAGE})")
    args = [exe, *_base_args()]
    for p in python_paths():
        args += ["--ro-bind", str(p), str(p)]
    for p in readable:
        rp = _real(p)  # the job names resolved paths
        args += ["--ro-bind", str(rp), str(rp)]
    for h in hidden or []:
        args += ["--tmpfs", str(h), "--remount-ro", str(h)]
    if device.startswith("cuda"):
        args += _gpu_args()
    wd = _real(workdir)
    args += ["--bind", str(wd), str(wd), "--chdir", str(wd)]
    # a one-user /etc/passwd and /etc/group: torch looks the user up (getpass.getuser) when loading a program
    uid, gid = os.getuid(), os.getgid()
    (wd / "passwd").write_text(f"sandbox:x:{uid}:{gid}:mmbench sandbox:{wd}:/bin/false\n")
    (wd / "group").write_text(f"sandbox:x:{gid}:\n")
    args += ["--ro-bind", str(wd / "passwd"), "/etc/passwd", "--ro-bind", str(wd / "group"), "/etc/group", "--"]
    return args + argv
