"""Image-text retrieval recall@k with several captions per image (LAION CLIP_benchmark's COCO
metric) under uniformly random tie-breaking, chunk by chunk so the similarity matrix is never
formed.

**The tie rule.** recall@k is the expected value of the hit indicator when the candidates that
tie with a query's best relevant candidate are put in a uniformly random order (McSherry &
Najork 2008, "Computing information retrieval performance measures efficiently in the
presence of tied scores", ECIR: the average over all orderings of each tied group). Per query
three counts decide it for every k (:func:`expected_hits`): ``above`` g, the candidates scoring
strictly above the best relevant one; ``tied`` t, the candidates scoring exactly as it does
(relevant ones included, so t >= 1); ``relevant`` r, the relevant ones among those t. The
query is a hit iff some relevant candidate of the tied block lands in the first
``m = min(max(k - g, 0), t)`` places of the block; in a uniformly random order of the block the
number of relevant candidates among its first m places is hypergeometric (t items, r marked,
m drawn), so the expected hit is ``1 - C(t - r, m) / C(t, m)``; with one relevant candidate
(every text-to-image query) that is ``m / t``, i.e. ``min(max(k - g, 0), e + 1) / (e + 1)``
with e = t - 1 others tied. Relevant candidates scoring below the best relevant one never
matter (they come after the whole block).

**Copies always tie.** Before any score is computed, rows are deduplicated exactly (bit for bit,
after -0.0 is made +0.0), once as given and once after L2 normalisation: each distinct
candidate vector is one column, weighted by its number of copies, so a vector's copies share
one computed score and tie whatever the chunk size, device or BLAS kernel; vectors that differ
in one bit are different columns (and tie only if their computed scores are equal). Each
query's scores come from one row of one matrix product (its row against every distinct
candidate), so the comparisons of a query never mix two computations of a score.

Two paths compute the same counts: chunks of rows in torch (:func:`_row_counts`, any device;
text-to-image and image-to-text are two products, each row-complete, or on the CPU one product
of at most 1 GiB that both read) and, on CUDA with Triton,
:mod:`mmbench.evaluation.rank_kernel` (the comparisons fused into the matrix product: no
score is written to memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmbench.core.errors import DataError
from mmbench.evaluation.arrays import as_1d, to_numpy

__all__ = ["COUNT_KEYS", "expected_hits", "kernel_used", "recalls_from_counts", "retrieval_counts", "retrieval_metrics"]

COUNT_KEYS = ("above", "tied", "relevant")  # per query: see the module docstring


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


_BITS = {"float64": "int64", "float32": "int32", "float16": "int16", "bfloat16": "int16"}


def _unique_rows(t):
    """(distinct rows of `t`, row -> distinct row index): rows compared bit for bit. Rows are
    grouped by a hash of their bits first (fast); every row is then compared with its group's
    first row, and only if a hash collided are the rows sorted instead."""
    import torch

    bits = t.view(getattr(torch, _BITS[str(t.dtype).removeprefix("torch.")]))
    n = bits.shape[0]
    gen = torch.Generator().manual_seed(0)
    coef = torch.randint(-(2**62), 2**62, (bits.shape[1],), generator=gen, dtype=torch.int64).to(bits.device)
    hashes = (bits.to(torch.int64) * coef).sum(dim=1)  # wraps modulo 2**64
    _, inverse = torch.unique(hashes, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.int64, device=bits.device)
    first = first.scatter_reduce(0, inverse, torch.arange(n, device=bits.device), reduce="amin")
    if bool((bits.index_select(0, first).index_select(0, inverse) == bits).all()):
        return t.index_select(0, first), inverse
    u, inverse = torch.unique(bits, dim=0, return_inverse=True)  # a hash collision: sort the rows
    return u.view(t.dtype), inverse


def _embeddings(x: Any, name: str, device: Any, dtype: Any):
    """(distinct rows, L2-normalised; row -> distinct row (int64); copies per distinct row) of a
    2-D float array on `device`: finite (else a DataError naming the row), no zero row. Rows
    are deduplicated bit for bit as given (-0.0 read as +0.0) and again after normalisation."""
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
    finite = torch.isfinite(t).all(dim=1)
    if not bool(finite.all()):
        bad = int(torch.nonzero(~finite)[0, 0])
        raise DataError(f"{name}: row {bad} has a non-finite value")
    u, inverse = _unique_rows((t + 0.0).contiguous())  # x + 0.0: -0.0 becomes +0.0, all else unchanged
    norms = torch.linalg.vector_norm(u, dim=1)
    if not bool(torch.isfinite(norms).all()):
        # finite entries whose squares overflow: scale rows by their largest magnitude first
        u = u / u.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        norms = torch.linalg.vector_norm(u, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        bad = int(torch.nonzero(inverse == int(torch.nonzero(zero)[0, 0]))[0, 0])
        raise DataError(f"{name}: row {bad} is a zero vector (it cannot be L2-normalised)")
    u2, inverse2 = _unique_rows((u / norms[:, None] + 0.0).contiguous())
    inverse = inverse2[inverse]
    return u2.contiguous(), inverse, torch.bincount(inverse, minlength=u2.shape[0])


def expected_hits(above: Any, tied: Any, relevant: Any, k: int) -> np.ndarray:
    """Per query, the expected hit at `k` under uniformly random tie-breaking: with g = `above`,
    t = `tied` (relevant ones included) and r = `relevant` (among the tied),
    ``m = min(max(k - g, 0), t)`` places of the tied block are inside the top k, and the
    probability that at least one of the r relevant candidates is among them is
    ``1 - C(t - r, m) / C(t, m) = 1 - prod_{i < m} (t - r - i) / (t - i)`` (hypergeometric: no
    marked item in m draws without replacement from t items of which r are marked); ``m / t``
    when r = 1. float64."""
    g = np.asarray(above, dtype=np.int64)
    t = np.asarray(tied, dtype=np.int64)
    r = np.asarray(relevant, dtype=np.int64)
    if ((t < 1) | (r < 1) | (r > t) | (g < 0)).any():
        raise DataError("retrieval counts need above >= 0 and 1 <= relevant <= tied for every query")
    m = np.clip(k - g, 0, t)
    out = m / t
    several = np.flatnonzero((r > 1) & (m > 0))
    if several.size:
        ts, rs, ms = t[several].astype(np.float64), r[several].astype(np.float64), m[several]
        none = np.ones(several.size)
        for i in range(int(ms.max())):
            step = i < ms
            none[step] *= np.maximum(ts[step] - rs[step] - i, 0.0) / (ts[step] - i)
        out[several] = 1.0 - none
    return out


def recalls_from_counts(t2i: dict[str, Any], i2t: dict[str, Any], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``t2i_recall@k`` (mean over captions) and ``i2t_recall@k`` (mean over images) of the
    per-query counts (:data:`COUNT_KEYS`), and ``mean_recall`` (the six recalls' mean) when
    ``ks`` is (1, 5, 10) in any order."""
    ks = _check_ks(ks)
    out: dict[str, float] = {}
    for direction, counts in (("t2i", t2i), ("i2t", i2t)):
        for k in ks:
            out[f"{direction}_recall@{k}"] = float(np.mean(expected_hits(*(counts[c] for c in COUNT_KEYS), k)))
    if sorted(ks) == [1, 5, 10]:
        out["mean_recall"] = float(np.mean([out[f"{d}_recall@{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10)]))
    return out


_FULL_PRODUCT_BYTES = 2**30  # on the CPU, a product up to this size is computed once for both directions


def _row_counts(qu, qmap: np.ndarray, cu, w, rel, rel_w, cs: int, scores=None):
    """Per query (``qmap[q]``: its row of the distinct query rows `qu`) the counts against the
    distinct candidates `cu` (copies per candidate `w`, None when all are 1): the best score of
    its relevant candidates (``rel[q]``: candidate rows, -1 padding; ``rel_w[q]``: how many
    relevant copies each), the weighted number of candidates strictly above it and equal to it,
    and the relevant copies equal to it. Chunks of `cs` distinct query rows, one product each
    (``qu[a:b] @ cu.T``), or rows of `scores` (the whole product, computed once); every
    comparison of a query reads its own row of that product."""
    import torch

    device = qu.device
    n_q = len(qmap)
    order_np = np.argsort(qmap, kind="stable")
    sorted_rows = qmap[order_np]
    order = torch.from_numpy(order_np).to(device)
    qmap_t = torch.from_numpy(qmap).to(device)
    out = {key: torch.empty(n_q, dtype=torch.int64, device=device) for key in COUNT_KEYS}
    n_uq = qu.shape[0]
    # counts as sums of 0/1 floats, weighted by the copies: float32 is exact below 2**24 in all,
    # float64 below 2**53; on the CPU a matrix-vector product, elsewhere a product and a sum
    # (no TF32 rounding of the weights)
    exact32 = cu.shape[0] < 2**24 and (w is None or int(w.sum()) < 2**24)
    count_dtype = torch.float32 if exact32 else torch.float64
    wf = None if w is None else w.to(count_dtype)
    on_cpu = device.type == "cpu"
    buf = None if scores is not None else torch.empty((min(cs, n_uq), cu.shape[0]), dtype=qu.dtype, device=device)
    flags = torch.empty((min(cs, n_q), cu.shape[0]), dtype=count_dtype, device=device)
    for a in range(0, n_uq, cs):
        b = min(a + cs, n_uq)
        # rows of the whole product (a transposed one's copied into contiguous rows first: the
        # comparisons then read memory in order), or this chunk's product
        s = scores[a:b].contiguous() if scores is not None else torch.matmul(qu[a:b], cu.t(), out=buf[: b - a])
        lo, hi = np.searchsorted(sorted_rows, [a, b])
        for start in range(lo, hi, cs):
            stop = min(start + cs, hi)
            q = order[start:stop]
            sx = s if (hi - lo == b - a and stop - start == b - a) else s.index_select(0, qmap_t[q] - a)
            r, rw = rel[q], rel_w[q]
            own = sx.gather(1, r.clamp_min(0)).masked_fill_(r < 0, float("-inf"))
            best = own.amax(dim=1, keepdim=True)
            out["relevant"][q] = (rw * (own == best)).sum(dim=1)
            for key, compare in (("above", torch.gt), ("tied", torch.eq)):
                f = compare(sx, best, out=flags[: len(q)])  # 0/1 floats: their sums are exact
                out[key][q] = (f.sum(dim=1) if w is None else f @ wf if on_cpu else (f * wf).sum(dim=1)).to(torch.int64)
    return out


def _relevance(query_of: np.ndarray, cand_map: np.ndarray, n_queries: int):
    """(rel, rel_w): per query the distinct candidate rows relevant to it (padded with -1) and
    how many relevant candidates each stands for, from ``query_of[j]`` (the query candidate j
    is relevant to) and ``cand_map[j]`` (its distinct row)."""
    pairs, copies = np.unique(np.stack([query_of, cand_map], axis=1), axis=0, return_counts=True)
    per_query = np.bincount(pairs[:, 0], minlength=n_queries)
    width = int(per_query.max())
    slot = np.arange(len(pairs)) - np.repeat(np.cumsum(per_query) - per_query, per_query)
    rel = np.full((n_queries, width), -1, dtype=np.int64)
    rel_w = np.zeros((n_queries, width), dtype=np.int64)
    rel[pairs[:, 0], slot] = pairs[:, 1]
    rel_w[pairs[:, 0], slot] = copies
    return rel, rel_w


def retrieval_counts(
    image_embeddings: Any,
    caption_embeddings: Any,
    caption_image_index: Any,
    chunk_size: int = 4096,
    device: Any = None,
    dtype: Any = None,
    kernel: bool | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The per-query counts (:data:`COUNT_KEYS`, int64 arrays) of text-to-image retrieval (one
    per caption, its image the one relevant candidate) and image-to-text retrieval (one per
    image, its captions the relevant candidates): everything recall@k needs for any k under
    the tie rule of the module docstring. Arguments as :func:`retrieval_metrics`."""
    import torch

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

    img, img_map, img_copies = _embeddings(image_embeddings, "image_embeddings", device, dtype)
    cap, cap_map, cap_copies = _embeddings(caption_embeddings, "caption_embeddings", device, dtype)
    if img.shape[1] != cap.shape[1]:
        raise DataError(f"image_embeddings and caption_embeddings have different dimensions "
                        f"({img.shape[1]} vs {cap.shape[1]})")
    n_img, n_cap = len(img_map), len(cap_map)

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

    img_map_np, cap_map_np = img_map.cpu().numpy(), cap_map.cpu().numpy()
    # text -> image: queries are captions, the one relevant candidate the distinct row of its image
    t2i_rel = img_map_np[idx_np][:, None]
    # image -> text: queries are images, relevant candidates the distinct rows of their captions
    i2t_rel, i2t_rel_w = _relevance(idx_np, cap_map_np, n_img)
    directions = (("t2i", cap, cap_map_np, img, img_copies, t2i_rel, np.ones_like(t2i_rel)),
                  ("i2t", img, img_map_np, cap, cap_copies, i2t_rel, i2t_rel_w))
    use_kernel = _use_rank_kernel(kernel, device, dtype)
    if use_kernel:
        from mmbench.evaluation.rank_kernel import MAX_RELEVANT, kernel_counts

        use_kernel = i2t_rel.shape[1] <= MAX_RELEVANT
    out = {}
    with torch.no_grad():
        # on the CPU, a product that fits _FULL_PRODUCT_BYTES is computed once: text-to-image
        # reads its rows, image-to-text its columns (every score computed once, read by both)
        full = None
        if not use_kernel and device.type == "cpu" and cap.shape[0] * img.shape[0] * cap.element_size() <= _FULL_PRODUCT_BYTES:
            full = torch.matmul(cap, img.t())
        for name, qu, qmap, cu, copies, rel, rel_w in directions:
            w = None if bool((copies == 1).all()) else copies
            if use_kernel:
                got = kernel_counts(qu, qmap, cu, copies, rel, rel_w)
            else:
                scores = None if full is None else full if name == "t2i" else full.t()
                got = _row_counts(qu, qmap, cu, w, torch.from_numpy(rel).to(device), torch.from_numpy(rel_w).to(device),
                                  chunk_size, scores)
            out[name] = {key: got[key].cpu().numpy() for key in COUNT_KEYS}
    return out["t2i"], out["i2t"]


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
    """Image-text retrieval recall@k with several captions per image (CLIP_benchmark's COCO
    metric), ties broken uniformly at random in expectation.

    ``image_embeddings`` (n_images, d) and ``caption_embeddings`` (n_captions, d) are numpy
    arrays or torch tensors; both are L2-normalised here (zero rows are rejected), and the
    score of caption j and image i is the cosine ``caption_j . image_i``.
    ``caption_image_index[j]`` is the row of caption j's image; every image needs at least
    one caption.

    * ``t2i_recall@k``: over all captions, the expected share whose own image is among the
      top-k images for that caption.
    * ``i2t_recall@k``: over all images, the expected share for which at least one of its own
      captions is among the top-k captions for that image.
    * ``mean_recall``: mean of the six recalls, returned when ``ks`` is (1, 5, 10) in any order.

    Tie rule: recall@k is the expected value under a uniformly random order of the candidates
    that tie with the query's best relevant candidate. With g candidates strictly above it, t
    tied with it (itself included) and r relevant among those t, a query counts
    ``1 - C(t - r, m) / C(t, m)`` with ``m = min(max(k - g, 0), t)`` (hypergeometric: the chance
    that a random order of the tied block puts a relevant candidate among its first m places);
    with one relevant candidate, ``min(max(k - g, 0), t) / t``. Without ties (continuous
    embeddings) this is CLIP_benchmark's top-k membership. Copies of a vector always tie: rows
    are deduplicated bit for bit before scoring, so all copies share one computed score, at
    every ``chunk_size``, on every device and BLAS kernel; vectors one bit apart are distinct
    candidates. A missing modality's shared placeholder vector therefore earns nothing over
    chance among its copies.

    Computation is in torch, chunk by chunk (:func:`retrieval_counts`): for each direction,
    ``chunk_size`` distinct query rows are scored against every distinct candidate at once
    (extra memory O(chunk_size * candidates)), and each query's counts come from its own row
    of that product: no sorting. On the CPU, a similarity matrix of distinct rows of at most
    1 GiB is computed once and read by both directions; larger ones are never formed. ``device``
    (default: that of the input tensors, else the CPU) picks where it runs; ``dtype`` defaults
    to float32 (pass torch.float64 for double precision). ``chunk_size`` changes speed and
    memory; results only through the rounding of the products of distinct vectors.
    ``kernel``: on CUDA, for float32, with triton installed, the counts come from a Triton
    kernel that compares each score tile in registers and never writes a score
    (:mod:`mmbench.evaluation.rank_kernel`); ``None`` (default) uses it wherever it runs,
    ``False`` never, ``True`` insists (a DataError where it cannot run). Same rule and
    deduplication.
    """
    ks = _check_ks(ks)
    t2i, i2t = retrieval_counts(image_embeddings, caption_embeddings, caption_image_index, chunk_size, device, dtype,
                                kernel)
    return recalls_from_counts(t2i, i2t, ks)


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


