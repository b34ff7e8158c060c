"""Case 4: the feature cache, cold vs warm (mmbench.core.cache.FeatureCache).

* AV-MNIST spectrograms: the loader's spectrogram build (read the FSDD wavs, noise, 112-bin
  log-mel) through its cache; cold = empty cache folder, warm = a new dataset object on the
  same folder. Both include the cache key, the recordings' content fingerprint: cold hashes
  every wav, warm finds it in the cache's stat memo (``FeatureCache.files_fingerprint``).
* MOSI text features: ``MOSIDataset(...).load_split`` with the frozen all-MiniLM-L6-v2 text
  encoder; cold includes loading the encoder and encoding every transcript, warm reads the
  cached features. Both include reading the label files.

Target: warm at least 50x faster; exactness: warm tensors equal cold ones bit for bit.
"""

from __future__ import annotations

import time

import torch

from benchmarks import PeakMemory, Row, Settings, error_row


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _avmnist(st: Settings) -> Row:
    from mmbench.data.datasets.avmnist import AVMNISTDataset

    cache_dir = st.work_dir / "cache-avmnist"
    n = st.pick(None, None, 40)
    make = lambda: AVMNISTDataset(st.data_dir, cache_dir=str(cache_dir))  # noqa: E731
    recs = make()._recordings()
    recs = recs if n is None else recs[:: max(1, len(recs) // n)][:n]
    with PeakMemory("cpu") as mem:
        t_cold, cold = _time(lambda: make()._spectrograms(recs))
    warm_times = []
    for _ in range(st.pick(5, 3, 2)):
        t, warm = _time(lambda: make()._spectrograms(recs))
        warm_times.append(t)
    t_warm = min(warm_times)
    exact = all(torch.equal(cold[k], warm[k]) for k in ("spectrograms", "present"))
    return Row("4", f"AV-MNIST spectrograms ({len(recs):,} recordings)", t_warm, t_cold, "cold build", "s",
               "warm >= 50x faster", (t_cold / t_warm >= 50.0) if not st.tiny else None, exact, mem.peak_mb,
               f"cold {t_cold:.2f} s, warm {t_warm * 1e3:.0f} ms",
               {"recordings": len(recs), "cold_s": t_cold, "warm_s": warm_times})


def _mosi(st: Settings) -> Row:
    from mmbench.data.datasets.sentiment import MOSIDataset

    cache_dir = st.work_dir / "cache-mosi"
    n = st.pick(None, 256, 16)
    splits = ("train", "val", "test") if n is None else ("train",)

    def load():
        ds = MOSIDataset(st.data_dir, cache_dir=str(cache_dir), max_samples=n)
        return {s: ds.load_split(s) for s in splits}

    with PeakMemory("cpu") as mem:
        t_cold, cold = _time(load)
    warm_times = []
    for _ in range(st.pick(5, 3, 2)):
        t, warm = _time(load)
        warm_times.append(t)
    t_warm = min(warm_times)
    texts = sum(len(s) for s in cold.values())
    exact = all(torch.equal(cold[s].modalities["text"], warm[s].modalities["text"]) for s in splits)
    return Row("4", f"MOSI MiniLM text features ({texts:,} transcripts)", t_warm, t_cold, "cold build", "s",
               "warm >= 50x faster", (t_cold / t_warm >= 50.0) if not st.tiny else None, exact, mem.peak_mb,
               f"cold {t_cold:.2f} s (encoder load + encode), warm {t_warm * 1e3:.0f} ms",
               {"texts": texts, "splits": list(splits), "cold_s": t_cold, "warm_s": warm_times})


def run(st: Settings) -> list[Row]:
    if st.data_dir is None:
        return [Row("4", "feature cache", None, None, "-", notes="real data not found: pass --data-dir or set MMBENCH_DATA")]
    rows = []
    for fn, name in ((_avmnist, "AV-MNIST spectrograms"), (_mosi, "MOSI text features")):
        try:
            rows.append(fn(st))
        except Exception as exc:  # noqa: BLE001
            rows.append(error_row("4", name, exc))
    return rows
