"""Case 1: training throughput on AV-MNIST-sized data, and vectorised multi-seed training.

Data: seeded random tensors of AV-MNIST's shapes (a [1, 28, 28] image and a [1, 112, 112]
spectrogram per pair, 10 classes). To make "accuracy within one point" mean something they are
learnable: each modality carries a class-specific grating (orientation and frequency set by the
class, random phase per sample) under Gaussian noise, weaker in the spectrogram, and 10% of the
labels are replaced by random classes, so accuracy plateaus near 91% instead of 100%.

Model: the standard MultimodalModel with the LeNet-style CNN encoders of the AV-MNIST baselines
(``baselines/avmnist.yaml``: batch norm; 3 blocks of 16-64 channels for the image, 6 blocks of
8-256 for the spectrogram, as MultiBench's LeNet) and the concat / attention / gnn fusion;
batch size 40, AdamW, gradient clipping 1.0, no early stopping.

* mmbench: ``mmbench.training.trainer.train`` on the splits (whole split on the device,
  index-gathered batches); precision ``auto`` on CUDA (bf16 autocast), ``bf16`` autocast on a
  CPU with native bf16 (oneDNN), else fp32; ``memory_format`` ``auto`` (channels-last CNN
  activations on the CPU). On the CPU the quick run also times each of those two choices
  alone, for the first fusion ("trainer fp32 NCHW" is the reference's arithmetic with the
  trainer's data path).
* reference: the loop research code usually has: a map-style Dataset returning one sample per
  ``__getitem__``, a DataLoader with the default collate and ``shuffle=True``, fp32, NCHW
  (PyTorch's default memory order), ``.to(device)`` per batch, ``loss.item()`` per step, and a validation pass per epoch like the trainer's.

Both are timed per epoch (training + that epoch's validation); the first epoch (warm-up and,
with torch.compile, compilation) is reported separately and the per-epoch figure is the best
of the later ones (a busy machine only ever slows an epoch down). The trainer's epochs are
timed through its ``on_epoch`` hook. Sizes: full 55,000 / 5,000 pairs, 2 epochs (the second is
timed; 1,375 steps); ``--quick`` 400 / 200 pairs, 3 epochs, reference and trainer run
alternately twice (accuracy is compared only at full size).

``reproduce`` (5 seeds of every baseline, a GPU target): ``mmbench.training.multiseed.train_seeds``
trains the 5 seeds at once (vmap over stacked parameters; eager, and compiled with CUDA graphs);
compared in seed-samples per second with the reference loop training one seed at a time. On
a CPU it is not timed (vectorising does not pay there, see RESULTS.md). Its exactness check,
run everywhere, trains a tiny problem both ways with every dropout at 0.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks import PeakMemory, Row, Settings, error_row, sync

FUSIONS = ("concat", "attention", "gnn")
NUM_CLASSES = 10
LABEL_NOISE = 0.1


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def _gratings(n: int, size: int, labels: torch.Tensor, amplitude: float, gen: torch.Generator, salt: int) -> torch.Tensor:
    """[n, 1, size, size] float32: amplitude * class grating (random phase) + N(0, 1) noise."""
    cls_gen = torch.Generator().manual_seed(1000 + salt)
    theta = (torch.arange(NUM_CLASSES) * math.pi / NUM_CLASSES) + torch.rand(NUM_CLASSES, generator=cls_gen) * 0.1
    freq = 2.0 + torch.rand(NUM_CLASSES, generator=cls_gen) * 4.0  # cycles per image
    coords = torch.arange(size, dtype=torch.float32) / size
    out = torch.empty(n, 1, size, size)
    chunk = 2048
    for start in range(0, n, chunk):
        y = labels[start : start + chunk]
        b = len(y)
        kx = (2 * math.pi * freq[y] * torch.cos(theta[y]))[:, None, None]
        ky = (2 * math.pi * freq[y] * torch.sin(theta[y]))[:, None, None]
        phase = (torch.rand(b, generator=gen) * 2 * math.pi)[:, None, None]
        wave = torch.sin(kx * coords[None, None, :] + ky * coords[None, :, None] + phase)
        out[start : start + b, 0] = amplitude * wave + torch.randn(b, size, size, generator=gen)
    return out


def make_splits(n_train: int, n_val: int, n_test: int, seed: int = 0) -> dict[str, Any]:
    from mmbench.data.samples import Split

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for role, n in (("train", n_train), ("validation", n_val), ("test", n_test)):
        y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
        image = _gratings(n, 28, y, 1.0, gen, salt=1)
        audio = _gratings(n, 112, y, 0.5, gen, salt=2)
        # 10% label noise: a plateau near 91% accuracy, so "within one point" is a real check
        noisy = torch.rand(n, generator=gen) < LABEL_NOISE
        y = torch.where(noisy, torch.randint(0, NUM_CLASSES, (n,), generator=gen), y)
        ones = torch.ones(n, dtype=torch.bool)
        out[role] = Split(role, [f"{role}{i}" for i in range(n)], {"image": image, "audio": audio},
                          {"image": ones, "audio": ones.clone()}, y)
    return out


# --------------------------------------------------------------------------------------------
# the two training loops
# --------------------------------------------------------------------------------------------


def cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001
        return False


def train_config(fusion: str, epochs: int, device: str, compile: bool = False, seed: int = 0, **over):
    from mmbench.training.trainer import TrainConfig

    from mmbench.reproduce import baseline_config

    precision = "auto" if device.startswith("cuda") else ("bf16" if cpu_bf16() else "fp32")
    encoders = baseline_config("avmnist", fusion).get("encoders", {})  # the AV-MNIST baselines' CNNs
    base = dict(task="avmnist", fusion=fusion, seed=seed, epochs=epochs, batch_size=40, lr=1e-3, weight_decay=1e-2,
                embed_dim=64, hidden_dim=128, dropout=0.1, patience=epochs + 1, max_grad_norm=1.0, device=device,
                precision=precision, compile=compile, eval_batch_size=1024, encoders=encoders)
    return TrainConfig(**(base | over))


def _default_step(fusion: str, device: str, splits, epochs: int = 10):
    """The step the trainer chooses by default for an AV-MNIST baseline run of `epochs` epochs
    (baselines/avmnist.yaml trains 10) on this data (this case times 2 of them)."""
    import math

    import torch

    from mmbench.models.model import MultimodalModel
    from mmbench.data.tasks import get_task
    from mmbench.training.trainer import choose_step_mode, model_config_for

    cfg = train_config(fusion, epochs, device)
    model = MultimodalModel(model_config_for(cfg, get_task(cfg.task), splits["train"]))
    return choose_step_mode(cfg, torch.device(device), model, epochs * math.ceil(len(splits["train"]) / cfg.batch_size))


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _epochs(stamps: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Per-epoch wall and CPU seconds from consecutive stamps."""
    pairs = list(itertools.pairwise(stamps))
    return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs]


def run_trainer(cfg, splits) -> dict[str, Any]:
    """mmbench's trainer; per-epoch times from its ``on_epoch`` hook."""
    from mmbench.training.trainer import train

    sync(cfg.device)
    stamps = [_now()]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    with PeakMemory(cfg.device) as mem:
        result = train(cfg, progress=False, splits=splits, on_epoch=lambda e: (sync(cfg.device), stamps.append(_now())))
    epochs, epochs_cpu = _epochs(stamps)
    return {"epoch_s": epochs, "epoch_cpu_s": epochs_cpu, "total_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - cpu0, "peak_mb": mem.peak_mb,
            "val_accuracy": [h["val"]["accuracy"] for h in result.history],
            "train_loss": [h["train_loss"] for h in result.history], "precision": cfg.precision,
            "memory_format": cfg.memory_format}


class PairDataset(torch.utils.data.Dataset):
    """One (image, spectrogram, label) per __getitem__, as research code writes it."""

    def __init__(self, split):
        self.image = split.modalities["image"]
        self.audio = split.modalities["audio"]
        self.labels = split.targets

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.image[i], self.audio[i], self.labels[i]


def run_reference(cfg, splits) -> dict[str, Any]:
    """The common research loop: DataLoader + default collate, fp32, .to(device) per batch."""
    with PeakMemory(cfg.device) as mem:
        out = _reference_loop(cfg, splits)
    return out | {"peak_mb": mem.peak_mb}


def _reference_loop(cfg, splits) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from mmbench.models.model import MultimodalModel
    from mmbench.data.tasks import get_task
    from mmbench.training.trainer import model_config_for

    device = torch.device(cfg.device)
    spec = get_task(cfg.task)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = MultimodalModel(model_config_for(cfg, spec, splits["train"])).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = DataLoader(PairDataset(splits["train"]), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = DataLoader(PairDataset(splits["validation"]), batch_size=cfg.eval_batch_size)
    accs, losses = [], []
    sync(device)
    stamps = [_now()]
    for _ in range(cfg.epochs):
        model.train()
        total, count = 0.0, 0
        for image, audio, y in loader:
            image, audio, y = image.to(device), audio.to(device), y.to(device)
            ones = torch.ones(len(y), dtype=torch.bool, device=device)
            out = model({"image": image, "audio": audio}, {"image": ones, "audio": ones})
            loss = nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            total += loss.item() * len(y)
            count += len(y)
        model.eval()
        correct = 0
        with torch.no_grad():
            for image, audio, y in val_loader:
                image, audio, y = image.to(device), audio.to(device), y.to(device)
                ones = torch.ones(len(y), dtype=torch.bool, device=device)
                correct += (model({"image": image, "audio": audio}, {"image": ones, "audio": ones}).argmax(1) == y).sum().item()
        accs.append(correct / len(val_loader.dataset))
        losses.append(total / count)
        sync(device)
        stamps.append(_now())
    epochs, epochs_cpu = _epochs(stamps)
    return {"epoch_s": epochs, "epoch_cpu_s": epochs_cpu, "total_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - cpu0, "val_accuracy": accs, "train_loss": losses}


def run_multiseed(cfg, splits, seeds, compile=None) -> dict[str, Any]:
    from mmbench.training.multiseed import train_seeds

    sync(cfg.device)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stamps = [_now()]
    skips = _cudagraph_skips()
    with PeakMemory(cfg.device) as mem:
        results = train_seeds(cfg, seeds, splits=splits, vectorize=True, compile=compile,
                              on_epoch=lambda e: (sync(cfg.device), stamps.append(_now())))
    epochs, epochs_cpu = _epochs(stamps)
    return {"epoch_s": epochs, "epoch_cpu_s": epochs_cpu, "total_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - cpu0, "peak_mb": mem.peak_mb,
            "cudagraph_skips": _cudagraph_skips() - skips,  # inductor's count of graphs it ran without CUDA graphs
            "val_accuracy": [[h["val"]["accuracy"] for h in r.history] for r in results]}


def _cudagraph_skips() -> int:
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


def steady(epoch_s: list[float]) -> float:
    """Per-epoch time: the best epoch after the first (the first includes warm-up/compilation)."""
    return min(epoch_s[1:]) if len(epoch_s) > 1 else epoch_s[0]


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two runs of the same loop as one record: epochs of the second run are appended after
    the first run's (its warm-up epoch dropped, so `steady` sees only steady epochs), and the
    accuracies are those of the last run."""
    out = dict(b)
    out["epoch_s"] = a["epoch_s"] + b["epoch_s"][1:]
    out["epoch_cpu_s"] = a["epoch_cpu_s"] + b["epoch_cpu_s"][1:]
    out["total_s"], out["cpu_s"] = a["total_s"] + b["total_s"], a["cpu_s"] + b["cpu_s"]
    out["runs"] = a.get("runs", 1) + 1
    out["peak_mb"] = max(a.get("peak_mb") or 0.0, b.get("peak_mb") or 0.0)
    return out


# --------------------------------------------------------------------------------------------
# multi-seed exactness
# --------------------------------------------------------------------------------------------


def multiseed_exactness(seeds=(0, 1)) -> dict[str, Any]:
    """Vectorised vs one-by-one on a tiny CNN problem with every dropout at 0 (fp32, CPU)."""
    from mmbench.training.multiseed import train_seeds
    from mmbench.training.trainer import train

    splits = make_splits(60, 20, 20, seed=1)  # 60 = one full and one partial batch of 40
    for s in splits.values():  # smaller inputs keep this check to seconds
        s.modalities["image"] = s.modalities["image"][:, :, ::2, ::2].contiguous()
        s.modalities["audio"] = s.modalities["audio"][:, :, ::8, ::8].contiguous()
    # 16 channels: GroupNorm(8, 16) has 2 channels per group (with 1 the conv bias gets an
    # exactly-zero gradient and AdamW steps on rounding noise)
    cfg = train_config("gnn", 2, "cpu", lr=3e-4, embed_dim=16, hidden_dim=16, dropout=0.0, precision="fp32",
                       fusion_options={"dropout": 0.0},
                       encoders={"image": {"channels": 16, "blocks": 1}, "audio": {"channels": 16, "blocks": 1}})
    vec = train_seeds(cfg, list(seeds), splits=splits, vectorize=True)
    worst_param, worst_loss, same_choices = 0.0, 0.0, True
    for s, v in zip(seeds, vec):
        one = train(type(cfg)(**{**cfg.to_dict(), "seed": s}), progress=False, splits=splits)
        same_choices &= v.best_epoch == one.best_epoch and [h["val"] for h in v.history] == [h["val"] for h in one.history]
        for a, b in zip(v.history, one.history):
            worst_loss = max(worst_loss, abs(a["train_loss"] - b["train_loss"]) / max(abs(b["train_loss"]), 1e-12))
        sa, sb = v.model.state_dict(), one.model.state_dict()
        worst_param = max(worst_param, max(float((sa[k] - sb[k]).abs().max()) for k in sa))
    ok = same_choices and worst_loss < 1e-5 and worst_param < 2e-4
    return {"ok": ok, "max_param_diff": worst_param, "max_rel_loss_diff": worst_loss, "same_metrics_and_selection": same_choices}


# --------------------------------------------------------------------------------------------
# the case
# --------------------------------------------------------------------------------------------


def _add(st: Settings, rows: list[Row], row: Row) -> None:
    """Keep a row and log it at once: a run cut short by a time limit still shows the rows
    measured so far (this case takes minutes on a GPU)."""
    rows.append(row)
    st.emit(row)
    ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
    st.log(f"  row: {row.name}: {row.mmbench_s or 0:.3f} s vs {row.reference_s or 0:.3f} s, ratio {ratio}, "
           f"met {row.met}, exact {row.exact}; {row.notes}")


def _trainer_row(st: Settings, fusion: str, label: str, mm: dict[str, Any], ref: dict[str, Any], n_train: int,
                 epochs: int, target: str, speed_target: float) -> Row:
    """One trainer variant against the reference loop, per epoch."""
    t_mm, t_ref = steady(mm["epoch_s"]), steady(ref["epoch_s"])
    c_mm, c_ref = steady(mm["epoch_cpu_s"]), steady(ref["epoch_cpu_s"])
    acc_mm, acc_ref = mm["val_accuracy"][-1], ref["val_accuracy"][-1]
    acc_ok = abs(acc_mm - acc_ref) <= 0.01
    speed_ok = t_ref / t_mm >= speed_target
    # accuracy is held to one point only at full size (quick runs are short and small)
    breakdown = label.startswith("trainer ")  # a CPU breakdown row, not the target
    met = None if st.tiny or breakdown or (st.cuda and st.quick) else (speed_ok and (acc_ok or st.quick))
    precision = mm.get("precision") or train_config(fusion, epochs, st.device).precision
    return Row(
        "1", f"train {fusion} ({label}, {precision})", t_mm, t_ref, "DataLoader loop, fp32", "s/epoch",
        target, met, None, mm.get("peak_mb"),
        f"{n_train / t_mm:,.0f} vs {n_train / t_ref:,.0f} samples/s; CPU-time ratio {c_ref / c_mm:.2f}x; "
        f"val acc {acc_mm:.3f} vs {acc_ref:.3f}; reference peak {ref.get('peak_mb') or 0:,.0f} MiB",
        {"n_train": n_train, "epochs": epochs, "mmbench": mm, "reference": ref,
         "samples_per_s": n_train / t_mm, "reference_samples_per_s": n_train / t_ref,
         "cpu_time_ratio": c_ref / c_mm, "accuracy_within_1pt": acc_ok, "first_epoch_s": mm["epoch_s"][0]},
    )


def _reproduce_row(st: Settings, fusion: str, label: str, compile: str | None, ref: dict[str, Any], splits,
                   seeds: list[int], n_train: int, epochs: int) -> Row:
    """`reproduce`'s path (the seeds vmapped together) against the reference loop run once per
    seed, in seed-samples per second (a GPU target)."""
    name = f"reproduce {fusion}: {len(seeds)} seeds at once ({label})"
    st.log(f"  {fusion}: {len(seeds)} seeds vectorised ({label}) ...")
    try:
        ms = run_multiseed(train_config(fusion, epochs, st.device), splits, seeds, compile=compile)
    except Exception as exc:  # noqa: BLE001
        return error_row("1", name, exc)
    ref_rate = n_train / steady(ref["epoch_s"])
    rate = len(seeds) * n_train / steady(ms["epoch_s"])  # seed-samples per second
    return Row(
        "1", name, n_train / rate, n_train / ref_rate, "reference loop, seeds one by one", "s/seed-epoch",
        ">= 10x seed-epochs/s (H100)", (rate / ref_rate >= 10.0) if not (st.quick or st.tiny) else None, None,
        ms.get("peak_mb"), f"{rate:,.0f} vs {ref_rate:,.0f} seed-samples/s; val acc (last epoch) "
        f"{', '.join(f'{a[-1]:.3f}' for a in ms['val_accuracy'] if a)} vs {ref['val_accuracy'][-1]:.3f}"
        + (f"; CUDA graphs skipped {ms['cudagraph_skips']}x" if compile else ""),
        {"seeds": seeds, "n_train": n_train, "multiseed": ms, "seed_samples_per_s": rate,
         "reference_seed_samples_per_s": ref_rate},
    )


def run(st: Settings) -> list[Row]:
    device = st.device
    n_train = st.train_rows or st.pick(55_000, 400, 40)
    n_val = st.pick(5_000, 200, 40)
    n_test = st.pick(1_000, 100, 20)
    epochs = st.pick(2, 3, 1)
    repeats = st.pick(1, 2, 1)
    seeds = list(range(5))
    st.log(f"  data: {n_train:,} train / {n_val:,} val pairs of [1,28,28] + [1,112,112], 10 classes")
    splits = make_splits(n_train, n_val, n_test)
    if st.seeds_only:
        return _seeds_only(st, splits, seeds, n_train, epochs)
    rows: list[Row] = []
    speed_target = 5.0 if st.cuda else 1.5
    target = f">= {speed_target:g}x per epoch ({'H100' if st.cuda else 'CPU'}), acc within 1 pt"
    first = st.fusions[0] if st.fusions else None
    for fusion in st.fusions:
        st.log(f"  {fusion}: reference loop, then trainer ...")
        # The most telling figures first (a time-boxed GPU call may be cut): the reference, the
        # trainer, on CUDA `reproduce`'s 5 vmapped seeds, then the compiled variants.
        try:
            # quick runs alternate reference / trainer twice: a change of machine load then hits both
            ref = run_reference(train_config(fusion, epochs, device), splits)
            trainer = run_trainer(train_config(fusion, epochs, device), splits)
            for _ in range(repeats - 1):
                ref = _merge(ref, run_reference(train_config(fusion, epochs, device), splits))
                trainer = _merge(trainer, run_trainer(train_config(fusion, epochs, device), splits))
        except Exception as exc:  # noqa: BLE001 - report and go on
            _add(st, rows, error_row("1", f"train {fusion}", exc))
            continue
        _add(st, rows, _trainer_row(st, fusion, "trainer", trainer, ref, n_train, epochs, target, speed_target))
        variants: dict[str, Callable[[], dict[str, Any]]] = {}
        if not st.cuda and not st.tiny and fusion == first:
            # where the CPU gain comes from: each of the trainer's two CPU choices alone
            for label, over in (("trainer fp32 NCHW", {"precision": "fp32", "memory_format": "contiguous"}),
                                ("trainer bf16 NCHW", {"memory_format": "contiguous"}),
                                ("trainer fp32 channels-last", {"precision": "fp32"})):
                variants[label] = lambda o=over: run_trainer(train_config(fusion, epochs, device, **o), splits)
        reproduce = st.cuda and (fusion == first or not st.quick)
        if reproduce:
            _add(st, rows, _reproduce_row(st, fusion, "eager", None, ref, splits, seeds, n_train, epochs))
        if st.cuda and not st.quick and not st.proof:
            variants["trainer+compile"] = lambda: run_trainer(train_config(fusion, epochs, device, compile=True), splits)
        if st.cuda and not st.quick:
            variants["trainer+compile+cudagraphs"] = lambda: run_trainer(
                train_config(fusion, epochs, device, compile=True, compile_mode="reduce-overhead"), splits)
        default = _default_step(fusion, device, splits) if st.cuda else None
        for label, measure in variants.items():
            st.log(f"  {fusion}: {label} ...")
            try:
                mm = measure()
            except Exception as exc:  # noqa: BLE001
                _add(st, rows, error_row("1", f"train {fusion} ({label})", exc))
                continue
            row = _trainer_row(st, fusion, label, mm, ref, n_train, epochs, target, speed_target)
            if default is not None and label == "trainer+compile+cudagraphs" and default.mode == "reduce-overhead":
                row.notes = f"what `mmbench train` picks by default for the 10-epoch baseline ({default.reason}); " + row.notes
            _add(st, rows, row)
        if reproduce and not st.quick and not st.proof:
            _add(st, rows, _reproduce_row(st, fusion, "compiled, CUDA graphs", "reduce-overhead", ref, splits, seeds,
                                          n_train, epochs))
    if not st.cuda and not st.tiny:
        _add(st, rows, Row("1", f"reproduce: {len(seeds)} seeds at once", None, None, "reference loop, seeds one by one",
                           "s/seed-epoch", ">= 10x seed-epochs/s (H100)",
                           notes="GPU target, not timed on the CPU: there train_seeds trains the seeds one by one "
                                 "(vectorising measured 0.2-0.4x per seed on 2 cores: vmap turns the convolutions "
                                 "into grouped ones with layout copies); run with --device cuda"))
    st.log("  multi-seed exactness (vectorised vs one by one, dropout 0) ...")
    try:
        chk = multiseed_exactness()
        _add(st, rows, Row("1", "reproduce: vectorised == one by one", None, None, "trainer.train per seed", exact=chk["ok"],
                        target="same up to float tolerance",
                        notes=f"max |param diff| {chk['max_param_diff']:.1e}, max rel loss diff {chk['max_rel_loss_diff']:.1e}",
                        extra=chk))
    except Exception as exc:  # noqa: BLE001
        _add(st, rows, error_row("1", "reproduce: vectorised == one by one", exc))
    return rows


def _seeds_only(st: Settings, splits, seeds: list[int], n_train: int, epochs: int) -> list[Row]:
    """Issue 29's measurement: the reference loop, then `reproduce`'s seeds vmapped together,
    compiled with CUDA graphs (their step is a pure function since the functional batch norm),
    then eager; each row written as soon as it is measured."""
    fusion, rows = st.fusions[0], []
    st.log("  the vmapped step, functional batch norm vs in place (eager, fp32) ...")
    try:
        t = vmapped_step_timing(st.device, steps=st.pick(12, 6, 3), batch=st.pick(40, 40, 8))
        _add(st, rows, Row("1", "vmapped step of 5 seeds (fwd + bwd, eager, fp32): functional batch norm", t["functional_ms"] / 1e3,
                           t["in_place_ms"] / 1e3, "batch norm in place", "s/step", "-", None,
                           t["max_stat_diff"] < 1e-4, None, f"running statistics after the steps: max |diff| "
                           f"{t['max_stat_diff']:.1e}", t))
    except Exception as exc:  # noqa: BLE001
        _add(st, rows, error_row("1", "vmapped step, functional vs in-place batch norm", exc))
    st.log(f"  {fusion}: reference loop ...")
    try:
        ref = run_reference(train_config(fusion, epochs, st.device), splits)
    except Exception as exc:  # noqa: BLE001
        _add(st, rows, error_row("1", f"train {fusion} (reference)", exc))
        return rows
    # on a CPU dry run the compiled variant is left out (inductor's C++ build takes minutes there)
    for label, compile in ((("compiled, CUDA graphs", "reduce-overhead"),) if st.cuda else ()) + (("eager", None),):
        _add(st, rows, _reproduce_row(st, fusion, label, compile, ref, splits, seeds, n_train, epochs))
    return rows



def vmapped_step_timing(device: str, k: int = 5, steps: int = 6, batch: int = 40) -> dict[str, Any]:
    """The vmapped step's forward + backward for `k` AV-MNIST concat models (eager, fp32, every
    row present), with batch norm handing its statistics back (the functional step, what
    `train_seeds` runs) against batch norm writing them in place (the step before issue 29),
    steps of the two interleaved: best ms per step of each, and how far the running statistics
    of the two end apart after `steps` steps."""
    from mmbench.data.tasks import get_task
    from mmbench.models.model import MultimodalModel
    from mmbench.training.multiseed import StackedModels
    from mmbench.training.trainer import batch_norm_layers, model_config_for

    splits = make_splits(k * batch, 8, 8, seed=3)
    cfg = train_config("concat", 1, device, precision="fp32", dropout=0.0, fusion_options={"dropout": 0.0})
    models = []
    for s in range(k):
        torch.manual_seed(s)
        models.append(MultimodalModel(model_config_for(cfg, get_task("avmnist"), splits["train"])))
    data = splits["train"].to(device)
    rows = torch.arange(k * batch, device=device).view(k, batch)
    mods = {m: v[rows] for m, v in data.modalities.items()}
    present = {m: v[rows] for m, v in data.present.items()}
    targets = data.targets[rows]
    loss = lambda out, y: nn.functional.cross_entropy(out.float(), y.long())  # noqa: E731
    stacks = {}
    for label in ("in_place", "functional"):
        stacked = StackedModels(models, device, ("audio", "image")).train()
        if label == "in_place":  # the modules' own forward: vmapped in-place updates of the stacked buffers
            for _, norm in batch_norm_layers(stacked.base):
                del norm.forward
        stacks[label] = (stacked, stacked.loss_step(loss))
    times: dict[str, list[float]] = {label: [] for label in stacks}
    for _ in range(steps):
        for label, (stacked, step) in stacks.items():
            sync(device)
            t0 = time.perf_counter()
            losses, new = step(stacked.params, stacked.buffers, mods, present, {}, targets)
            stacked.set_buffers(new)
            losses.sum().backward()
            sync(device)
            times[label].append(time.perf_counter() - t0)
    out: dict[str, Any] = {f"{label}_ms": 1e3 * min(t[1:]) for label, t in times.items()}
    out["times_s"] = times
    out["ratio"] = out["in_place_ms"] / out["functional_ms"]
    bufs = {label: st.buffers for label, (st, _) in stacks.items()}
    out["max_stat_diff"] = max(float((bufs["in_place"][n].double() - bufs["functional"][n].double()).abs().max())
                               for n in bufs["functional"])
    return out
