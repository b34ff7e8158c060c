"""Case 5: decoding COCO JPEGs.

* mmbench side: :func:`decode_batch` -- read the files, then ``torchvision.io.decode_jpeg`` on
  the whole list (nvJPEG batched decode on a GPU); on a CPU the list is decoded by a thread
  pool (libjpeg-turbo releases the GIL), one thread per core.
* reference: PIL one image at a time, ``Image.open(p).convert("RGB")`` to a CHW uint8 tensor
  (``torchvision.transforms.functional.pil_to_tensor``).

Both produce full-resolution RGB uint8 (grayscale images expanded to 3 channels). Exactness on
the CPU: every image identical to PIL's (both use libjpeg-turbo); on a GPU nvJPEG's IDCT and
chroma upsampling differ from libjpeg's by a few levels, so only the difference is reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from benchmarks import Row, Settings, interleaved


def decode_batch(paths: Sequence[str | os.PathLike], device: str = "cpu", threads: int | None = None) -> list[torch.Tensor]:
    """RGB uint8 [3, H, W] for each JPEG in `paths`, batched: one ``decode_jpeg`` call on a list
    (on `device`); on the CPU split over `threads` worker threads (default: one per core)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    data = [read_file(str(p)) for p in paths]
    if str(device).startswith("cuda"):
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    threads = threads or min(len(data), os.cpu_count() or 1)
    if threads <= 1 or len(data) < 2:
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    parts = [data[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        decoded = list(pool.map(lambda part: decode_jpeg(part, mode=ImageReadMode.RGB), parts))
    out: list[torch.Tensor] = [None] * len(data)  # type: ignore[list-item]
    for i, part in enumerate(decoded):
        out[i::threads] = part
    return out


def decode_pil(paths: Sequence[str | os.PathLike]) -> list[torch.Tensor]:
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(pil_to_tensor(im.convert("RGB")))
    return out


def run(st: Settings) -> list[Row]:
    if st.data_dir is None or not (st.data_dir / "coco" / "val2017").is_dir():
        return [Row("5", "COCO JPEG decoding", None, None, "-", notes="COCO images not found: pass --data-dir or set MMBENCH_DATA")]
    paths = sorted(Path(st.data_dir, "coco", "val2017").glob("*.jpg"))
    paths = paths[: st.pick(None, None, 12)]
    device = st.device
    res = interleaved({"pil": lambda: decode_pil(paths), "batched": lambda: decode_batch(paths, device)},
                      repeats=st.pick(5, 5, 2), device=device)
    got, want = res["batched"]["result"], res["pil"]["result"]
    diffs = [int((g.cpu().int() - w.int()).abs().max()) if g.shape == w.shape else 255 for g, w in zip(got, want)]
    identical = sum(d == 0 for d in diffs)
    exact = None if st.cuda else identical == len(paths)
    t_mm, t_ref = res["batched"]["best"], res["pil"]["best"]
    mpix = sum(w.shape[1] * w.shape[2] for w in want) / 1e6
    how = "decode_jpeg on a list, GPU" if st.cuda else f"decode_jpeg on a list, {min(len(paths), os.cpu_count() or 1)} threads"
    return [Row("5", f"COCO JPEG decoding, {len(paths)} images ({how})", t_mm, t_ref, "PIL one at a time", "s",
                "faster than PIL (GPU: batched nvJPEG)", (t_ref / t_mm > 1.0) if not st.tiny else None, exact,
                res["batched"]["peak_mb"],
                f"{len(paths) / t_mm:,.0f} vs {len(paths) / t_ref:,.0f} images/s; {identical}/{len(paths)} identical to PIL"
                + (f", max |diff| {max(diffs)}" if max(diffs) else ""),
                {"images": len(paths), "megapixels": mpix, "identical": identical, "max_abs_diff": max(diffs),
                 "times": {k: v["times"] for k, v in res.items()}})]
