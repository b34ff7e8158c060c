"""Recall@k ranks with the comparisons fused into the matrix product: a Triton kernel that never
writes a score to memory.

:func:`mmbench.evaluation.retrieval.retrieval_metrics` needs, per caption, the number of images
scoring strictly above its own image and, per image, the number of captions scoring strictly
above its best own caption. The chunked passes write each block of scores once (the matrix
product) and then read and write it several times more (comparisons, counts, a masked fill, a
top-k); at 1M x 1M that traffic, not the product, sets the pace. Here each program of
:func:`_rank_counts_kernel` owns a block of images and walks over blocks of captions: it computes
a score tile in registers (``tl.dot``), compares it with per-caption and per-image thresholds
and adds up the counts -- per image in registers, per caption with one atomic add per row and
tile. Memory is O(n_captions + n_images) besides the inputs.

Exactness with the same tie rule as the chunked passes (rank = number of *strictly* greater
scores, every score as this kernel computes it) in at most two passes:

1. thresholds: a bracket ``[lo, hi]`` around each caption's own score and each image's best
   own score, from separately computed dot products and a rounding-error bound (the caller's,
   as for the chunked passes). The kernel counts, per caption and per image, the scores
   ``> hi`` and ``>= lo``, and stores every caption's own score exactly as it computed it.
   A caption is settled when its own score lies in its bracket and either ``>= kmax`` scores
   are above the bracket (its rank is at least kmax: a miss at every k) or no other score
   falls inside it (its rank is the count above). An image likewise, with its own captions'
   scores inside the bracket discounted.
2. the rest, exactly: the kernel runs again over the tiles of the unsettled captions' blocks
   (against all images) and the unsettled images' blocks (against all captions) with the
   exact thresholds from pass 1 (the own score, the best own score), counting ``>``. The same
   compiled kernel computes the same tiles, so its scores are bit for bit those of pass 1.

With continuous embeddings pass 2 touches a handful of blocks; with many exact ties (or a
useless bound) it redoes the product for the blocks concerned, never more than once.

Dispatch (:func:`usable`): on CUDA for float32 embeddings when ``triton`` imports;
``TRITON_INTERPRET=1`` runs the same kernel on the CPU (Triton's interpreter, for tests).
The float32 products follow ``torch.get_float32_matmul_precision()``: "highest" -> IEEE
float32 (``input_precision="ieee"``), "high" -> three TF32 products ("tf32x3", about float32's
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

__all__ = ["Blocks", "interpreted", "kernel_ranks", "kernel_unit_roundoff", "usable"]


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


def kernel_unit_roundoff(precision: str) -> float:
    """Unit roundoff of one product-and-add in the kernel (for the rounding-error brackets):
    IEEE float32 2**-24; three TF32 products drop the low x low term, about 2**-21 (taken as
    2**-20); one TF32 product keeps 10 mantissa bits, 2**-11."""
    return {"ieee": 2.0**-24, "tf32x3": 2.0**-20, "tf32": 2.0**-11}[precision]


if triton is not None:

    @triton.jit
    def _rank_counts_kernel(cap, img, idx, c_hi, c_lo, i_hi, i_lo, c_above, c_ge, i_above, i_ge, own,
                            cblocks, iblocks, n_cap, n_img, n_cblocks,
                            D: tl.constexpr, NCB: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                            PRECISION: tl.constexpr):
        """Program p: images of block ``iblocks[p]`` against the captions of blocks
        ``cblocks[0:NCB]`` (entries >= n_cblocks are padding, skipped). Per caption row
        (atomically): scores ``> c_hi`` into c_above, ``>= c_lo`` into c_ge; per image (its own
        counters, added to): ``> i_hi`` into i_above, ``>= i_lo`` into i_ge; a caption's score
        with its own image ``idx[row]`` into own. Loop bounds are compile-time constants (the
        same code for every launch, and loops Triton's interpreter can run)."""
        pid = tl.program_id(0)
        cols = tl.load(iblocks + pid) * BN + tl.arange(0, BN)
        col_ok = cols < n_img
        ihi = tl.load(i_hi + cols, mask=col_ok, other=0.0)
        ilo = tl.load(i_lo + cols, mask=col_ok, other=0.0)
        n_above = tl.zeros([BN], dtype=tl.int32)
        n_ge = tl.zeros([BN], dtype=tl.int32)
        for b in range(0, NCB):
            block = tl.load(cblocks + b)
            if block < n_cblocks:
                rows = block * BM + tl.arange(0, BM)
                row_ok = rows < n_cap
                acc = tl.zeros([BM, BN], dtype=tl.float32)
                for k0 in range(0, D, BK):
                    ks = k0 + tl.arange(0, BK)
                    k_ok = ks < D
                    # 64-bit offsets: n x d passes 2**31 from about 8M rows of 256
                    a = tl.load(cap + rows.to(tl.int64)[:, None] * D + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                                other=0.0)
                    bt = tl.load(img + cols.to(tl.int64)[None, :] * D + ks[:, None], mask=k_ok[:, None] & col_ok[None, :],
                                 other=0.0)
                    acc = tl.dot(a, bt, acc, input_precision=PRECISION)
                valid = row_ok[:, None] & col_ok[None, :]
                chi = tl.load(c_hi + rows, mask=row_ok, other=0.0)
                clo = tl.load(c_lo + rows, mask=row_ok, other=0.0)
                tl.atomic_add(c_above + rows, tl.sum(((acc > chi[:, None]) & valid).to(tl.int32), axis=1), mask=row_ok)
                tl.atomic_add(c_ge + rows, tl.sum(((acc >= clo[:, None]) & valid).to(tl.int32), axis=1), mask=row_ok)
                n_above += tl.sum(((acc > ihi[None, :]) & valid).to(tl.int32), axis=0)
                n_ge += tl.sum(((acc >= ilo[None, :]) & valid).to(tl.int32), axis=0)
                own_col = tl.load(idx + rows, mask=row_ok, other=-1)
                hit = (cols[None, :] == own_col[:, None]) & valid
                mine = tl.max(tl.where(hit, acc, float("-inf")), axis=1)
                tl.store(own + rows, mine, mask=row_ok & (tl.sum(hit.to(tl.int32), axis=1) > 0))
        tl.store(i_above + cols, tl.load(i_above + cols, mask=col_ok, other=0) + n_above, mask=col_ok)
        tl.store(i_ge + cols, tl.load(i_ge + cols, mask=col_ok, other=0) + n_ge, mask=col_ok)


def _launch(cap: Tensor, img: Tensor, idx: Tensor, thresholds: tuple[Tensor, Tensor, Tensor, Tensor],
            counts: tuple[Tensor, Tensor, Tensor, Tensor], own: Tensor, cblocks: Tensor, iblocks: Tensor,
            per_launch: int, blocks: Blocks, precision: str) -> None:
    """The kernel over the tiles cblocks x iblocks, `per_launch` caption blocks per launch (a
    chunk of captions stays in the L2 cache while every image block passes over it); the last
    launch's list is padded with a block number past the end, which the kernel skips."""
    c_hi, c_lo, i_hi, i_lo = thresholds
    c_above, c_ge, i_above, i_ge = counts
    n_cblocks = triton.cdiv(cap.shape[0], blocks.bm)
    extra: dict[str, Any] = {} if interpreted() else {"num_warps": blocks.warps, "num_stages": blocks.stages}
    for start in range(0, len(cblocks), per_launch):
        chunk = cblocks[start : start + per_launch]
        if len(chunk) < per_launch:
            chunk = torch.cat([chunk, chunk.new_full((per_launch - len(chunk),), n_cblocks)])
        _rank_counts_kernel[(len(iblocks),)](
            cap, img, idx, c_hi, c_lo, i_hi, i_lo, c_above, c_ge, i_above, i_ge, own, chunk, iblocks,
            cap.shape[0], img.shape[0], n_cblocks, D=cap.shape[1], NCB=per_launch, BM=blocks.bm, BN=blocks.bn,
            BK=blocks.bk, PRECISION=precision, **extra)


def kernel_ranks(cap: Tensor, img: Tensor, idx: Tensor, caption_brackets: tuple[Tensor, Tensor],
                 image_brackets: tuple[Tensor, Tensor], kmax: int, chunk_size: int, precision: str,
                 blocks: Blocks | None = None) -> tuple[Tensor, Tensor, dict[str, int]]:
    """(t2i ranks per caption, i2t ranks per image, pass statistics) for L2-normalised float32
    `cap` (n_cap, d) and `img` (n_img, d), both contiguous, and caption -> image rows `idx`.

    `caption_brackets` (lo, hi) per caption and `image_brackets` per image are meant to contain
    the own score / the best own score as the kernel computes it (results never depend on
    them, only the work of pass 2 does). Ranks of at least `kmax` may be reported as any value
    >= kmax. The statistics: caption and image blocks that pass 2 recomputed."""
    if triton is None:
        raise RuntimeError("the fused retrieval kernel needs the triton package")
    blocks = blocks or (INTERPRETER_BLOCKS if interpreted() else DEFAULT_BLOCKS[precision])
    device = cap.device
    n_cap, n_img = cap.shape[0], img.shape[0]
    idx32 = idx.to(torch.int32)
    c_lo, c_hi = (t.to(torch.float32).contiguous() for t in caption_brackets)
    i_lo, i_hi = (t.to(torch.float32).contiguous() for t in image_brackets)
    all_c = torch.arange(triton.cdiv(n_cap, blocks.bm), dtype=torch.int32, device=device)
    all_i = torch.arange(triton.cdiv(n_img, blocks.bn), dtype=torch.int32, device=device)
    # caption blocks per launch: the same for every launch of both passes (one compiled kernel)
    per_launch = max(1, min(chunk_size // blocks.bm, len(all_c)))

    def zeros(n: int) -> Tensor:
        return torch.zeros(n, dtype=torch.int32, device=device)

    # pass 1: counts against the brackets, and every caption's own score as computed here
    own = torch.full((n_cap,), float("-inf"), dtype=torch.float32, device=device)
    c_above, c_ge, i_above, i_ge = zeros(n_cap), zeros(n_cap), zeros(n_img), zeros(n_img)
    _launch(cap, img, idx32, (c_hi, c_lo, i_hi, i_lo), (c_above, c_ge, i_above, i_ge), own, all_c, all_i,
            per_launch, blocks, precision)
    best = torch.full((n_img,), float("-inf"), dtype=torch.float32, device=device)
    best = best.scatter_reduce(0, idx, own, reduce="amax", include_self=True)
    # a caption: its own score inside its bracket (counted in c_ge, not in c_above), and either
    # kmax or more above it or nothing else inside the bracket
    c_done = (c_lo <= own) & (own <= c_hi) & ((c_above >= kmax) | (c_ge - c_above == 1))
    # an image: its best own score inside its bracket (so no own caption is above the
    # bracket), and either kmax or more other captions above it or none inside it
    own_inside = zeros(n_img).index_add_(0, idx, (own >= i_lo[idx]).to(torch.int32))
    i_done = (i_lo <= best) & (best <= i_hi) & ((i_above >= kmax) | (i_ge - i_above - own_inside == 0))
    t2i, i2t = c_above.to(torch.int64), i_above.to(torch.int64)
    stats = {"caption_blocks_redone": 0, "image_blocks_redone": 0}
    never = torch.full_like(c_lo, float("inf"))
    # pass 2, where needed (one host read each): exact thresholds, "strictly greater" counts
    redo_c = torch.unique(torch.nonzero(~c_done).squeeze(1) // blocks.bm).to(torch.int32)
    if redo_c.numel():
        scratch = (zeros(n_cap), zeros(n_img), zeros(n_img))
        above = zeros(n_cap)
        _launch(cap, img, idx32, (own, never, i_hi, i_lo), (above, scratch[0], scratch[1], scratch[2]),
                torch.empty_like(own), redo_c, all_i, per_launch, blocks, precision)
        t2i = torch.where(c_done, t2i, above.to(torch.int64))
        stats["caption_blocks_redone"] = int(redo_c.numel())
    redo_i = torch.unique(torch.nonzero(~i_done).squeeze(1) // blocks.bn).to(torch.int32)
    if redo_i.numel():
        above = zeros(n_img)
        _launch(cap, img, idx32, (c_hi, c_lo, best, torch.full_like(best, float("inf"))),
                (zeros(n_cap), zeros(n_cap), above, zeros(n_img)), torch.empty_like(own), all_c, redo_i, per_launch,
                blocks, precision)
        i2t = torch.where(i_done, i2t, above.to(torch.int64))
        stats["image_blocks_redone"] = int(redo_i.numel())
    return t2i, i2t, stats
