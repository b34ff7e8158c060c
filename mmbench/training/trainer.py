"""The training loop: whole splits on the device, index-gathered batches, bf16 autocast on
GPUs, model selection on the validation split, early stopping, exact resume and
data-parallel training under ``torchrun``.

Every random choice derives from the run's seed: the parameter init (torch.manual_seed(seed)
before the model is built), each epoch's shuffle and modality dropout (a Generator seeded by
(seed, epoch)) and dropout masks (torch.manual_seed re-seeded at every epoch start). Because
every epoch re-seeds, a run resumed from the checkpoint written at the end of epoch k
continues exactly as the uninterrupted run did (on the CPU, bit for bit: a run SIGKILLed at
any moment and restarted ends with the same log.jsonl and metrics.json).

A run folder holds: config.json (resolved), log.jsonl (one line per epoch), last.safetensors
(model + optimizer + progress, written atomically every epoch), best.safetensors (model
weights with the config in its metadata) and metrics.json (final validation and test metrics).
Both checkpoints carry a SHA-256 over their metadata and tensor bytes (metadata key
``sha256``); a checkpoint whose bytes changed is refused with an error naming the file,
never loaded.

Hot loop: the training split sits on the device when it fits in half the free memory (else
each batch is gathered on the host into pinned memory and copied asynchronously); batches
are gathered by index with no per-sample Python, and the loss is accumulated on the device
and read once per epoch, so a step never waits for the GPU.

Data parallel: launched by ``torchrun --nproc_per_node K -m mmbench.cli train ...`` (env
``WORLD_SIZE`` > 1), `train` joins (or creates) the process group (nccl on CUDA, gloo on the
CPU), wraps the model in DistributedDataParallel and shards each epoch's seeded permutation:
the permutation is cut to a multiple of K (the few left-over samples differ every epoch) and
rank r takes ``perm[r::K]`` in batches of ``batch_size``, so **the global batch is
batch_size x K**. DDP averages the gradients; every rank evaluates identically (rank 0's
validation metrics decide model selection and early stopping); only rank 0 writes the run
folder; the ranks meet at a barrier at the end of every epoch. log.jsonl records per-rank
``samples_seen`` and ``samples_unique`` (distinct samples over all ranks) for every epoch.
A checkpoint resumes only with the world size that wrote it, and only under the code that wrote
it (its ``source`` metadata, :func:`mmbench.core.source.source_hash`; a checkpoint of other
code is trained over from epoch 0). A group `train` creates lives
until the process exits (torchrun cannot form a second one in the same process), so several
`train` calls in one torchrun process share it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmbench.data.samples import Batch, Split
from mmbench.core.errors import MMBenchError, SpecError
from mmbench.core.source import source_hash
from mmbench.evaluation.evaluator import evaluate_conditions, outputs_to_predictions, predict
from mmbench.evaluation.scoring import score
from mmbench.core.io import (
    atomic_write_json,
    atomic_write_text,
)
from mmbench.data.masks import ModalityDropout
from mmbench.models.checkpoint import (  # noqa: F401 - load_model re-exported (tests load runs from here)
    model_tensors,
    save_checked,
    load_checked,
    load_model,
    resolve_device,
    save_model,
)
from mmbench.models.model import MultimodalModel, describe_inputs
from mmbench.data.splits import load_training_splits, with_dataset_options
from mmbench.data.tasks import TaskSpec, get_task
from mmbench.training.config import (  # noqa: F401 - TrainConfig, TrainResult re-exported
    EpochProgress,
    TrainConfig,
    TrainResult,
    autocast_dtype,
    epoch_generator,
    loss_fn,
)
from mmbench.training.retrieval import train_retrieval
from mmbench.training.step_mode import (  # noqa: F401 - CUDA_GRAPH_MIN_STEPS, StepMode re-exported (test_step_mode)
    CUDA_GRAPH_MIN_STEPS,
    StepMode,
    choose_step_mode,
    compile_mode,
    log_step_mode,
)

CHECKPOINT_FORMAT = "mmbench-checkpoint-v1"


# --------------------------------------------------------------------------------------------
# distributed (torchrun)
# --------------------------------------------------------------------------------------------


@dataclass
class DistContext:
    """This process's place in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False  # this process created the group (and destroys it)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_distributed() -> bool:
    """True when started by torchrun (or another launcher) with WORLD_SIZE > 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _ddp_device(device: str) -> torch.device:
    """The device of this rank: a bare "cuda"/"auto" becomes cuda:LOCAL_RANK."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun (nccl on CUDA, gloo on the CPU).

    Creates the group unless one exists already; not distributed -> rank 0 of 1.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    if not launched_distributed():
        return DistContext()
    if not dist.is_available():
        raise MMBenchError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    dev = _ddp_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)


def close_distributed(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.created and dist.is_initialized():
        # every rank reaches this point before any tears its transport down: a rank that
        # destroys the group while another still talks to it can abort at exit (gloo)
        if ctx.world > 1:
            backend_device = torch.device("cuda", ctx.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
            _barrier(ctx, backend_device)
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistContext]:
    """`init_distributed` ... `close_distributed` (for the CLI: one group for several seeds)."""
    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        close_distributed(ctx)


def _barrier(ctx: DistContext, device: torch.device) -> None:
    if ctx.active:
        import torch.distributed as dist

        if device.type == "cuda" and dist.get_backend() == "nccl":
            dist.barrier(device_ids=[device.index])
        else:
            dist.barrier()


def _broadcast(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a pickle round trip; small objects only)."""
    if not ctx.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_permutation(perm: Tensor, rank: int, world: int) -> Tensor:
    """This rank's part of an epoch's permutation: cut to a multiple of `world`, then every
    world-th index from `rank`. Shards are disjoint and equally long (same steps on every rank)."""
    if world <= 1:
        return perm
    return perm[: len(perm) - len(perm) % world][rank::world]


def _unused_parameters(model: nn.Module, data: Split, device: torch.device, amp: torch.dtype | None) -> list[str]:
    """Parameters no output depends on (e.g. the ignored encoders of `unimodal`): DDP must be told."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params or not len(data):
        return []
    index = torch.arange(min(2, len(data)), device=data.targets.device)
    batch = _gather(data, index, index.cpu(), device, pinned=data.targets.device != device)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = model(batch.modalities, batch.present, batch.lengths)
        grads = torch.autograd.grad(out.float().sum(), [p for _, p in params], allow_unused=True)
    finally:
        model.train(was_training)
    return [n for (n, _), g in zip(params, grads) if g is None]


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------


class _LazyIds(Sequence):
    """A batch's sample ids, looked up only if somebody reads them (the hot loop never does)."""

    def __init__(self, ids: Sequence[str], index: Tensor):
        self._ids, self._index = ids, index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._ids[j] for j in self._index[i].tolist()]
        return self._ids[int(self._index[i])]

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


def _gather(data: Split, index: Tensor, index_cpu: Tensor, device: torch.device, pinned: bool) -> Batch:
    """Rows `index` of `data` as a Batch on `device`: one index_select per tensor.

    With `pinned`, `data` lives on the host: rows are gathered straight into freshly allocated
    pinned buffers (the caching host allocator does not reuse one before its copy finished)
    and copied to the device without blocking.
    """
    if not pinned:
        take = lambda t: t.index_select(0, index)
    else:
        def take(t: Tensor) -> Tensor:
            buf = torch.empty((len(index_cpu), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
            torch.index_select(t, 0, index_cpu, out=buf)
            return buf.to(device, non_blocking=True)
    return Batch(_LazyIds(data.ids, index_cpu), {k: take(v) for k, v in data.modalities.items()},
                 {k: take(v) for k, v in data.present.items()}, take(data.targets),
                 {k: take(v) for k, v in data.lengths.items()})




def set_memory_format(model: nn.Module, memory_format: str, device: torch.device) -> None:
    """Memory order of the CNN encoders' activations: ``channels_last``, ``contiguous``, or
    ``auto``: channels-last on the CPU for the encoders whose every layer has a fast
    channels-last kernel there (the batch-norm CNN: its first convolution runs ~8x and its
    max pooling ~2.6x faster than in NCHW; benchmarks/RESULTS.md), NCHW elsewhere. Values
    change only by float rounding."""
    if memory_format not in ("auto", "channels_last", "contiguous"):
        raise SpecError(f"memory_format must be auto, channels_last or contiguous, not {memory_format!r}")
    for module in model.modules():
        if hasattr(module, "channels_last_pays_on_cpu"):
            module.channels_last = memory_format == "channels_last" or (
                memory_format == "auto" and device.type == "cpu" and module.channels_last_pays_on_cpu)


def batch_norm_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """(name, module) of every batch norm that keeps running statistics."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recalibration_rows(n: int, rows: int, seed: int) -> Tensor:
    """The training rows batch-norm recalibration reads: a seeded choice of `rows` of `n`."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:rows]


def averaged_batches(norms: Sequence[nn.Module], n_rows: int, batch_size: int) -> Iterator[int]:
    """Batch starts over `n_rows` rows; before batch k every norm's momentum is 1/(k+1), so its
    running statistics end as the mean of the batches' statistics. Momenta restored after."""
    momenta = [m.momentum for m in norms]
    try:
        for k, start in enumerate(range(0, n_rows, batch_size)):
            for m in norms:
                m.momentum = 1.0 / (k + 1)
            yield start
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, data: Split, rows: int, batch_size: int, seed: int, device: torch.device,
                           amp: torch.dtype | None, complete: tuple[str, ...] = ()) -> None:
    """Replace every batch norm's running statistics by the mean of their per-batch values over
    `rows` training rows (a seeded choice, in batches of `batch_size`, training mode, no
    gradients: "precise BN").

    The exponential running averages (momentum 0.1) lag weights that move quickly; on AV-MNIST
    validation accuracy then jumps by tens of points between epochs (docs/baselines.md)."""
    norms = [m for _, m in batch_norm_layers(model)]
    if not norms or rows <= 0:
        return
    for m in norms:
        m.reset_running_stats()
    index = recalibration_rows(len(data), rows, seed).to(data.targets.device)
    was_training = model.training
    model.train()
    try:
        for start in averaged_batches(norms, len(index), batch_size):
            batch = data.batch(index[start : start + batch_size]).to(device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                model(batch.modalities, batch.present, batch.lengths, complete)
    finally:
        model.train(was_training)


def complete_modalities(split: Split, modality_dropout: bool) -> tuple[str, ...]:
    """Modalities present in every row of `split` (none under modality dropout): the model's
    `complete`, read on the host once instead of once per batch-norm layer and step."""
    return () if modality_dropout else tuple(sorted(m for m, p in split.present.items() if bool(p.all())))



def model_config_for(cfg: TrainConfig, spec: TaskSpec, train_split: Split) -> dict[str, Any]:
    return {
        "task": spec.name,
        "target_type": spec.target.type,
        "num_classes": spec.target.num_classes,
        "modalities": list(spec.modalities),
        "inputs": describe_inputs(train_split),
        "fusion": cfg.fusion,
        "fusion_options": cfg.fusion_options,
        "encoders": cfg.encoders,
        "embed_dim": cfg.embed_dim,
        "hidden_dim": cfg.hidden_dim,
        "dropout": cfg.dropout,
    }


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    state = opt.state_dict()
    tensors = {}
    for idx, st in state["state"].items():
        for key, value in st.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).clone()
    return tensors, json.dumps(state["param_groups"])


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: str) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups)})


def _same_config(saved: str | None, cfg: TrainConfig) -> bool:
    """The checkpoint's config equals `cfg` (fields added since it was written take their defaults)."""
    try:
        return TrainConfig.from_dict(json.loads(saved or "{}")).to_dict() == cfg.to_dict()
    except (MMBenchError, TypeError, ValueError):
        return False


def _read_resume_state(run_dir: Path, cfg: TrainConfig, world: int) -> dict[str, Any] | None:
    """Everything a resume needs from last.safetensors (None when there is none)."""
    last = run_dir / "last.safetensors"
    if not last.exists():
        return None
    tensors, meta = load_checked(last)
    if meta.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise MMBenchError(f"not an mmbench training checkpoint (format {meta.get('format')!r})", last)
    if meta.get("source") != source_hash():  # written by other code: its epochs are not this code's
        return None
    if not _same_config(meta.get("train_config"), cfg):
        raise MMBenchError("run folder holds a checkpoint of a different config; use another --out or delete it", run_dir)
    try:
        progress_state = json.loads(meta["progress"])
        groups = meta["optimizer_groups"]
    except (KeyError, ValueError) as exc:
        raise MMBenchError(f"checkpoint metadata is incomplete ({exc}); it was not loaded", last) from None
    saved_world = int(progress_state.get("world_size", 1))
    if saved_world != world:
        raise MMBenchError(f"checkpoint was written by a run on {saved_world} process(es), this one has {world}; "
                           "resume with the same number of processes (or use another --out)", last)
    return {"tensors": tensors, "groups": groups, "progress": progress_state}


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of atomic writes a killed run left behind."""
    for name in ("last.safetensors", "best.safetensors", "log.jsonl", "metrics.json", "config.json"):
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, out_dir: str | Path | None = None, progress: bool = True,
          splits: dict[str, Split] | None = None, resume: bool = True,
          on_epoch: Callable[[int], None] | None = None) -> TrainResult:
    """Train one (task, fusion, seed) run; with `out_dir`, write the run folder and resume from it.

    Under torchrun (WORLD_SIZE > 1) every rank calls this; see the module docstring.
    ``on_epoch(epoch)`` is called after each epoch's validation and checkpoint (benchmarks time
    epochs with it).
    """
    ctx = init_distributed(cfg.device)
    if ctx.created:
        # a group torchrun launched cannot be formed twice in one process (the second
        # init_process_group hangs): keep it for later calls and destroy it at exit
        atexit.register(close_distributed, ctx)
    return _train(cfg, out_dir, progress, splits, resume, ctx, on_epoch)


def _train(cfg: TrainConfig, out_dir, progress: bool, splits, resume: bool, ctx: DistContext,
           on_epoch: Callable[[int], None] | None) -> TrainResult:
    started = time.perf_counter()
    spec = get_task(cfg.task)
    if spec.target.type == "retrieval" and ctx.active:
        raise MMBenchError(f"task {spec.name!r}: the retrieval baseline trains in one process (not under torchrun)")
    device = _ddp_device(cfg.device) if ctx.active else resolve_device(cfg.device)
    amp = autocast_dtype(cfg.precision, device)
    compile_mode(cfg)  # a bad mode is refused before anything is written
    if splits is None:
        spec = with_dataset_options(spec, cfg.dataset_options)
        splits = load_training_splits(spec, cfg.data_dir)
    if spec.target.type == "retrieval":
        return train_retrieval(cfg, out_dir, progress, splits, spec, device, amp)
    train_split, val_split, test_split = splits["train"], splits["validation"], splits["test"]

    torch.manual_seed(cfg.seed)
    model_config = model_config_for(cfg, spec, train_split)
    model = MultimodalModel(model_config).to(device)
    set_memory_format(model, cfg.memory_format, device)
    # fused AdamW on CUDA: one kernel for all parameters (a small model's step is launch-bound)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            **({"fused": True} if device.type == "cuda" else {}))
    criterion = loss_fn(spec.target.type)
    dropout = ModalityDropout(cfg.modality_dropout) if cfg.modality_dropout > 0 else None
    complete = complete_modalities(train_split, dropout is not None)

    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else math.inf
    on_device = device.type != "cuda" or train_split.nbytes() < 0.5 * free
    data = train_split.to(device) if on_device else train_split  # else: gathered into pinned memory per batch
    pinned = not on_device
    val_on = val_split.to(device)

    primary = spec.primary
    sign = 1.0 if primary.higher_is_better else -1.0
    run_dir = Path(out_dir) if out_dir else None
    writes = run_dir is not None and ctx.is_main
    history: list[dict[str, Any]] = []
    start_epoch, best_value, best_epoch, stale = 0, -math.inf, -1, 0
    best_state = None
    if run_dir is not None:
        state: Any = None
        if ctx.is_main:  # rank 0 reads the checkpoint and hands it (or the error) to the others
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                _remove_stale_temporaries(run_dir)
                state = _read_resume_state(run_dir, cfg, ctx.world) if resume else None
                if state is None:
                    atomic_write_json(run_dir / "config.json", {"train": cfg.to_dict(), "model": model_config,
                                                                "source": source_hash()})
            except Exception as exc:  # handed to every rank, raised there
                if not ctx.active:
                    raise
                state = exc
        state = _broadcast(ctx, state)
        if isinstance(state, BaseException):
            raise state
        if state is not None:
            tensors = state["tensors"]
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            _restore_optimizer(opt, tensors, state["groups"])
            progress_state = state["progress"]
            start_epoch = progress_state["epoch"] + 1
            best_value, best_epoch, stale = progress_state["best_value"], progress_state["best_epoch"], progress_state["stale"]
            best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
            history = progress_state["history"]

    train_module: nn.Module = model
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel

        unused = _unused_parameters(model, data, device, amp)
        train_module = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               find_unused_parameters=bool(unused))
    n = len(data)
    steps = (cfg.epochs - start_epoch) * math.ceil(n / cfg.batch_size)
    step_mode = choose_step_mode(cfg, device, model, steps, distributed=ctx.active)
    if ctx.is_main:
        log_step_mode(step_mode, f"{spec.name} {cfg.fusion} seed {cfg.seed}")
    step_model = (torch.compile(train_module, backend=cfg.compile_backend, mode=step_mode.mode)
                  if step_mode.compile else train_module)

    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    bar = EpochProgress(progress and ctx.is_main, cfg.epochs, f"{spec.name} {cfg.fusion} seed {cfg.seed}")
    bar.advance(start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        if stale >= cfg.patience:
            break
        gen = epoch_generator(cfg.seed, epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch + (ctx.rank << 40))
        perm = shard_permutation(torch.randperm(n, generator=gen), ctx.rank, ctx.world)
        # rank 0 of 1 draws modality dropout from the shuffle's generator (as always); ranks of a
        # DDP run each draw their own stream
        drop_gen = gen if not ctx.active else torch.Generator().manual_seed((cfg.seed * 1_000_003 + epoch) ^ ((ctx.rank + 1) << 40))
        perm_dev = perm.to(data.targets.device)  # one copy per epoch; batches are slices of it
        train_module.train()
        loss_sum = torch.zeros((), dtype=acc_dtype, device=device)  # read once per epoch: no sync per step
        count = 0
        for start in range(0, len(perm), cfg.batch_size):
            index_cpu = perm[start : start + cfg.batch_size]
            batch = _gather(data, perm_dev[start : start + cfg.batch_size], index_cpu, device, pinned)
            if dropout is not None:
                batch = dropout(batch, drop_gen)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = step_model(batch.modalities, batch.present, batch.lengths, complete)
                loss = criterion(out, batch.targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            loss_sum += loss.detach().to(acc_dtype) * len(index_cpu)
            count += len(index_cpu)
        train_loss, seen, unique = _epoch_totals(ctx, loss_sum, count, perm, n)
        if cfg.bn_recalibration:  # every rank the same rows: the statistics stay identical across ranks
            recalibrate_batch_norm(model, data, cfg.bn_recalibration, cfg.batch_size, cfg.seed, device, amp, complete)
        val_pred = outputs_to_predictions(predict(model, val_on, device, cfg.eval_batch_size, amp), spec)
        val_metrics = _broadcast(ctx, score(spec, val_split.targets.cpu().numpy(), val_pred))
        value = val_metrics[primary.name]
        improved = sign * value > best_value
        if improved:
            best_value, best_epoch, stale = sign * value, epoch, 0
            best_state = model_tensors(model)
        else:
            stale += 1
        record = {"epoch": epoch, "train_loss": train_loss, "val": val_metrics, "best": improved,
                  "samples_seen": seen, "samples_unique": unique}
        history.append(record)
        if writes:
            _write_epoch(run_dir, cfg, model, model_config, opt, record, history, best_state, best_value, best_epoch,
                         stale, improved, ctx.world)
        _barrier(ctx, device)
        bar.advance(1, f"epoch {epoch} loss {record['train_loss']:.4f} val {primary.name} {value:.4f}")
        if on_epoch is not None:
            on_epoch(epoch)
    bar.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    val_pred = outputs_to_predictions(predict(model, val_on, device, cfg.eval_batch_size, amp), spec)
    val_metrics = score(spec, val_split.targets.cpu().numpy(), val_pred)
    test_metrics = evaluate_conditions(
        spec, test_split,
        lambda s: outputs_to_predictions(predict(model, s, device, cfg.eval_batch_size, amp), spec),
        [c for c in spec.conditions() if c.name == "clean"] or None,
    ).get("clean", {})
    val_metrics, test_metrics = _broadcast(ctx, (val_metrics, test_metrics))
    seconds = time.perf_counter() - started
    if writes:
        atomic_write_json(run_dir / "metrics.json", {"best_epoch": best_epoch, "validation": val_metrics,
                                                     "test": test_metrics, "seconds": seconds})
    _barrier(ctx, device)
    return TrainResult(run_dir, cfg, model_config, best_epoch, val_metrics, test_metrics, history, model, seconds)


def _epoch_totals(ctx: DistContext, loss_sum: Tensor, count: int, perm: Tensor, n: int) -> tuple[float, list[int], int]:
    """(mean training loss over all ranks, samples per rank, distinct samples over all ranks):
    the epoch's one host sync (one all-reduce under DDP)."""
    if not ctx.active:
        return float(loss_sum) / max(count, 1), [count], len(perm)  # a permutation: all distinct
    import torch.distributed as dist

    comm = loss_sum.device if dist.get_backend() == "nccl" else torch.device("cpu")
    stats = torch.zeros(1 + ctx.world + n, dtype=torch.float64, device=comm)
    stats[0] = loss_sum.to(comm, torch.float64)
    stats[1 + ctx.rank] = count
    stats[1 + ctx.world + perm.to(comm)] = 1.0  # this rank's samples
    dist.all_reduce(stats)
    stats = stats.cpu()
    seen = [int(c) for c in stats[1 : 1 + ctx.world].tolist()]
    unique = int((stats[1 + ctx.world : 1 + ctx.world + n] > 0).sum())
    return float(stats[0]) / max(sum(seen), 1), seen, unique


def _write_epoch(run_dir, cfg, model, model_config, opt, record, history, best_state, best_value, best_epoch, stale,
                 improved, world: int = 1):
    if improved:
        save_model(run_dir / "best.safetensors", model, model_config, {"epoch": str(record["epoch"])})
    log = "".join(json.dumps(h) + "\n" for h in history)
    atomic_write_text(run_dir / "log.jsonl", log)
    tensors = model_tensors(model, "model.")
    tensors |= {f"best.{k}": v for k, v in (best_state or {}).items()}
    opt_tensors, groups = _optimizer_tensors(opt)
    tensors |= opt_tensors
    meta = {
        "format": CHECKPOINT_FORMAT,
        "train_config": json.dumps(cfg.to_dict()),
        "source": source_hash(),
        "optimizer_groups": groups,
        "progress": json.dumps({"epoch": record["epoch"], "best_value": best_value, "best_epoch": best_epoch,
                                "stale": stale, "world_size": world, "history": history}),
    }
    save_checked(run_dir / "last.safetensors", tensors, meta)
