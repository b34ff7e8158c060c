"""Image-text retrieval recall@k with several captions per image (LAION CLIP_benchmark's COCO
metric, with an explicit tie rule), chunk by chunk so the similarity matrix is never formed.

Three passes compute the same ranks: on the CPU :func:`_retrieval_pass` (cache-sized blocks,
the columns to look at picked on the host), on accelerators :func:`_retrieval_pass_fixed`
(fixed-shape ops only: no chunk waits for the host) and, on CUDA with Triton,
:mod:`mmbench.evaluation.rank_kernel` (the comparisons fused into the matrix product: no score
is ever written to memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmbench.core.errors import DataError
from mmbench.evaluation.arrays import as_1d, to_numpy

__all__ = ["kernel_used", "retrieval_metrics"]


def _check_ks(ks: Any) -> tuple[int, ...]:
    try:
        items = list(ks)
    except TypeError:
        raise DataError(f"ks must be a sequence of positive integers, got {ks!r}") from None
    if not items:
        raise DataError("ks must not be empty")
    out = []
    for k in items:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DataError(f"ks must be positive integers, got {k!r}")
        if int(k) not in out:
            out.append(int(k))
    return tuple(out)


def _embeddings(x: Any, name: str, device: Any, dtype: Any):
    """A 2-D float tensor on `device`, finite, rows L2-normalised (zero rows rejected)."""
    import torch

    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = to_numpy(x, name)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
            raise DataError(f"{name}: expected real numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array (rows x dimensions), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise DataError(f"{name}: is empty (shape {tuple(t.shape)})")
    if t.is_complex():
        raise DataError(f"{name}: expected real numbers, got {t.dtype}")
    t = t.to(device=device, dtype=dtype)
    norms = torch.linalg.vector_norm(t, dim=1)
    if not bool(torch.isfinite(norms).all()):  # a NaN or inf entry makes its row's norm non-finite
        finite = torch.isfinite(t).all(dim=1)
        if not bool(finite.all()):
            bad = int(torch.nonzero(~finite)[0, 0])
            raise DataError(f"{name}: row {bad} has a non-finite value")
        # finite entries whose squares overflow: scale rows by their largest magnitude first
        t = t / t.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        norms = torch.linalg.vector_norm(t, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        bad = int(torch.nonzero(zero)[0, 0])
        raise DataError(f"{name}: row {bad} is a zero vector (it cannot be L2-normalised)")
    return (t / norms[:, None]).contiguous()


def _matmul_unit_roundoff(dtype) -> float:
    """Unit roundoff of matrix products in `dtype` (float32 ones may run in TF32 or bfloat16)."""
    import torch

    u = torch.finfo(dtype).eps / 2
    if dtype == torch.float32:
        u = {"high": 2.0**-11, "medium": 2.0**-8}.get(torch.get_float32_matmul_precision(), u)
    return u


def _caption_score_brackets(cap, img, idx, cs, u_mm: float):
    """Per caption an interval [lo, hi] meant to contain its score with its own image as a
    product with unit roundoff `u_mm` computes it, from a separately computed estimate.

    Any dot product of length d computed in any order with unit roundoff u is within
    gamma_d = d u / (1 - d u) times sum|a_k b_k| (<= about 1 for unit rows) of the exact value;
    the bracket is the estimate +- twice the sum of both computations' bounds. Callers check
    the bracket against the exact scores afterwards, so results never depend on this bound,
    only the speed does. Infinite where the bound is useless (half precision, TF32)."""
    import torch

    d = img.shape[1]
    dtype, device = img.dtype, img.device
    u_out = torch.finfo(dtype).eps / 2
    est_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    u_est = torch.finfo(est_dtype).eps / 2
    if d * u_mm >= 0.05:
        inf = torch.full((cap.shape[0],), float("inf"), dtype=dtype, device=device)
        return -inf, inf
    gamma_mm, gamma_est = d * u_mm / (1 - d * u_mm), d * u_est / (1 - d * u_est)
    err = 2 * (gamma_mm + gamma_est + u_out) + d * torch.finfo(dtype).tiny
    est = torch.empty(cap.shape[0], dtype=est_dtype, device=device)
    for start in range(0, cap.shape[0], cs):
        ic = idx[start : start + cs]
        est[start : start + cs] = torch.linalg.vecdot(cap[start : start + cs].to(est_dtype),
                                                      img.index_select(0, ic).to(est_dtype))
    return (est - err).to(dtype), (est + err).to(dtype)


def _per_image_max(values, idx, n_img):
    import torch

    best = torch.full((n_img,), float("-inf"), dtype=values.dtype, device=values.device)
    return best.scatter_reduce(0, idx, values, reduce="amax", include_self=True)


def _own_score_brackets(cap, img, idx, cs):
    """Per image an interval [lo, hi] meant to contain the best score of its own captions as
    the chunked matrix product will compute it (the largest of its captions' brackets,
    :func:`_caption_score_brackets`)."""
    lo, hi = _caption_score_brackets(cap, img, idx, cs, _matmul_unit_roundoff(img.dtype))
    return _per_image_max(lo, idx, img.shape[0]), _per_image_max(hi, idx, img.shape[0])


def _count_true(mask, dim: int):
    """Exact number of True values along `dim` (0 or 1) of a 2-D bool tensor, as int32.

    Summing in uint8 over blocks of 255 rows (no overflow) and int16 along rows of at most
    32,767 avoids casting every element to int32 first, which costs several times more."""
    import torch

    v = mask.view(torch.uint8)
    if dim == 1:
        return v.sum(dim=1, dtype=torch.int16 if v.shape[1] <= 32767 else torch.int32).to(torch.int32)
    full = v.shape[0] // 255 * 255
    out = v[full:].sum(dim=0, dtype=torch.uint8).to(torch.int32)
    if full:
        out += v[:full].view(-1, 255, v.shape[1]).sum(dim=1, dtype=torch.uint8).sum(dim=0, dtype=torch.int32)
    return out


def _merge_band(top, s, cols, lo, hi, kmax):
    """Merge the scores of `s` inside [lo, hi] (per column) into the running top-kmax `top`,
    whose columns `cols` (None: all) are the columns of `s`. Overwrites `s` (no chunk-sized copy)."""
    import torch

    out = s < lo
    out |= s > hi
    vals = s.masked_fill_(out, float("-inf"))
    blk = vals.topk(min(kmax, vals.shape[0]), dim=0, sorted=False).values
    if cols is None:
        top.copy_(torch.cat([top, blk]).topk(kmax, dim=0, sorted=False).values)
    else:
        top[:, cols] = torch.cat([top[:, cols], blk]).topk(kmax, dim=0, sorted=False).values


def _retrieval_pass(cap, img_t, idx, lo, hi, kmax, cs, buf, gt, flags, own, t2i_rank, threads):
    """One pass over caption chunks. Fills `own` (own-image scores) and `t2i_rank` in place and
    returns, per image, the number of captions scoring above `hi` and the (up to) kmax largest
    caption scores inside [lo, hi] ((kmax, n_img), -inf where fewer, in any order). `gt`: a bool
    and `flags` (or None) a float32 buffer of a chunk's shape. `threads`: if set, the matrix
    products use that many threads (the caller set one for the rest)."""
    import torch

    n_cap, n_img = cap.shape[0], img_t.shape[1]
    dtype, device = buf.dtype, buf.device
    above = torch.zeros(n_img, dtype=torch.int64, device=device)
    top = torch.full((kmax, n_img), float("-inf"), dtype=dtype, device=device)
    for start in range(0, n_cap, cs):
        stop = min(start + cs, n_cap)
        b = stop - start
        if threads:
            torch.set_num_threads(threads)
        s = torch.matmul(cap[start:stop], img_t, out=buf[:b])        # (b, n_img) scores
        if threads:
            torch.set_num_threads(1)
        ic = idx[start:stop]
        o = s.gather(1, ic[:, None])                                     # own-image scores
        own[start:stop] = o[:, 0]
        # text -> image: rank = number of images scoring strictly higher than the own one
        if flags is not None:  # 0/1 floats: their row sums are exact and cheaper than counting bools
            t2i_rank[start:stop] = torch.gt(s, o, out=flags[:b]).sum(dim=1)
        else:
            t2i_rank[start:stop] = _count_true(torch.gt(s, o, out=gt[:b]), 1)
        # image -> text: per image, the captions scoring >= lo other than its own ones (these
        # are never above hi); usually few images have any, and only those are looked at
        g = torch.ge(s, lo, out=gt[:b])
        n_ge = _count_true(g, 0)
        n_ge.index_add_(0, ic, (o[:, 0] >= lo[ic]).to(torch.int32), alpha=-1)
        cols = n_ge.nonzero().squeeze(1)
        if cols.numel() == 0:
            continue
        if cols.numel() * 8 <= n_img:
            sub = s.index_select(1, cols)
            n_hi = (sub > hi[cols]).sum(dim=0, dtype=torch.int32)
            above.index_add_(0, cols, n_hi.to(torch.int64))
            band = (n_ge[cols] > n_hi).nonzero().squeeze(1)              # others inside [lo, hi]
            if band.numel():
                bc = cols[band]
                _merge_band(top, sub.index_select(1, band), bc, lo[bc], hi[bc], kmax)
            continue
        g = torch.gt(s, hi, out=gt[:b])
        n_hi = _count_true(g, 0)
        above += n_hi
        band = (n_ge > n_hi).nonzero().squeeze(1)
        if band.numel() * 8 <= n_img:
            if band.numel():
                _merge_band(top, s.index_select(1, band), band, lo[band], hi[band], kmax)
        else:
            _merge_band(top, s, None, lo, hi, kmax)
    return above, top


def _retrieval_pass_fixed(cap, img, idx, lo, hi, kmax, cs, buf, mask, own, t2i_rank):
    """:func:`_retrieval_pass` for accelerators: the same results from fixed-shape ops only,
    so no chunk waits for the host (the CPU pass picks the columns to look at with
    ``nonzero``, a device-to-host copy per chunk that stalled a 1M x 1M run on an H200).

    Scores are computed transposed, ``s[i, j] = image_i . caption_j`` of shape (n_img, b),
    so that the per-image reductions run along contiguous rows. Per image, the returned top
    holds the kmax largest scores not above `hi` (not only those inside [lo, hi]): the ones
    below lo are below the image's best own score (the caller checks lo <= best), so they
    never count in its rank. `buf` and `mask` are flat float and bool buffers of at least
    ``n_img * cs`` elements."""
    import torch

    n_cap, n_img = cap.shape[0], img.shape[0]
    above = torch.zeros(n_img, dtype=torch.int64, device=img.device)
    top = torch.full((n_img, kmax), float("-inf"), dtype=img.dtype, device=img.device)
    hi_col = hi[:, None]
    for start in range(0, n_cap, cs):
        stop = min(start + cs, n_cap)
        b = stop - start
        s = torch.matmul(img, cap[start:stop].t(), out=buf[: n_img * b].view(n_img, b))
        m = mask[: n_img * b].view(n_img, b)
        ic = idx[start:stop]
        o = s.gather(0, ic[None, :])                                     # (1, b) own-image scores
        own[start:stop] = o[0]
        t2i_rank[start:stop] = torch.gt(s, o, out=m).sum(dim=0)         # images strictly above the own one
        torch.gt(s, hi_col, out=m)
        above += m.sum(dim=1)
        s.masked_fill_(m, float("-inf"))
        blk = s.topk(min(kmax, b), dim=1, sorted=False).values
        top = torch.cat([top, blk], dim=1).topk(kmax, dim=1, sorted=False).values
    return above, top.t()


def _fixed_shape_passes(device) -> bool:
    """Whether retrieval_metrics runs :func:`_retrieval_pass_fixed` (everywhere but the CPU)."""
    return device.type != "cpu"


_CPU_BLOCK_BYTES = 32 * 2**20  # target size of one block of scores on the CPU
_FLOAT_COUNTS_BELOW = 2**24  # float32 sums of 0/1 flags are exact up to this many images


def retrieval_metrics(
    image_embeddings: Any,
    caption_embeddings: Any,
    caption_image_index: Any,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
    device: Any = None,
    dtype: Any = None,
    kernel: bool | None = None,
) -> dict[str, float]:
    """Image-text retrieval recall@k with several captions per image (CLIP_benchmark's COCO metric).

    ``image_embeddings`` (n_images, d) and ``caption_embeddings`` (n_captions, d) are numpy
    arrays or torch tensors; both are L2-normalised here (zero rows are rejected), and the
    score of caption j and image i is the cosine ``s[j, i] = caption_j . image_i``.
    ``caption_image_index[j]`` is the row of caption j's image; every image needs at least
    one caption.

    * ``t2i_recall@k``: over all captions, the share whose own image is among the top-k images
      for that caption.
    * ``i2t_recall@k``: over all images, the share for which at least one of its own captions
      is among the top-k captions for that image, i.e. whose best-scoring own caption is.
    * ``mean_recall``: mean of the six recalls, returned when ``ks`` is (1, 5, 10) in any order.

    Tie rule: the rank of an item is the number of candidates with a *strictly greater* score
    (0 = best), and it is a hit at k when rank < k. Candidates that tie with the item do not
    push it down (optimistic ties). With continuous embeddings ties practically never occur,
    and then this equals CLIP_benchmark's top-k membership; its ``topk`` breaks ties
    arbitrarily instead. Scores are compared exactly as computed (every score comes from the
    same chunked matrix product). Duplicated embeddings tie exactly when the product rounds
    identical rows identically, which BLAS kernels do not guarantee (float64 edge tiles on
    the CPU do not), so such ties can depend on ``chunk_size``.

    Computation is in torch, chunk by chunk over captions: each chunk of ``chunk_size``
    captions is scored against all images, and ranks come from counting strictly greater
    scores, with no sorting. A caption's own score is in its chunk. An image's best own-caption
    score is known exactly only after the last chunk, so an interval around it is computed
    first from the embeddings (a rounding-error bound of the dot products, ~2.4e-4 wide in
    float32 at 512 dimensions): chunks count the scores above the interval, and the few inside
    it (at most ``max(ks)`` per image) are kept and compared with the exact best own score at
    the end. Where the bound is too wide to help (half precision, float32 products in TF32),
    the ``max(ks)`` largest caption scores per image are kept instead; the interval is checked
    against the exact scores, and where it missed, the pass is repeated that way. Extra memory is O(chunk_size * n_images + max(ks) * n_images); the
    full similarity matrix is never formed. On the CPU, chunks are further capped at about
    32 MiB of scores, and only the matrix products use several threads: the memory-bound
    passes over the scores run on one (``torch.set_num_threads`` is restored on return).
    ``device`` (default: that of
    the input tensors, else the CPU) picks where it runs; ``dtype`` defaults to float32 (pass
    torch.float64 for double precision). ``chunk_size`` changes speed and memory, not results
    (up to floating-point rounding of the scores).
    ``kernel``: on CUDA, for float32, with triton installed, the ranks come from a Triton kernel
    that compares each score tile with the thresholds in registers and never writes a score
    (:mod:`mmbench.evaluation.rank_kernel`; extra memory O(n_captions + n_images), at most two
    passes of the product); ``None`` (default) uses it wherever it runs, ``False`` never,
    ``True`` insists (a DataError where it cannot run). Same tie rule, every score as that
    kernel computes it.
    """
    import torch

    ks = _check_ks(ks)
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise DataError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    if device is None:
        device = next((x.device for x in (image_embeddings, caption_embeddings) if isinstance(x, torch.Tensor)),
                      torch.device("cpu"))
    device = torch.device(device)
    dtype = torch.float32 if dtype is None else dtype
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise DataError(f"dtype must be a torch floating dtype, got {dtype!r}")

    img = _embeddings(image_embeddings, "image_embeddings", device, dtype)
    cap = _embeddings(caption_embeddings, "caption_embeddings", device, dtype)
    if img.shape[1] != cap.shape[1]:
        raise DataError(f"image_embeddings and caption_embeddings have different dimensions "
                        f"({img.shape[1]} vs {cap.shape[1]})")
    n_img, n_cap = img.shape[0], cap.shape[0]

    idx_np = as_1d(caption_image_index, "caption_image_index")
    if idx_np.dtype == np.bool_ or not np.issubdtype(idx_np.dtype, np.integer):
        if np.issubdtype(idx_np.dtype, np.floating) and np.isfinite(idx_np).all() and np.array_equal(np.round(idx_np), idx_np):
            idx_np = idx_np.astype(np.int64)
        else:
            raise DataError(f"caption_image_index: expected integer image rows, got dtype {idx_np.dtype}")
    if len(idx_np) != n_cap:
        raise DataError(f"caption_image_index has {len(idx_np)} entries but there are {n_cap} captions")
    lo, hi = int(idx_np.min()), int(idx_np.max())
    if lo < 0 or hi >= n_img:
        bad_value = lo if lo < 0 else hi
        raise DataError(f"caption_image_index: image row {bad_value} is out of range [0, {n_img})")
    idx_np = idx_np.astype(np.int64, copy=False)
    counts = np.bincount(idx_np, minlength=n_img)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        shown = ", ".join(str(int(i)) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(f"caption_image_index: {len(missing)} image(s) have no caption (rows {shown}); "
                        "image-to-text recall is undefined for them")
    idx = torch.from_numpy(np.ascontiguousarray(idx_np)).to(device)

    kmax = max(ks)
    if _use_rank_kernel(kernel, device, dtype):
        t2i_rank, i2t_rank = _kernel_ranks(cap, img, idx, kmax, min(chunk_size, n_cap))
        return _recalls(t2i_rank, i2t_rank, ks)
    t2i_rank = torch.empty(n_cap, dtype=torch.int64, device=device)
    own = torch.empty(n_cap, dtype=dtype, device=device)
    cs = min(chunk_size, n_cap)
    threads = torch.get_num_threads()
    serial_passes = False
    if device.type == "cpu":
        # On the CPU, blocks that mostly stay in the last-level cache make the passes over the
        # scores after the matrix product (comparisons, counts, gathers) cheaper ...
        cs = min(cs, max(64, _CPU_BLOCK_BYTES // (n_img * img.element_size())))
        # ... and those passes run on one thread: they are memory-bound, and on a busy
        # machine the thread synchronisation of each small parallel op costs more than it
        # saves. The matrix product keeps all threads; the setting is restored below.
        serial_passes = threads > 1
    fixed = _fixed_shape_passes(device)
    buf = torch.empty((cs, n_img), dtype=dtype, device=device)
    gt = torch.empty((cs, n_img), dtype=torch.bool, device=device)
    flags = (torch.empty((cs, n_img), dtype=torch.float32, device=device)
             if n_img < _FLOAT_COUNTS_BELOW and not fixed else None)
    img_t = img.t()
    with torch.no_grad():
        try:
            if serial_passes:
                torch.set_num_threads(1)
            lo, hi = _own_score_brackets(cap, img, idx, cs)
            for _ in range(2):
                if fixed:
                    above, top = _retrieval_pass_fixed(cap, img, idx, lo, hi, kmax, cs, buf.view(-1), gt.view(-1), own,
                                                       t2i_rank)
                else:
                    above, top = _retrieval_pass(cap, img_t, idx, lo, hi, kmax, cs, buf, gt, flags, own, t2i_rank,
                                                 threads if serial_passes else None)
                # best own-caption score of every image, exactly as the product computed it
                best = torch.full((n_img,), float("-inf"), dtype=dtype, device=device)
                best = best.scatter_reduce(0, idx, own, reduce="amax", include_self=True)
                if bool(((lo <= best) & (best <= hi)).all()):
                    break
                # the rounding bound did not hold (an unusual matmul backend): an infinite
                # bracket keeps the kmax largest of all scores instead, which is always exact
                lo = torch.full_like(lo, float("-inf"))
                hi = torch.full_like(hi, float("inf"))
        finally:
            if serial_passes:
                torch.set_num_threads(threads)
        # rank of the best own caption: captions above hi, plus those inside the bracket above
        # it (the kmax largest suffice: ranks are only compared with ks)
        i2t_rank = above + (top > best[None, :]).sum(dim=0)

    return _recalls(t2i_rank, i2t_rank, ks)


def _recalls(t2i_rank, i2t_rank, ks: tuple[int, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        out[f"t2i_recall@{k}"] = float((t2i_rank < k).double().mean())
    for k in ks:
        out[f"i2t_recall@{k}"] = float((i2t_rank < k).double().mean())
    if sorted(ks) == [1, 5, 10]:
        six = [out[f"{d}_recall@{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10)]
        out["mean_recall"] = float(np.mean(six))
    return out


def kernel_used(device: Any, dtype: Any = None) -> bool:
    """Whether :func:`retrieval_metrics` computes the ranks with the fused Triton kernel by
    default on `device` for `dtype` (default float32)."""
    import torch

    return _use_rank_kernel(None, torch.device(device), torch.float32 if dtype is None else dtype)


def _use_rank_kernel(kernel: bool | None, device, dtype) -> bool:
    """Whether the fused Triton kernel computes the ranks (None: wherever it runs)."""
    import importlib.util

    if kernel is False or (kernel is None and (device.type != "cuda" or importlib.util.find_spec("triton") is None)):
        return False
    from mmbench.evaluation.rank_kernel import usable

    if usable(device, dtype):
        return True
    if kernel:
        raise DataError(f"kernel=True: the fused retrieval kernel runs on CUDA (or the CPU under TRITON_INTERPRET=1) "
                        f"for float32 embeddings with triton installed, not on {device.type} in {dtype}")
    return False


def _kernel_ranks(cap, img, idx, kmax: int, cs: int):
    """Ranks from :func:`mmbench.evaluation.rank_kernel.kernel_ranks`, with its brackets."""
    from mmbench.evaluation.rank_kernel import input_precision, kernel_ranks, kernel_unit_roundoff

    precision = input_precision()
    lo, hi = _caption_score_brackets(cap, img, idx, cs, kernel_unit_roundoff(precision))
    n_img = img.shape[0]
    with_images = (_per_image_max(lo, idx, n_img), _per_image_max(hi, idx, n_img))
    t2i_rank, i2t_rank, _ = kernel_ranks(cap, img, idx, (lo, hi), with_images, kmax, cs, precision)
    return t2i_rank, i2t_rank
