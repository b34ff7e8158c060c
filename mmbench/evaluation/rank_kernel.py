"""Retrieval counts with the comparisons fused into the matrix product: a Triton kernel that
never writes a score to memory.

:func:`mmbench.evaluation.retrieval.retrieval_counts` needs, per query (a caption for
text-to-image, an image for image-to-text), the best score of its relevant candidates and the
number of candidate copies scoring strictly above it and exactly equal to it (the tie rule of
:mod:`mmbench.evaluation.retrieval`). Each program of :func:`_row_counts_kernel` owns a block
of query rows and walks over every block of (distinct, deduplicated) candidate columns,
computing a score tile in registers (``tl.dot``) and comparing it there; per-row counts stay
in registers, so there are no atomics. Two launches of the same compiled kernel:

1. ``counting = 0``: only the tiles that hold a relevant column of one of the block's rows are
   computed, and each relevant score is stored as computed (``own[q, r]``);
2. ``counting = 1``: every tile, its scores compared with each row's best relevant score (the
   maximum of ``own[q, :]``): weighted counts ``>`` and ``==``.

The same compiled kernel computes the same tile with the same instructions in both launches,
so the scores compared in launch 2 are bit for bit those stored in launch 1. Candidate copies
were merged before the kernel runs (one column, weighted by its copies), so they always tie.
Memory is O(queries x relevant per query) besides the inputs.

Dispatch (:func:`usable`): on CUDA for float32 embeddings when ``triton`` imports (and at most
:data:`MAX_RELEVANT` distinct relevant candidates per query, else the chunked path);
``TRITON_INTERPRET=1`` runs the same kernel on the CPU (Triton's interpreter, for tests). The
float32 products follow ``torch.get_float32_matmul_precision()``: "highest" -> IEEE float32
(``input_precision="ieee"``), "high" -> three TF32 products ("tf32x3", about float32's
accuracy), "medium" -> TF32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

try:  # an optional dependency: CUDA builds of torch bring it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None

__all__ = ["MAX_RELEVANT", "Blocks", "interpreted", "kernel_counts", "usable"]

MAX_RELEVANT = 32  # distinct relevant candidates per query the kernel takes (else the chunked path)


@dataclass(frozen=True)
class Blocks:
    """Tile shape and launch settings: BM captions x BN images, BK dimensions per step."""

    bm: int = 128
    bn: int = 128
    bk: int = 32
    warps: int = 8
    stages: int = 3


# Chosen without a GPU to measure on (benchmarks/gpu_session.sh i29 sweeps them): 128 x 128 tiles
# suit the tensor-core products (tf32, tf32x3); IEEE float32 runs on the FMA units, where smaller
# tiles keep the accumulator in registers.
DEFAULT_BLOCKS = {"ieee": Blocks(64, 128, 32, 8, 3), "tf32x3": Blocks(), "tf32": Blocks()}
INTERPRETER_BLOCKS = Blocks(16, 16, 16, 1, 1)  # the interpreter is slow: small tiles, small tests


def interpreted() -> bool:
    """Triton runs its interpreter (on the CPU) instead of compiling: ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the kernel can run here: triton importable, float32, and CUDA (or the interpreter
    on the CPU)."""
    if triton is None or dtype != torch.float32:
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreted())


def input_precision() -> str:
    """The kernel's float32 product, following torch's float32 matmul precision setting."""
    return {"highest": "ieee", "high": "tf32x3", "medium": "tf32"}[torch.get_float32_matmul_precision()]


if triton is not None:

    @triton.jit
    def _row_counts_kernel(q, c, w, rel, best, own, above, tied, n_q, n_c, counting,
                           D: tl.constexpr, R: tl.constexpr, NCB: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                           BK: tl.constexpr, PRECISION: tl.constexpr):
        """Program p: query rows ``p*BM ...`` against every candidate block. ``counting == 0``:
        store the score of each relevant column ``rel[row, r]`` (-1: none) into
        ``own[row, r]``, computing only the tiles that hold one. Else: per row, the summed
        weights ``w`` of the columns scoring ``> best[row]`` into above and ``== best[row]``
        into tied. Loop bounds are compile-time constants (loops Triton's interpreter can run)."""
        pid = tl.program_id(0)
        rows = pid * BM + tl.arange(0, BM)
        row_ok = rows < n_q
        rows64 = rows.to(tl.int64)
        thr = tl.load(best + rows, mask=row_ok, other=0.0)
        n_above = tl.zeros([BM], dtype=tl.int32)
        n_tied = tl.zeros([BM], dtype=tl.int32)
        for cb in range(0, NCB):
            cols = cb * BN + tl.arange(0, BN)
            col_ok = cols < n_c
            valid = row_ok[:, None] & col_ok[None, :]
            need = counting
            for r in tl.static_range(R):
                rc = tl.load(rel + rows64 * R + r, mask=row_ok, other=-1)
                need += tl.sum(((cols[None, :] == rc[:, None]) & valid).to(tl.int32))
            if need > 0:
                acc = tl.zeros([BM, BN], dtype=tl.float32)
                for k0 in range(0, D, BK):
                    ks = k0 + tl.arange(0, BK)
                    k_ok = ks < D
                    a = tl.load(q + rows64[:, None] * D + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                    bt = tl.load(c + cols.to(tl.int64)[None, :] * D + ks[:, None], mask=k_ok[:, None] & col_ok[None, :],
                                 other=0.0)
                    acc = tl.dot(a, bt, acc, input_precision=PRECISION)
                if counting == 0:
                    for r in tl.static_range(R):
                        rc = tl.load(rel + rows64 * R + r, mask=row_ok, other=-1)
                        hit = (cols[None, :] == rc[:, None]) & valid
                        found = tl.sum(hit.to(tl.int32), axis=1) > 0
                        tl.store(own + rows64 * R + r, tl.max(tl.where(hit, acc, float("-inf")), axis=1),
                                 mask=row_ok & found)
                else:
                    wv = tl.load(w + cols, mask=col_ok, other=0)
                    n_above += tl.sum(tl.where((acc > thr[:, None]) & valid, wv[None, :], 0), axis=1)
                    n_tied += tl.sum(tl.where((acc == thr[:, None]) & valid, wv[None, :], 0), axis=1)
        if counting != 0:
            tl.store(above + rows, n_above, mask=row_ok)
            tl.store(tied + rows, n_tied, mask=row_ok)


def kernel_counts(qu: Tensor, qmap: Any, cu: Tensor, copies: Tensor, rel: Any, rel_w: Any,
                  blocks: Blocks | None = None) -> dict[str, Tensor]:
    """Per query ``{"above", "tied", "relevant"}`` (int64) for L2-normalised float32 distinct
    query rows `qu` (query q is row ``qmap[q]``) against the distinct candidates `cu`, with
    `copies` per candidate; `rel` / `rel_w` (numpy, [queries, R]) the relevant candidate rows
    of each query (-1 padding) and how many relevant copies each stands for. The counts of
    :func:`mmbench.evaluation.retrieval.retrieval_counts`."""
    if triton is None:
        raise RuntimeError("the fused retrieval kernel needs the triton package")
    precision = input_precision()
    blocks = blocks or (INTERPRETER_BLOCKS if interpreted() else DEFAULT_BLOCKS[precision])
    device = qu.device
    q = qu.index_select(0, torch.from_numpy(qmap).to(device)).to(torch.float32).contiguous()
    c = cu.to(torch.float32).contiguous()
    n_q, n_c, width = q.shape[0], c.shape[0], rel.shape[1]
    rel_t = torch.from_numpy(rel).to(device=device, dtype=torch.int32).contiguous()
    w = copies.to(device=device, dtype=torch.int32).contiguous()
    own = torch.full((n_q, width), float("-inf"), dtype=torch.float32, device=device)
    above = torch.zeros(n_q, dtype=torch.int32, device=device)
    tied = torch.zeros(n_q, dtype=torch.int32, device=device)
    extra: dict[str, Any] = {} if interpreted() else {"num_warps": blocks.warps, "num_stages": blocks.stages}
    grid = (triton.cdiv(n_q, blocks.bm),)

    def launch(counting: int, best: Tensor) -> None:
        _row_counts_kernel[grid](q, c, w, rel_t, best, own, above, tied, n_q, n_c, counting, D=q.shape[1], R=width,
                                 NCB=triton.cdiv(n_c, blocks.bn), BM=blocks.bm, BN=blocks.bn, BK=blocks.bk,
                                 PRECISION=precision, **extra)

    launch(0, torch.zeros(n_q, dtype=torch.float32, device=device))
    best = own.amax(dim=1)
    relevant = (torch.from_numpy(rel_w).to(device) * (own == best[:, None])).sum(dim=1)
    launch(1, best.contiguous())
    return {"above": above.to(torch.int64), "tied": tied.to(torch.int64), "relevant": relevant.to(torch.int64)}
