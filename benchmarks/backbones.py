"""Case 8: frozen torchvision backbone features (issue 37), ResNet-50 on COCO images.

* mmbench, cold: ``image_features(files, "torchvision:resnet50")`` on an empty feature cache:
  resolve the hub-cache file, hash it (the cache key), load the model, decode every JPEG,
  apply the weights' transforms, run the backbone in batches of 32, write the cache entry.
* mmbench, warm: the same call on the filled cache (no model is loaded).
* reference: torchvision alone, as a researcher writes it: ``get_model`` +
  ``load_state_dict(torch.load(...))``, ``read_image`` + ``weights.transforms()`` per image,
  ``fc = Identity``, batches of 32 under ``inference_mode``.

Weights: ResNet-50 with random weights saved as ``resnet50-11ad3fa6.pth`` in a scratch
``$TORCH_HOME`` (speed does not depend on the values, and nothing is downloaded). Images:
COCO val2017 under the data root (the first ``n``), else generated 640x480 JPEGs.

Ratio rows: reference / mmbench cold (target: >= 0.9, the cache bookkeeping costs little),
and cold / warm (target: warm >= 50x faster). Exactness: mmbench's features equal the
reference's bit for bit, and warm equals cold.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from benchmarks import PeakMemory, Row, Settings, error_row

BATCH = 32


def _images(st: Settings, n: int) -> list[Path]:
    coco = (st.data_dir / "coco" / "val2017") if st.data_dir else None
    if coco is not None and coco.is_dir():
        files = sorted(coco.glob("*.jpg"))[:n]
        if len(files) == n:
            return files
    from torchvision.io import encode_jpeg

    root = st.work_dir / "backbone-images"
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        path = root / f"{i}.jpg"
        path.write_bytes(encode_jpeg(torch.randint(0, 256, (3, 480, 640), dtype=torch.uint8, generator=g)).numpy().tobytes())
        out.append(path)
    return out


def _reference(weights_file: Path, files: list[Path]) -> torch.Tensor:
    from torchvision.io import ImageReadMode, read_image
    from torchvision.models import ResNet50_Weights, get_model

    model = get_model("resnet50", weights=None)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    model.fc = torch.nn.Identity()
    model.eval()
    transform = ResNet50_Weights.DEFAULT.transforms()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(files), BATCH):
            x = torch.stack([transform(read_image(str(p), ImageReadMode.RGB)) for p in files[start:start + BATCH]])
            chunks.append(model(x))
    return torch.cat(chunks)


def _resnet50(st: Settings) -> list[Row]:
    from torchvision.models import ResNet50_Weights, get_model

    from mmbench.data.datasets.coco_features import image_features
    from mmbench.models.encoders import backbones

    n = st.pick(159, 64, 4)
    home = st.work_dir / "torch-home"
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    weights_file = ckpt / os.path.basename(ResNet50_Weights.DEFAULT.url)
    torch.manual_seed(0)
    torch.save(get_model("resnet50", weights=None).state_dict(), weights_file)
    files = _images(st, n)
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        cold_times, ref_times, warm_times = [], [], []
        for attempt in range(st.pick(2, 2, 1)):  # interleaved; load only ever slows a run down
            cache = st.work_dir / f"cache-backbone-{attempt}"
            backbones._image_model.cache_clear()  # cold includes loading the model
            with PeakMemory("cpu") as mem:
                t0 = time.perf_counter()
                cold, ok, _ = image_features(files, "torchvision:resnet50", cache=cache)
                cold_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ref = _reference(weights_file, files)
            ref_times.append(time.perf_counter() - t0)
            for _ in range(st.pick(3, 3, 2)):
                t0 = time.perf_counter()
                warm, _, info = image_features(files, "torchvision:resnet50", cache=cache)
                warm_times.append(time.perf_counter() - t0)
    finally:
        if previous is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = previous
    t_cold, t_ref, t_warm = min(cold_times), min(ref_times), min(warm_times)
    exact = bool(ok.all()) and torch.equal(cold, ref) and torch.equal(warm, cold) and info["image_cache"] == "hit"
    threads = torch.get_num_threads()
    what = f"ResNet-50 features, {n} COCO images, {threads} threads"
    return [
        Row("8", f"{what}: mmbench cold cache vs torchvision alone", t_cold, t_ref,
            "torchvision get_model + transforms + forward", "s", "reference / cold >= 0.9",
            (t_ref / t_cold >= 0.9) if not st.tiny else None, exact, mem.peak_mb,
            f"{n / t_cold:.1f} images/s cold vs {n / t_ref:.1f} images/s torchvision alone",
            {"images": n, "cold_s": cold_times, "reference_s": ref_times}),
        Row("8", f"{what}: warm cache vs cold", t_warm, t_cold, "cold cache", "s", "warm >= 50x faster",
            (t_cold / t_warm >= 50.0) if not st.tiny else None, exact, None,
            f"{n / t_warm:,.0f} images/s warm vs {n / t_cold:.1f} images/s cold",
            {"images": n, "warm_s": warm_times}),
    ]


def run(st: Settings) -> list[Row]:
    if st.cuda or torch.cuda.is_available():
        return [Row("8", "ResNet-50 backbone features", None, None, "-",
                    notes="a CPU case (the reference runs on the CPU in float32): run it on a machine without a GPU")]
    try:
        return _resnet50(st)
    except Exception as exc:  # noqa: BLE001
        return [error_row("8", "ResNet-50 backbone features", exc)]
