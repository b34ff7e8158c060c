"""mmbench's performance benchmarks: ``python -m benchmarks [--quick] [--device cpu|cuda] [--out FILE]``.

One module per case; each has ``run(settings) -> list[Row]``:

1. ``training``        trainer throughput on AV-MNIST-sized data vs a DataLoader reference loop,
                       and vectorised multi-seed training (``reproduce``) vs seeds one by one
2. ``retrieval``       recall@k vs the bare similarity matmul; exact vs a naive full sort
3. ``classification``  classification metrics on 10M predictions vs scikit-learn (identical values)
4. ``feature_cache``   AV-MNIST spectrograms and MOSI MiniLM features, cold vs warm cache
5. ``decoding``        batched ``torchvision.io.decode_jpeg`` vs PIL one image at a time (COCO)
6. ``cli_latency``     ``mmbench --help`` and ``mmbench evaluate mosi --predictions FILE``
7. ``significance``    the board's verdicts for 11 entries x 5 seeds x 10,000 items, 2,000 two-level
                       resamples, all 55 pairs, vs a loop per resample (identical values)
8. ``backbones``       ResNet-50 features (``image_encoder: torchvision:resnet50``) on COCO images,
                       cold and warm feature cache, vs torchvision alone (identical values)

A row's ``ratio`` is always reference time / mmbench time (above 1 = mmbench is faster);
``exact`` is the result of the case's exactness check (None where it has none) and ``met``
whether the case's speed target holds (None where the target is for another device or size).
The CI smoke run (``--quick --tiny``) checks that every case completes and every exactness
check holds; it does not check timings.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CASES = ("training", "retrieval", "classification", "feature_cache", "decoding", "cli_latency", "significance",
         "backbones")
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Settings:
    quick: bool = False
    tiny: bool = False  # CI smoke sizes: seconds, not minutes; timings meaningless
    device: str = "cpu"
    data_dir: Path | None = None
    work_dir: Path | None = None  # scratch space (caches, predictions files)
    log: Callable[[str], None] = print
    fusions: tuple[str, ...] = ("concat", "attention", "gnn")  # case 1's fusions
    train_rows: int | None = None  # case 1's training rows (default: 55,000 in a full run)
    proof: bool = False  # the GPU session's short form: case 1 without the optional variants, case 2 at scale only
    seeds_only: bool = False  # case 1: the reference loop and the 5 vmapped seeds only (compiled, then eager)
    # called with each row as soon as it is measured (and again when a row is completed later):
    # the harness writes its JSON then, so a time box that cuts a case loses no finished row
    emit: Callable[["Row"], None] = lambda row: None

    @property
    def size(self) -> str:
        return "tiny" if self.tiny else "quick" if self.quick else "full"

    def pick(self, full: Any, quick: Any, tiny: Any) -> Any:
        return {"full": full, "quick": quick, "tiny": tiny}[self.size]

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class Row:
    case: str                   # "1", "2", ... (the numbering)
    name: str                   # what was measured
    mmbench_s: float | None     # seconds (per epoch, per call, ...; see `unit`)
    reference_s: float | None
    reference: str              # what the reference is
    unit: str = "s"
    target: str = ""            # the target in words
    met: bool | None = None
    exact: bool | None = None
    peak_mb: float | None = None  # peak memory of the mmbench side (RSS growth on CPU, allocated on CUDA)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if not self.mmbench_s or self.reference_s is None:
            return None
        return self.reference_s / self.mmbench_s

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def error_row(case: str, name: str, exc: BaseException) -> Row:
    return Row(case, name, None, None, "-", exact=False, notes=f"ERROR {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------------
# timing and memory
# --------------------------------------------------------------------------------------------


def sync(device: str | Any) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory growth inside the block, in MiB: CUDA's max allocated bytes on a CUDA device,
    else the process RSS above its level at entry (sampled every 2 ms by a thread)."""

    def __init__(self, device: str = "cpu"):
        self.cuda = str(device).startswith("cuda")
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self._base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._base = _rss_bytes()
            self._peak = self._base
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_mb = (self._peak - self._base) / 2**20


def timed(fn: Callable[[], Any], device: str = "cpu", memory: bool = False) -> tuple[float, Any, float | None]:
    """(seconds, fn's result, peak MiB or None) of one call, synchronising CUDA around it."""
    sync(device)
    mem = PeakMemory(device) if memory else None
    if mem:
        mem.__enter__()
    t0 = time.perf_counter()
    try:
        out = fn()
        sync(device)
    finally:
        seconds = time.perf_counter() - t0
        if mem:
            mem.__exit__(None, None, None)
    return seconds, out, (mem.peak_mb if mem else None)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, device: str = "cpu") -> dict[str, dict[str, Any]]:
    """Run each of `fns` `repeats` times, alternating between them (so a change of machine load
    hits all alike); per name: best seconds, all seconds, the last result and the peak memory
    of the first call."""
    out: dict[str, dict[str, Any]] = {k: {"times": [], "result": None, "peak_mb": None} for k in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            s, res, peak = timed(fn, device, memory=(r == 0))
            out[name]["times"].append(s)
            out[name]["result"] = res
            if r == 0:
                out[name]["peak_mb"] = peak
    for v in out.values():
        v["best"] = min(v["times"])
    return out


# --------------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def machine_info(device: str) -> dict[str, Any]:
    import numpy
    import torch

    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "versions": {"torch": torch.__version__, "numpy": numpy.__version__},
        "device": device,
        "load_average": load_average(),
    }
    for mod in ("torchvision", "torchaudio", "sklearn", "PIL"):
        try:
            info["versions"][mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            pass
    try:
        from mmbench import __version__

        info["versions"]["mmbench"] = __version__
    except Exception:  # noqa: BLE001
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["versions"]["cuda"] = torch.version.cuda
    return info


def data_root(explicit: Path | None = None) -> Path | None:
    """The real-data root: --data-dir, $MMBENCH_DATA, else ../shared/data beside the repo."""
    for cand in (explicit, os.environ.get("MMBENCH_DATA"), REPO.parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"
