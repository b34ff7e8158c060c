"""Install smoke check, run once before any test is collected.

A broken install (a torchaudio build made for another torch, a torchvision whose operators do
not register) otherwise surfaces as dozens of unrelated failures deep in the suite. Here it
stops the run at once with one message naming the installed versions of the torch trio and
what to do.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

TRIO = ("torch", "torchvision", "torchaudio")


def _installed_versions() -> str:
    found = []
    for name in TRIO:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def install_problem() -> str | None:
    """What is wrong with the install, in one line; None when the trio and the CLI work."""
    try:
        import torch
        import torchaudio
        import torchvision
        from torchaudio import functional as AF
        from torchvision.io import decode_jpeg, encode_jpeg
        from torchvision.ops import nms

        # One compiled operator of each library: these are what a mismatched build breaks.
        image = torch.zeros((3, 8, 8), dtype=torch.uint8)
        decode_jpeg(encode_jpeg(image))
        nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1.0]), 0.5)
        AF.lfilter(torch.zeros(1, 16), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]))
        torchaudio.transforms.MelSpectrogram(sample_rate=8000, n_fft=64, n_mels=8)(torch.zeros(1, 256))
        del torchvision
    except Exception as exc:  # noqa: BLE001 - any failure here is an install problem
        first = (str(exc).splitlines() or [""])[0][:300]
        return f"the torch trio does not work together ({type(exc).__name__}: {first})"
    # The console script the install made, as a user runs it (python -m when run from a checkout).
    script = Path(sys.executable).with_name("mmbench")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mmbench.cli"]
    cli = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    if cli.returncode != 0:
        tail = (cli.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return f"the mmbench CLI does not start (exit {cli.returncode}: {tail})"
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    problem = install_problem()
    if problem:
        pytest.exit(
            f"install smoke check failed: {problem}. Installed: {_installed_versions()}. "
            "mmbench needs torch 2.11.0, torchvision 0.26.0 and torchaudio 2.11.0 (builds made for "
            "each other): make a fresh virtual environment and run README's install command "
            "(pip install -e \".[dev,pretrained]\"), which pins them.",
            returncode=3,
        )


@pytest.fixture
def one_thread():
    """Tiny models: thread start-up costs more than it saves on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
