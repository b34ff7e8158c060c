"""Train several seeds of one (task, fusion, config) at once, vectorised over the seeds.

`reproduce` trains every baseline with 5 seeds. The models are small, so one seed at a time
leaves an accelerator mostly idle (each step is a few hundred tiny kernel launches). Here the
K seeds' parameters are stacked along a new leading axis (``torch.func.stack_module_state``)
and one ``torch.func.vmap`` of ``functional_call`` runs all K models in the same kernels: a
step costs about what one seed's step costs while the models are small.

Every seed follows exactly the recipe of :func:`mmbench.training.trainer.train`:

* init: ``torch.manual_seed(seed)`` before the model is built;
* data order: epoch e visits ``torch.randperm(n, generator=Generator().manual_seed(seed *
  1_000_003 + e))`` in batches of ``batch_size`` (each seed its own order), and modality
  dropout draws from that same generator after the permutation, batch by batch;
* AdamW over the seed's parameters, the same loss, gradient clipping of *that seed's* total
  gradient norm to ``max_grad_norm``, bf16 autocast on CUDA (``precision: auto``);
* model selection on the validation split's primary metric, patience-based early stopping
  (a seed that has stopped is carried along but nothing of it is recorded any more), and the
  final validation and clean-test metrics of the best epoch;
* with ``bn_recalibration``, each seed's batch-norm statistics recomputed before each
  validation on its own seeded training rows (:func:`_recalibrate_batch_norm`).

The step is a pure function (:meth:`StackedModels.loss_step`): batch norm hands the new running
statistics back (:mod:`mmbench.models.functional_norm`) instead of writing the stacked buffers,
and the loop copies them in after the step. Nothing the step reads is written inside it, so on
CUDA it compiles with CUDA graphs like the single-seed step (``choose_step_mode``).

Because AdamW and the clipping are elementwise per seed and the per-seed losses are summed
before the backward pass, seed k's gradients and updates are those of seed k alone; results
equal one-by-one training up to floating-point rounding (batched kernels sum in another
order). Only dropout masks differ (they are drawn for all seeds at once from the global RNG,
seeded per epoch); with every dropout at 0 the runs match (tests/test_multiseed.py).

Run folders (``out_dirs``) get config.json, log.jsonl, best.safetensors and metrics.json like
the trainer's; there is no last.safetensors and no resume (a cut run is simply re-run).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmbench.data.samples import Batch, Split
from mmbench.core.errors import MMBenchError
from mmbench.evaluation.evaluator import evaluate_conditions, outputs_to_predictions, predict
from mmbench.evaluation.scoring import score
from mmbench.data.masks import ModalityDropout
from mmbench.models.checkpoint import resolve_device, save_model
from mmbench.models.functional_norm import batch_norm_step
from mmbench.models.model import MultimodalModel
from mmbench.data.splits import load_training_splits, with_dataset_options
from mmbench.data.tasks import get_task
from mmbench.training.config import EpochProgress, TrainConfig, TrainResult, autocast_dtype, epoch_generator, loss_fn
from mmbench.training.step_mode import choose_step_mode, compile_mode, log_step_mode
from mmbench.training.trainer import (
    averaged_batches,
    batch_norm_layers,
    complete_modalities,
    model_config_for,
    recalibration_rows,
)

__all__ = ["StackedModels", "train_seeds", "vmappable_attention"]


class StackedModels:
    """K models of one architecture as stacked parameters, called with ``torch.func.vmap``.

    ``params[name]`` / ``buffers[name]`` have a leading axis of size K; ``forward`` takes
    inputs with a leading K axis (``shared=False``: each model its own batch) or without one
    (``shared=True``: every model sees the same batch) and returns outputs ``[K, B, ...]``.
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device | str, complete: tuple[str, ...] = ()):
        from torch.func import stack_module_state

        if not models:
            raise ValueError("StackedModels needs at least one model")
        self.complete = tuple(complete)  # MultimodalModel's `complete`: modalities present in every row
        params, buffers = stack_module_state(list(models))
        self.k = len(models)
        self.params = {n: p.detach().to(device).requires_grad_(True) for n, p in params.items()}
        self.buffers = {n: b.to(device) for n, b in buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta")
        for module in self.base.modules():
            if hasattr(module, "vectorised"):  # layers with a vmappable formulation of their own
                module.vectorised = True
        # batch norm hands its new running statistics back instead of writing them (the step
        # is then a pure function of its inputs: CUDA graphs capture it whole)
        self._new_stats: dict[str, Tensor] = {}
        for name, norm in batch_norm_layers(self.base):
            norm.forward = _in_statistics_dtype(norm, _functional_norm(norm, name, self._new_stats))  # type: ignore[method-assign]
        self._fns: dict[bool, Any] = {}

    def _fn(self, shared: bool):
        """The vmapped model: ``(params, buffers, modalities, present, lengths) -> (outputs,
        new buffers)``, a pure function (the new running statistics of the batch norms that
        ran in training mode, by buffer name; the inputs are never written)."""
        if shared not in self._fns:
            from torch.func import functional_call, vmap

            base, complete, sink = self.base, self.complete, self._new_stats

            def one(params, buffers, modalities, present, lengths):
                sink.clear()
                out = functional_call(base, (params, buffers), (modalities, present, lengths, complete))
                new = dict(sink)
                sink.clear()
                return out, new

            in_dims = (0, 0, None, None, None) if shared else (0, 0, 0, 0, 0)
            self._fns[shared] = vmap(one, in_dims=in_dims, randomness="different")
        return self._fns[shared]

    def loss_step(self, loss: Callable[[Tensor, Tensor], Tensor]) -> Callable[..., tuple[Tensor, dict[str, Tensor]]]:
        """The training step's forward as a pure function: ``(params, buffers, modalities,
        present, lengths, targets) -> (K losses, new buffers)``, each model on its own batch
        (inputs with a leading K axis). Nothing it is given is written, so ``torch.compile``
        can capture it whole in CUDA graphs; the caller hands the new buffers to
        :meth:`set_buffers`."""
        from torch.func import vmap

        batched_loss = vmap(loss)
        fn = self._fn(False)

        def step(params, buffers, modalities, present, lengths, targets):
            out, new = fn(params, buffers, modalities, present, lengths)
            return batched_loss(out, targets), new

        return step

    @torch.no_grad()
    def set_buffers(self, new: dict[str, Tensor]) -> None:
        """Copy a step's new running statistics into the stacked buffers (their storage stays
        put: a CUDA graph that reads them keeps reading the current values)."""
        if new:
            names = list(new)
            torch._foreach_copy_([self.buffers[n] for n in names], [new[n] for n in names])

    def train(self, mode: bool = True) -> "StackedModels":
        self.base.train(mode)
        return self

    def eval(self) -> "StackedModels":
        return self.train(False)

    def forward(self, modalities: dict[str, Tensor], present: dict[str, Tensor], lengths: dict[str, Tensor],
                shared: bool = False) -> Tensor:
        with vmappable_attention():
            out, new = self._fn(shared)(self.params, self.buffers, modalities, present, lengths)
        self.set_buffers(new)
        return out

    __call__ = forward

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    def state_of(self, k: int) -> dict[str, Tensor]:
        """Model k's state dict (parameters and buffers), detached copies on the CPU."""
        out = {n: p[k].detach().to("cpu", copy=True).contiguous() for n, p in self.params.items()}
        out |= {n: b[k].detach().to("cpu", copy=True).contiguous() for n, b in self.buffers.items()}
        return out

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> Tensor:
        """Per-model ``nn.utils.clip_grad_norm_``: model k's gradients are scaled by
        ``min(1, max_norm / (||g_k|| + 1e-6))`` where ||g_k|| is the 2-norm over all its
        parameters' gradients. Returns the K total norms."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if not grads:
            return torch.zeros(self.k)
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(self.k, -1), 2, dim=1) for g in grads])  # [P, K]
        total = torch.linalg.vector_norm(norms, 2, dim=0)  # [K]
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype).view((self.k,) + (1,) * (g.dim() - 1)))
        return total

    @torch.no_grad()
    def predict(self, split: Split, device: torch.device, batch_size: int, amp: torch.dtype | None) -> Tensor:
        """Outputs of all K models for every row of `split`, ``[K, N, ...]`` float32 on the CPU
        (the vectorised counterpart of :func:`mmbench.evaluation.evaluator.predict`)."""
        self.eval()
        data = split if split.targets.device == device else split.to(device)
        outs = []
        for start in range(0, len(data), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data)), device=device)
            mods, present, lengths = _gather(data, index)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = self.forward(mods, present, lengths, shared=True)
            outs.append(out.float().cpu())
        if not outs:
            return torch.empty(self.k, 0)
        return torch.cat(outs, dim=1)


@contextlib.contextmanager
def vmappable_attention():
    """Attention as plain matmuls and softmax while the K models run under ``torch.func.vmap``.

    The fused attention kernels cannot be vmapped: on CUDA the memory-efficient kernel's
    backward rejects the log-sum-exp that vmap's batch rule hands it (``RuntimeError: LSE is
    not correctly aligned (strideH)``, H200, 2026-12-04), on the CPU the flash kernel has no
    batch rule and runs once per model. The math backend is composite (matmul, softmax), so
    vmap folds the K models into its batch dimension; ``nn.TransformerEncoderLayer``'s and
    ``nn.MultiheadAttention``'s fast paths (fused ATen ops, eval mode) are turned off too.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _in_statistics_dtype(norm: nn.Module, forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """`norm`'s forward with its input cast to the running statistics' dtype and the output cast back.

    Under bf16 autocast a batch norm receives bf16 activations while its statistics stay
    float32; ATen's kernels accept that mix only when weight and statistics are all float32.
    vmap's batch rule for batch norm passes a dummy weight in the *input's* dtype and applies
    the real one afterwards, so the mix is refused (``Expected running_mean to have type
    BFloat16 but got Float`` on CUDA, ``expected scalar type BFloat16 but found Float`` on the
    CPU). The one-by-one kernels compute in float32 for bf16 inputs anyway.
    """

    def run(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        stats = norm.running_mean
        if stats is None or x.dtype == stats.dtype or not x.is_floating_point():
            return forward(x, *args, **kwargs)
        return forward(x.to(stats.dtype), *args, **kwargs).to(x.dtype)

    return run


def _functional_norm(norm: nn.Module, name: str, sink: dict[str, Tensor]) -> Callable[..., Tensor]:
    """`norm`'s forward for the vmapped call: its output, with the new running statistics put
    into `sink` under their buffer names (:func:`~mmbench.models.functional_norm.batch_norm_step`)."""

    def run(x: Tensor, *args: Any) -> Tensor:
        out, stats = batch_norm_step(norm, x, *args)  # type: ignore[arg-type]
        if stats is not None:
            for key, value in zip(("running_mean", "running_var", "num_batches_tracked"), stats):
                sink[f"{name}.{key}"] = value
        return out

    return run


def _gather(data: Split, index: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """Rows `index` of a split's tensors (any index shape: the result keeps it as leading dims)."""
    flat = index.reshape(-1)
    lead = tuple(index.shape)

    def take(t: Tensor) -> Tensor:
        return t.index_select(0, flat).view(lead + tuple(t.shape[1:]))

    return ({k: take(v) for k, v in data.modalities.items()}, {k: take(v) for k, v in data.present.items()},
            {k: take(v) for k, v in data.lengths.items()})


def train_seeds(
    cfg: TrainConfig,
    seeds: Sequence[int],
    splits: dict[str, Split] | None = None,
    out_dirs: Sequence[str | Path] | None = None,
    progress: bool = False,
    compile: bool | str | None = None,
    on_epoch: Callable[[int], None] | None = None,
    vectorize: bool | None = None,
    resume: bool = True,
) -> list[TrainResult]:
    """Train `cfg` once per seed in `seeds`, all seeds at once; one TrainResult per seed, in order.

    ``cfg.seed`` is ignored (each result's ``config.seed`` is its seed). ``vectorize`` (default:
    on CUDA only) picks the vmapped path; without it the seeds are trained one after the other
    by :func:`~mmbench.training.trainer.train` itself. On a CPU the vmapped path is slower than
    that (vmap turns each convolution into a grouped one and adds layout copies around it, and
    a CPU is compute-bound anyway; see benchmarks/RESULTS.md), on a GPU it is what fills the
    device. ``compile`` (default: the trainer's choice, :func:`~mmbench.training.trainer.choose_step_mode`)
    wraps the vectorised loss in ``torch.compile`` with ``cfg.compile_mode``; a string is used as
    the compile mode instead (``"reduce-overhead"`` adds CUDA graphs on a GPU).
    ``out_dirs``, one per seed, receive the run files (see the module docstring).
    ``on_epoch(epoch)`` is called after each epoch's validation (benchmarks time epochs with
    it; vectorised path only). ``resume`` is the trainer's (one by one, each run continues from
    its folder's last checkpoint); the vectorised path always starts afresh. ``seconds`` of each result is the wall time of the whole call
    divided by the number of seeds.
    """
    started = time.perf_counter()
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise MMBenchError("train_seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise MMBenchError(f"train_seeds: duplicate seeds in {seeds}")
    if out_dirs is not None and len(out_dirs) != len(seeds):
        raise MMBenchError(f"train_seeds: {len(out_dirs)} run folders for {len(seeds)} seeds")
    spec = get_task(cfg.task)
    if spec.target.type == "retrieval":  # the dual encoder: one seed after the other
        vectorize = False
    device = resolve_device(cfg.device)
    amp = autocast_dtype(cfg.precision, device)
    if splits is None:
        splits = load_training_splits(with_dataset_options(spec, cfg.dataset_options), cfg.data_dir)
    if vectorize is None:
        vectorize = device.type == "cuda"
    if not vectorize:
        from mmbench.training.trainer import train

        return [train(replace(cfg, seed=s), out_dirs[i] if out_dirs is not None else None, progress=progress, splits=splits,
                      resume=resume) for i, s in enumerate(seeds)]
    train_split, val_split, test_split = splits["train"], splits["validation"], splits["test"]
    k = len(seeds)
    cfgs = [replace(cfg, seed=s) for s in seeds]

    models, model_config = [], None
    for s in seeds:
        torch.manual_seed(s)
        model_config = model_config_for(cfg, spec, train_split)
        models.append(MultimodalModel(model_config))
    assert model_config is not None
    mod_dropout = ModalityDropout(cfg.modality_dropout) if cfg.modality_dropout > 0 else None
    # as the trainer: batch norm of a modality present in every training row takes ATen's fused
    # kernel (under vmap the masked route cannot read the mask, so it would always run)
    complete = complete_modalities(train_split, mod_dropout is not None)
    stacked = StackedModels(models, device, complete)
    del models
    # fused AdamW on CUDA: one kernel for all stacked parameters (elementwise, so per seed)
    opt = torch.optim.AdamW(stacked.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            **({"fused": True} if device.type == "cuda" else {}))

    if compile is None:  # the trainer's choice for this step (on CUDA: see choose_step_mode)
        step_mode = choose_step_mode(cfg, device, stacked.base, cfg.epochs * math.ceil(len(train_split) / cfg.batch_size),
                                     vectorised=True, static_shapes=len(train_split) % cfg.batch_size == 0)
        log_step_mode(step_mode, f"{spec.name} {cfg.fusion} seeds {','.join(map(str, seeds))}")
        use_compile: bool | str = (step_mode.mode or True) if step_mode.compile else False
    else:
        use_compile = compile

    step_losses = stacked.loss_step(loss_fn(spec.target.type))
    if use_compile:
        mode_cfg = replace(cfg, compile_mode=use_compile) if isinstance(use_compile, str) else cfg
        mode = compile_mode(mode_cfg)
        if device.type == "cuda" and mode is not None and "no-cudagraphs" not in mode:
            # parameters (stepped in place by AdamW) and buffers (copied into by set_buffers) keep
            # their storage: CUDA graphs read them where they are instead of copying them in
            for t in (*stacked.params.values(), *stacked.buffers.values()):
                torch._dynamo.mark_static_address(t)
        step_fn = torch.compile(step_losses, backend=cfg.compile_backend, mode=mode)
    else:
        step_fn = step_losses

    data = train_split.to(device)
    val_on = val_split.to(device)
    primary = spec.primary
    sign = 1.0 if primary.higher_is_better else -1.0
    n = len(data)
    best_value = [-math.inf] * k
    best_epoch = [-1] * k
    stale = [0] * k
    histories: list[list[dict[str, Any]]] = [[] for _ in range(k)]
    best_state: dict[str, Tensor] | None = None  # stacked copies of params + buffers
    y_val = val_split.targets.cpu().numpy()
    ids = [""] * cfg.batch_size  # Batch length for ModalityDropout

    bar = EpochProgress(progress, cfg.epochs, f"{spec.name} {cfg.fusion} seeds {','.join(map(str, seeds))}")
    for epoch in range(cfg.epochs):
        active = [stale[i] < cfg.patience for i in range(k)]
        if not any(active):
            break
        gens = [epoch_generator(s, epoch) for s in seeds]
        torch.manual_seed(seeds[0] * 1_000_003 + epoch)  # dropout masks: reproducible, not per-seed
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(data.targets.device)
        stacked.train()
        total = torch.zeros(k, dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
        count = 0
        for start in range(0, n, cfg.batch_size):
            index = perms[:, start : start + cfg.batch_size]
            b = index.shape[1]
            mods, present, lengths = _gather(data, index)
            targets = data.targets.index_select(0, index.reshape(-1)).view((k, b) + tuple(data.targets.shape[1:]))
            if mod_dropout is not None:
                mods, present, lengths = _modality_dropout(mod_dropout, mods, present, lengths, targets, gens, ids[:b])
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None), vmappable_attention():
                losses, new_buffers = step_fn(stacked.params, stacked.buffers, mods, present, lengths, targets)
            stacked.set_buffers(new_buffers)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            if cfg.max_grad_norm:
                stacked.clip_grad_norm_(cfg.max_grad_norm)
            opt.step()
            total += losses.detach().to(total.dtype) * b  # no host sync per step
            count += b
        train_loss = (total / max(count, 1)).tolist()
        if cfg.bn_recalibration:
            _recalibrate_batch_norm(stacked, data, cfg.bn_recalibration, cfg.batch_size, seeds, amp)

        outputs = stacked.predict(val_on, device, cfg.eval_batch_size, amp)
        improved_any = []
        for i in range(k):
            if not active[i]:
                continue
            metrics = score(spec, y_val, outputs_to_predictions(outputs[i], spec))
            value = metrics[primary.name]
            improved = sign * value > best_value[i]
            if improved:
                best_value[i], best_epoch[i], stale[i] = sign * value, epoch, 0
                improved_any.append(i)
            else:
                stale[i] += 1
            histories[i].append({"epoch": epoch, "train_loss": train_loss[i], "val": metrics, "best": improved,
                                 "samples_seen": [count], "samples_unique": n})
        if improved_any:
            best_state = _update_best(best_state, stacked, improved_any)
        bar.advance(1, f"epoch {epoch}")
        if on_epoch is not None:
            on_epoch(epoch)
    bar.close()

    results = []
    for i, s in enumerate(seeds):
        torch.manual_seed(s)
        model = MultimodalModel(model_config)
        if best_state is not None and best_epoch[i] >= 0:
            model.load_state_dict({name: t[i] for name, t in best_state.items()})
        else:
            model.load_state_dict(stacked.state_of(i))
        model = model.to(device)
        run = lambda sp, m=model: outputs_to_predictions(predict(m, sp, device, cfg.eval_batch_size, amp), spec)  # noqa: E731
        val_metrics = score(spec, y_val, run(val_on))
        test_metrics = evaluate_conditions(spec, test_split, run,
                                           [c for c in spec.conditions() if c.name == "clean"] or None).get("clean", {})
        results.append(TrainResult(None, cfgs[i], model_config, best_epoch[i], val_metrics, test_metrics, histories[i], model, 0.0))
    seconds = (time.perf_counter() - started) / k
    for i, r in enumerate(results):
        r.seconds = seconds
        if out_dirs is not None:
            r.run_dir = Path(out_dirs[i])
            _write_run(r)
    return results


@torch.no_grad()
def _recalibrate_batch_norm(stacked: StackedModels, data: Split, rows: int, batch_size: int, seeds: Sequence[int],
                            amp: torch.dtype | None) -> None:
    """:func:`mmbench.training.trainer.recalibrate_batch_norm` for the K models at once: model k's
    running statistics become the mean of its per-batch statistics over `rows` training rows
    chosen with seed k (the rows its one-by-one run would use), in batches of `batch_size`."""
    norms = batch_norm_layers(stacked.base)
    if not norms or rows <= 0:
        return
    for name, _ in norms:
        stacked.buffers[f"{name}.running_mean"].zero_()
        stacked.buffers[f"{name}.running_var"].fill_(1.0)
        stacked.buffers[f"{name}.num_batches_tracked"].zero_()
    index = torch.stack([recalibration_rows(len(data), rows, s) for s in seeds]).to(data.targets.device)
    was_training = stacked.base.training
    stacked.train()
    try:
        # the vmapped call reads the base module's momentum on each call
        for start in averaged_batches([m for _, m in norms], index.shape[1], batch_size):
            mods, present, lengths = _gather(data, index[:, start : start + batch_size])
            with torch.autocast(data.targets.device.type, dtype=amp, enabled=amp is not None):
                stacked(mods, present, lengths)
    finally:
        stacked.train(was_training)


def _update_best(best: dict[str, Tensor] | None, stacked: StackedModels, improved: list[int]) -> dict[str, Tensor]:
    tensors = {**stacked.params, **stacked.buffers}
    if best is None:
        return {n: t.detach().clone() for n, t in tensors.items()}
    idx = torch.tensor(improved, device=next(iter(tensors.values())).device)
    for n, t in tensors.items():
        best[n].index_copy_(0, idx, t.detach().index_select(0, idx))
    return best


def _modality_dropout(drop: ModalityDropout, mods, present, lengths, targets, gens, ids):
    """The trainer's modality dropout, seed by seed, each from its own epoch generator."""
    out_m: dict[str, list[Tensor]] = {m: [] for m in mods}
    out_p: dict[str, list[Tensor]] = {m: [] for m in present}
    out_l: dict[str, list[Tensor]] = {m: [] for m in lengths}
    for i, g in enumerate(gens):
        b = drop(Batch(ids, {m: v[i] for m, v in mods.items()}, {m: v[i] for m, v in present.items()}, targets[i],
                       {m: v[i] for m, v in lengths.items()}), g)
        for m in out_m:
            out_m[m].append(b.modalities[m])
        for m in out_p:
            out_p[m].append(b.present[m])
        for m in out_l:
            out_l[m].append(b.lengths[m])
    return ({m: torch.stack(v) for m, v in out_m.items()}, {m: torch.stack(v) for m, v in out_p.items()},
            {m: torch.stack(v) for m, v in out_l.items()})


def _write_run(result: TrainResult) -> None:
    import json

    from mmbench.core.io import atomic_write_json, atomic_write_text
    from mmbench.core.source import source_hash

    run_dir = result.run_dir
    assert run_dir is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", {"train": result.config.to_dict(), "model": result.model_config,
                                                "trained_by": "mmbench.training.multiseed", "source": source_hash()})
    atomic_write_text(run_dir / "log.jsonl", "".join(json.dumps(h) + "\n" for h in result.history))
    save_model(run_dir / "best.safetensors", result.model, result.model_config, {"epoch": str(result.best_epoch)})
    atomic_write_json(run_dir / "metrics.json", {"best_epoch": result.best_epoch, "validation": result.val_metrics,
                                                 "test": result.test_metrics, "seconds": result.seconds})
