"""The fused retrieval kernel (mmbench.evaluation.rank_kernel): recall@k without writing scores.

On the CPU the Triton kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, numpy
underneath: tiny sizes only); on a CUDA device (benchmarks/gpu_session.sh i29) the same tests
also run it compiled. Every result is compared with the naive full-sort reference of
tests/test_metrics.py (the tie rule), on data whose scores are exact in any summation order
wherever ties are meant (entries +-1/2 or k/16), and with the chunked path's counts.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mmbench.evaluation.rank_kernel as rank_kernel
import mmbench.evaluation.retrieval as retrieval
from mmbench.core.errors import DataError
from mmbench.evaluation.retrieval import retrieval_counts, retrieval_metrics
from tests.test_metrics import _make_retrieval_data, _near_tie_data, _reference_retrieval

pytest.importorskip("triton", reason="triton is not installed (it comes with CUDA builds of torch): the fused "
                                     "retrieval kernel is not used without it, and these tests have nothing to run")

# Triton decides at import time whether its functions (tl.sum, tl.max, ... and the kernel) are
# interpreted: the interpreter run is a process started with TRITON_INTERPRET=1
# (test_the_interpreter_runs_these_tests); a CUDA machine also runs the compiled kernel here.
DEVICE = "cpu" if rank_kernel.interpreted() else "cuda" if torch.cuda.is_available() else None
kernel_test = pytest.mark.skipif(DEVICE is None, reason="no CUDA device: these run under TRITON_INTERPRET=1 in the "
                                                        "subprocess of test_the_interpreter_runs_these_tests")


@pytest.fixture
def device():
    return DEVICE


@pytest.mark.skipif(rank_kernel.interpreted(), reason="this process is the interpreter run")
def test_the_interpreter_runs_these_tests():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", __file__],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"\b8 passed", run.stdout) and "skipped" in run.stdout, run.stdout[-2000:]


def _check(img, cap, idx, ks, device, chunk=4096):
    want = _reference_retrieval(img, cap, idx, ks)
    got = retrieval_metrics(img, cap, idx, ks=ks, chunk_size=chunk, device=device, kernel=True)
    passes = retrieval_metrics(img, cap, idx, ks=ks, chunk_size=chunk, kernel=False)  # the chunked passes (CPU)
    assert {k: got[k] for k in want} == pytest.approx(want, abs=1e-12)
    assert got == passes
    return got


@kernel_test
@pytest.mark.parametrize("kind", ["continuous", "signs", "duplicates"])
def test_kernel_equals_the_full_sort_with_ties(device, kind):
    rng = np.random.default_rng(7)
    for case in range(3):
        n_img = int(rng.integers(1, 24))
        per_image = rng.integers(1, 4, n_img).tolist()
        ks = tuple(sorted(set(rng.integers(1, 12, 3).tolist())))
        img, cap, idx = _make_retrieval_data(n_img, per_image, 100 * case + 3, kind)
        _check(img, cap, idx, ks, device, chunk=int(rng.integers(1, 64)))


@kernel_test
def test_kernel_hand_worked_ties(device):
    # image 1: its own caption 1 (.8) ties with caption 2 (.8) -> 1/2 at k = 1
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    cap = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])
    got = retrieval_metrics(img, cap, [0, 1, 0], ks=(1, 2), device=device, kernel=True)
    assert got["i2t_recall@1"] == 0.75 and got["t2i_recall@1"] == pytest.approx(2 / 3)
    same = np.array([[1.0, 1.0], [1.0, 1.0]])  # every score ties
    assert retrieval_metrics(same, np.array([[1.0, 0.0], [1.0, 0.0]]), [0, 1], ks=(1,), device=device,
                             kernel=True) == {"t2i_recall@1": 0.5, "i2t_recall@1": 0.5}


@kernel_test
def test_kernel_exact_ties_and_copies(device):
    # captions copied onto other images and copied images: the kernel's counts are the chunked
    # path's, query by query
    img, cap, idx = _near_tie_data(seed=3, n_img=40)
    img[5:9] = img[0]
    got = _check(img, cap, idx, (1, 2, 5, 10), device, chunk=40)
    assert 0.0 < got["i2t_recall@1"] < got["i2t_recall@10"] <= 1.0
    for a, b in zip(retrieval_counts(img, cap, idx, device=device, kernel=True), retrieval_counts(img, cap, idx, kernel=False)):
        assert all(np.array_equal(a[k], b[k]) for k in a)


@kernel_test
def test_kernel_copies_of_continuous_vectors_tie(device):
    rng = np.random.default_rng(2)
    img = rng.standard_normal((30, 37)).astype(np.float32)
    img[10:20] = img[3]
    idx = np.repeat(np.arange(30), 2)
    cap = (img[idx] + 0.3 * rng.standard_normal((60, 37))).astype(np.float32)
    t2i, i2t = retrieval_counts(img, cap, idx, device=device, kernel=True)
    own_copy = np.isin(idx, [3] + list(range(10, 20)))
    assert (t2i["tied"][own_copy] == 11).all() and (t2i["tied"][~own_copy] == 1).all()


def test_dispatch_uses_the_kernel_only_where_it_runs(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not retrieval._use_rank_kernel(None, cpu, torch.float32)  # the CPU: the chunked pass
    assert not retrieval._use_rank_kernel(False, cuda, torch.float32)
    assert not retrieval._use_rank_kernel(None, cuda, torch.float64)  # float64 and half: the chunked passes
    assert not retrieval._use_rank_kernel(None, cuda, torch.float16)
    assert retrieval._use_rank_kernel(None, cuda, torch.float32)
    with pytest.raises(DataError, match="TRITON_INTERPRET"):
        retrieval_metrics(np.eye(3), np.eye(3), [0, 1, 2], kernel=True)
    monkeypatch.setattr(rank_kernel, "triton", None)  # as where triton is not installed
    assert not retrieval._use_rank_kernel(None, cuda, torch.float32)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else object())
    assert not retrieval._use_rank_kernel(None, cuda, torch.float32)
    # and the chunked pass answers as before
    img, cap, idx = _make_retrieval_data(6, [2] * 6, 0, "signs")
    assert {k: v for k, v in retrieval_metrics(img, cap, idx, ks=(1, 2)).items()} == pytest.approx(
        _reference_retrieval(img, cap, idx, (1, 2)), abs=1e-12)


@kernel_test
def test_the_benchmarks_kernel_checks_run(device):
    # benchmarks/retrieval.py's GPU-only checks (the kernel against the chunked pass, the tile
    # sweep) at toy sizes, so a GPU session does not meet their first Python error
    from benchmarks import Settings
    from benchmarks.retrieval import _kernel_checks

    before = dict(rank_kernel.DEFAULT_BLOCKS)
    try:
        rows = _kernel_checks(Settings(tiny=True, device=device, log=lambda m: None), dim=16, chunk=32)
    finally:
        rank_kernel.DEFAULT_BLOCKS.update(before)
    assert rows[0].exact is True and rows[1].extra["best"] in rows[1].extra["times"]

