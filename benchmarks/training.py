"""Case 1: training throughput on AV-MNIST-sized data, and vectorised multi-seed training.

Data: seeded random tensors of AV-MNIST's shapes (a [1, 28, 28] image and a [1, 112, 112]
spectrogram per pair, 10 classes). To make "accuracy within one point" mean something they are
learnable: each modality carries a class-specific grating (orientation and frequency set by the
class, random phase per sample) under Gaussian noise, weaker in the spectrogram, and 10% of the
labels are replaced by random classes, so accuracy plateaus near 91% instead of 100%.

Model: the standard MultimodalModel with the default LeNet-style CNN encoder for both
modalities and the concat / attention / gnn fusion; batch size 40, AdamW, gradient clipping 1.0,
no early stopping.

* mmbench: ``mmbench.training.trainer.train`` on the splits (whole split on the device,
  index-gathered batches); precision ``auto`` on CUDA (bf16 autocast), ``bf16`` autocast on a
  CPU with native bf16 (oneDNN), else fp32.
* reference: the loop research code usually has: a map-style Dataset returning one sample per
  ``__getitem__``, a DataLoader with the default collate and ``shuffle=True``, fp32, ``.to(device)``
  per batch, ``loss.item()`` per step, and a validation pass per epoch like the trainer's.

Both are timed per epoch (training + that epoch's validation); the first epoch (warm-up and,
with torch.compile, compilation) is reported separately and the per-epoch figure is the best
of the later ones. The trainer's epochs are timed through its progress hook.

``reproduce`` (5 seeds of every baseline): ``mmbench.training.multiseed.train_seeds`` trains
the 5 seeds at once; compared in seed-samples per second with the reference loop training
one seed at a time. Its exactness check trains a tiny problem both ways with dropout 0.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from benchmarks import Row, Settings, error_row, sync

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
    from mmbench.data import Split

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

    precision = "auto" if device.startswith("cuda") else ("bf16" if cpu_bf16() else "fp32")
    base = dict(task="avmnist", fusion=fusion, seed=seed, epochs=epochs, batch_size=40, lr=1e-3, weight_decay=1e-2,
                embed_dim=64, hidden_dim=128, dropout=0.1, patience=epochs + 1, max_grad_norm=1.0, device=device,
                precision=precision, compile=compile, eval_batch_size=1024)
    return TrainConfig(**(base | over))


class _EpochClock:
    """Stands in for the trainer's progress bar: records the time at the end of every epoch."""

    stamps: list[float] = []

    def __init__(self, enabled: bool, total: int, label: str):
        type(self).stamps = [time.perf_counter()]

    def advance(self, k: int, status: str = "") -> None:
        if k:
            type(self).stamps.append(time.perf_counter())

    def close(self) -> None:
        pass


def run_trainer(cfg, splits) -> dict[str, Any]:
    """mmbench's trainer; per-epoch wall times from its progress hook."""
    import mmbench.training.trainer as trainer_mod

    real = getattr(trainer_mod, "_progress", None)
    if real is not None:
        trainer_mod._progress = _EpochClock
    _EpochClock.stamps = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    try:
        result = trainer_mod.train(cfg, progress=False, splits=splits)
    finally:
        if real is not None:
            trainer_mod._progress = real
    total = time.perf_counter() - t0
    stamps = _EpochClock.stamps
    epochs = [b - a for a, b in zip(stamps, stamps[1:])] if len(stamps) == cfg.epochs + 1 else [total / cfg.epochs] * cfg.epochs
    return {"epoch_s": epochs, "total_s": total, "cpu_s": time.process_time() - cpu0,
            "val_accuracy": [h["val"]["accuracy"] for h in result.history],
            "train_loss": [h["train_loss"] for h in result.history]}


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
    from torch.utils.data import DataLoader

    from mmbench.models.model import MultimodalModel
    from mmbench.tasks import get_task
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
    epochs, accs, losses = [], [], []
    sync(device)
    last = time.perf_counter()
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
        now = time.perf_counter()
        epochs.append(now - last)
        last = now
    return {"epoch_s": epochs, "total_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
            "val_accuracy": accs, "train_loss": losses}


def run_multiseed(cfg, splits, seeds) -> dict[str, Any]:
    from mmbench.training.multiseed import train_seeds

    stamps: list[float] = []
    sync(cfg.device)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stamps.append(t0)
    results = train_seeds(cfg, seeds, splits=splits, on_epoch=lambda e: (sync(cfg.device), stamps.append(time.perf_counter())))
    epochs = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"epoch_s": epochs, "total_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
            "val_accuracy": [[h["val"]["accuracy"] for h in r.history] for r in results]}


def steady(epoch_s: list[float]) -> float:
    """Per-epoch time: the best epoch after the first (the first includes warm-up/compilation)."""
    return min(epoch_s[1:]) if len(epoch_s) > 1 else epoch_s[0]


# --------------------------------------------------------------------------------------------
# multi-seed exactness
# --------------------------------------------------------------------------------------------


def multiseed_exactness(seeds=(0, 1)) -> dict[str, Any]:
    """Vectorised vs one-by-one on a tiny CNN problem with every dropout at 0 (fp32, CPU)."""
    from mmbench.training.multiseed import train_seeds
    from mmbench.training.trainer import train

    splits = make_splits(80, 40, 40, seed=1)
    for s in splits.values():  # a smaller spectrogram keeps this check to seconds
        s.modalities["audio"] = s.modalities["audio"][:, :, ::4, ::4].contiguous()
    cfg = train_config("gnn", 2, "cpu", lr=3e-4, embed_dim=16, hidden_dim=16, dropout=0.0, precision="fp32",
                       fusion_options={"dropout": 0.0},
                       encoders={"image": {"channels": 16, "blocks": 2}, "audio": {"channels": 16, "blocks": 2}})
    vec = train_seeds(cfg, list(seeds), splits=splits)
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


def run(st: Settings) -> list[Row]:
    device = st.device
    n_train = st.pick(55_000, 800, 80)
    n_val = st.pick(5_000, 400, 40)
    n_test = st.pick(1_000, 200, 40)
    epochs = st.pick(3, 3, 2)
    seeds = list(range(5))
    n_seed_train = st.pick(55_000, 400, 40)
    st.log(f"  data: {n_train} train / {n_val} val pairs of [1,28,28] + [1,112,112], 10 classes")
    splits = make_splits(n_train, n_val, n_test)
    rows: list[Row] = []
    cpu_target = 1.5
    target = ">= 5x per epoch (H100)" if st.cuda else f">= {cpu_target}x per epoch (CPU)"
    per_fusion: dict[str, dict[str, Any]] = {}
    for fusion in FUSIONS:
        st.log(f"  {fusion}: reference loop ...")
        try:
            ref = run_reference(train_config(fusion, epochs, device), splits)
            variants = {"trainer": run_trainer(train_config(fusion, epochs, device), splits)}
            if st.cuda and not st.quick and not st.tiny:
                st.log(f"  {fusion}: trainer with torch.compile ...")
                variants["trainer+compile"] = run_trainer(train_config(fusion, epochs, device, compile=True), splits)
        except Exception as exc:  # noqa: BLE001 - report and go on
            rows.append(error_row("1", f"train {fusion}", exc))
            continue
        per_fusion[fusion] = ref
        for label, mm in variants.items():
            t_mm, t_ref = steady(mm["epoch_s"]), steady(ref["epoch_s"])
            acc_mm, acc_ref = mm["val_accuracy"][-1], ref["val_accuracy"][-1]
            acc_ok = abs(acc_mm - acc_ref) <= 0.01
            speed_ok = t_ref / t_mm >= (5.0 if st.cuda else cpu_target)
            # accuracy is compared only at full size; quick/tiny runs are too short and too small
            met = None if st.tiny or (st.cuda and st.quick) else (speed_ok and (acc_ok or st.quick))
            cfg = train_config(fusion, epochs, device)
            rows.append(Row(
                "1", f"train {fusion} ({label}, {cfg.precision})", t_mm, t_ref, "DataLoader loop, fp32", "s/epoch",
                target + ", acc within 1 pt", met, None, None,
                f"{n_train / t_mm:,.0f} vs {n_train / t_ref:,.0f} samples/s; val acc {acc_mm:.3f} vs {acc_ref:.3f}",
                {"n_train": n_train, "n_val": n_val, "epochs": epochs, "mmbench": mm, "reference": ref,
                 "samples_per_s": n_train / t_mm, "reference_samples_per_s": n_train / t_ref,
                 "accuracy_within_1pt": acc_ok, "first_epoch_s": mm["epoch_s"][0],
                 "cpu_ratio": ref["cpu_s"] / mm["cpu_s"] if mm["cpu_s"] else None},
            ))

    # reproduce: 5 seeds at once vs the reference one seed at a time
    fusion = "concat" if st.quick or st.tiny else None
    for f in ([fusion] if fusion else list(FUSIONS)):
        if f not in per_fusion:
            continue
        st.log(f"  {f}: {len(seeds)} seeds vectorised ...")
        try:
            sub = splits if n_seed_train == n_train else {**splits, "train": splits["train"].subset(range(n_seed_train))}
            ms = run_multiseed(train_config(f, epochs, device), sub, seeds)
        except Exception as exc:  # noqa: BLE001
            rows.append(error_row("1", f"reproduce {f} x{len(seeds)} seeds", exc))
            continue
        t_ms = steady(ms["epoch_s"])
        ref_t = steady(per_fusion[f]["epoch_s"])
        ms_rate = len(seeds) * n_seed_train / t_ms  # seed-samples per second
        ref_rate = n_train / ref_t
        rows.append(Row(
            "1", f"reproduce {f}: {len(seeds)} seeds at once", n_seed_train / ms_rate,
            n_seed_train / ref_rate, "reference loop, seeds one by one", "s/seed-epoch",
            ">= 10x seed-epochs/s (H100)", (ms_rate / ref_rate >= 10.0) if st.cuda and not (st.quick or st.tiny) else None,
            None, None,
            f"{ms_rate:,.0f} vs {ref_rate:,.0f} seed-samples/s",
            {"seeds": seeds, "n_train": n_seed_train, "multiseed": ms, "seed_samples_per_s": ms_rate,
             "reference_seed_samples_per_s": ref_rate},
        ))
    st.log("  multi-seed exactness (vectorised vs one by one, dropout 0) ...")
    try:
        chk = multiseed_exactness()
        rows.append(Row("1", "reproduce: vectorised == one by one", None, None, "trainer.train per seed", exact=chk["ok"],
                        target="same up to float tolerance",
                        notes=f"max |param diff| {chk['max_param_diff']:.1e}, max rel loss diff {chk['max_rel_loss_diff']:.1e}",
                        extra=chk))
    except Exception as exc:  # noqa: BLE001
        rows.append(error_row("1", "reproduce: vectorised == one by one", exc))
    return rows
