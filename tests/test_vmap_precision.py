"""The seeds-vectorised path (torch.func.vmap over stacked models) under bf16 activations,
for every registered fusion and the encoders with batch norm, attention and recurrence.

On the GPU `reproduce` runs this path under bf16 autocast. Two failures seen there on an H200
(2026-12-04) are checked here on the CPU:

* batch norm: vmap's batch rule hands ATen a weight in the input's dtype with float32 running
  statistics; with bf16 activations that is refused (CUDA: ``Expected running_mean to have type
  BFloat16 but got Float``; CPU: ``expected scalar type BFloat16 but found Float``);
* attention: the fused attention kernels under vmap (CUDA: ``LSE is not correctly aligned
  (strideH)`` in the memory-efficient kernel; CPU: the flash kernel has no batch rule).

CPU autocast does not act inside vmap (torch 2.11: a convolution there stays float32), so
:class:`Bf16Activations` casts as CUDA's autocast does for the ops that carry the models
(convolutions, linear layers and matmuls in bf16; norms, softmax and losses in float32).
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from mmbench.data.samples import Split
from mmbench.models.model import MultimodalModel, describe_inputs
from mmbench.core.registry import FUSIONS
from mmbench.training.multiseed import StackedModels

K = 3
LOWER = {F.linear, F.conv1d, F.conv2d, F.conv3d, torch.matmul, torch.bmm, torch.mm, torch.addmm, torch.baddbmm,
         torch.Tensor.matmul, torch.Tensor.__matmul__, torch.einsum, torch.ops.aten.gru.input}
FLOAT32 = {F.layer_norm, F.group_norm, F.softmax, F.log_softmax, F.cross_entropy, F.mse_loss,
           F.binary_cross_entropy_with_logits}
FUSED_ATTENTION = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                   "_scaled_dot_product_cudnn_attention", "_transformer_encoder_layer_fwd", "_native_multi_head_attention")


class Bf16Activations(TorchFunctionMode):
    """CUDA's bf16 autocast casting rules for the ops above, on the CPU and inside vmap."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        to = torch.bfloat16 if func in LOWER else torch.float32 if func in FLOAT32 else None
        if to is not None:
            def cast(a):
                if isinstance(a, (list, tuple)):
                    return type(a)(cast(x) for x in a)
                return a.to(to) if isinstance(a, torch.Tensor) and a.is_floating_point() else a

            args, kwargs = tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


class AtenOps(TorchDispatchMode):
    """Records the ATen ops that run (below vmap's batch rules: the kernels that really run)."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


def _options(name: str, modalities) -> dict:
    return {"modality": sorted(modalities)[0]} if name == "unimodal" else {}


def _images(n=12, seed=0, missing=False) -> Split:
    g = torch.Generator().manual_seed(seed)
    present = {"image": torch.ones(n, dtype=torch.bool), "audio": torch.ones(n, dtype=torch.bool)}
    if missing:
        present["audio"][::3] = False
    split = Split("train", [str(i) for i in range(n)], {"image": torch.randn(n, 1, 12, 12, generator=g),
                                                         "audio": torch.randn(n, 1, 16, 16, generator=g)},
                  present, torch.randint(0, 3, (n,), generator=g))
    return split.with_present(present)


def _sequences(n=12, steps=6, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (n,), generator=g)
    seq = torch.randn(n, steps, 4, generator=g) * (torch.arange(steps)[None, :, None] < lengths[:, None, None])
    present = {"seq": torch.rand(n, generator=g) > 0.2, "vec": torch.rand(n, generator=g) > 0.2}
    split = Split("train", [str(i) for i in range(n)], {"seq": seq, "vec": torch.randn(n, 5, generator=g)},
                  present, torch.randint(0, 3, (n,), generator=g), {"seq": lengths})
    return split.with_present(present)


BN = {"name": "cnn", "channels": 8, "blocks": 2, "norm": "batch"}


def _models(fusion: str, split: Split, encoders: dict) -> list[MultimodalModel]:
    config = {"inputs": describe_inputs(split), "target_type": "classification", "num_classes": 3, "fusion": fusion,
              "fusion_options": _options(fusion, split.modality_names), "encoders": encoders, "embed_dim": 16,
              "hidden_dim": 16, "dropout": 0.0}
    models = []
    for seed in range(K):
        torch.manual_seed(seed)
        model = MultimodalModel(config)
        for module in model.modules():  # dropout off everywhere (some layers fix their own rate)
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            elif isinstance(module, torch.nn.MultiheadAttention):
                module.dropout = 0.0
        models.append(model)
    return models


def _vectorised_vs_one_by_one(models, split: Split, complete=(), train=True, ops: AtenOps | None = None,
                              bf16: bool = True):
    """Outputs and parameter gradients of the K models, vmapped (its ATen ops recorded in
    `ops`) and one by one, both under bf16 activations (gradients of the sum of squares)."""
    stacked = StackedModels(models, "cpu", complete).train(train)
    for m in models:
        m.train(train)
    k_split = lambda d: {m: v.expand((K,) + tuple(v.shape)) for m, v in d.items()}  # noqa: E731
    with Bf16Activations() if bf16 else contextlib.nullcontext(), warnings.catch_warnings():
        # an op without a batch rule runs once per model (vmap's slow fallback): an error here
        warnings.filterwarnings("error", message=".*not yet implemented the batching rule.*")
        with ops if ops is not None else contextlib.nullcontext():
            out = stacked(k_split(split.modalities), k_split(split.present), k_split(split.lengths))
            out.float().square().sum().backward()
        ones = []
        for m in models:
            o = m(split.modalities, split.present, split.lengths, complete)
            o.float().square().sum().backward()
            ones.append(o)
    return stacked, out, torch.stack(ones)


def _assert_match(stacked: StackedModels, out, ones, models, tol: float = 0.1):
    """Outputs and gradients equal within `tol` (bf16: rounding differs between the batched
    and the one-by-one kernels; float32 runs are checked with a far smaller `tol`)."""
    assert out.dtype == ones.dtype
    torch.testing.assert_close(out.float(), ones.float(), rtol=tol / 2, atol=tol / 2)
    for name, p in stacked.params.items():
        grads = [dict(m.named_parameters())[name].grad for m in models]
        if grads[0] is None:  # a parameter this input does not reach
            assert p.grad is None or not p.grad.any(), name
            continue
        want = torch.stack(grads)
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # each model's gradient as a whole: its error relative to its norm
        err = torch.linalg.vector_norm((p.grad - want).reshape(K, -1).float(), dim=1)
        size = torch.linalg.vector_norm(want.reshape(K, -1).float(), dim=1)
        assert (err <= tol * size + tol * 1e-3).all(), (name, err.tolist(), size.tolist())


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp32"])
@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_every_fusion_vectorised_equals_one_by_one(fusion, bf16):
    # a GRU-encoded sequence modality beside a vector one: every fusion, sequence-aware ones
    # with their per-step tokens; the vectorised GRU runs step by step in plain ops
    split = _sequences()
    models = _models(fusion, split, {})
    stacked, out, ones = _vectorised_vs_one_by_one(models, split, bf16=bf16)
    _assert_match(stacked, out, ones, models, 0.1 if bf16 else 1e-4)


@pytest.mark.parametrize("complete", [True, False], ids=["complete", "masked"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batch_norm_cnns_vectorised_under_bf16(complete, train):
    # fails without the cast to the statistics' dtype: "expected scalar type BFloat16 but found Float"
    split = _images(missing=not complete)
    models = _models("concat", split, {"image": dict(BN), "audio": dict(BN)})
    stacked, out, ones = _vectorised_vs_one_by_one(models, split, ("image", "audio") if complete else (), train)
    _assert_match(stacked, out, ones, models)
    for name, b in stacked.buffers.items():  # running statistics stay float32 and follow each model's own
        want = torch.stack([dict(m.named_buffers())[name] for m in models])
        assert b.dtype == want.dtype
        torch.testing.assert_close(b.float(), want.float(), rtol=0.02, atol=0.02, msg=name)


@pytest.mark.parametrize("fusion,encoder", [("attention", "gru"), ("mult", "gru"), ("concat", "transformer"),
                                            ("attention", "transformer")])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_no_fused_attention_kernel_under_vmap(fusion, encoder, train):
    # the fused kernels cannot be vmapped (CUDA: "LSE is not correctly aligned (strideH)")
    split = _sequences()
    models = _models(fusion, split, {"seq": {"name": encoder}})
    ops = AtenOps()
    stacked, out, ones = _vectorised_vs_one_by_one(models, split, train=train, ops=ops)
    assert not [n for n in ops.names if any(f in n for f in FUSED_ATTENTION)], sorted(ops.names)
    assert any("softmax" in n for n in ops.names)
    _assert_match(stacked, out, ones, models)


def test_attention_kernels_are_restored_after_the_vectorised_call():
    split = _sequences()
    models = _models("attention", split, {})
    stacked = StackedModels(models, "cpu")
    before = (torch.backends.mha.get_fastpath_enabled(), torch.backends.cuda.flash_sdp_enabled(),
              torch.backends.cuda.mem_efficient_sdp_enabled())
    k_split = lambda d: {m: v.expand((K,) + tuple(v.shape)) for m, v in d.items()}  # noqa: E731
    stacked(k_split(split.modalities), k_split(split.present), k_split(split.lengths))
    assert (torch.backends.mha.get_fastpath_enabled(), torch.backends.cuda.flash_sdp_enabled(),
            torch.backends.cuda.mem_efficient_sdp_enabled()) == before
