"""The CNN encoder's fast CPU paths give what the plain ones give: pooling before the ReLU,
the three routes of the masked batch norm, and channels-last activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmbench.core.errors import SpecError
from mmbench.models.encoders.cnn import CNNEncoder, MaskedBatchNorm2d
from mmbench.training.trainer import TrainConfig, set_memory_format, train


def _encoder(norm: str, seed: int = 0) -> CNNEncoder:
    torch.manual_seed(seed)
    return CNNEncoder((1, 28, 28), out_dim=8, channels=8, blocks=3, norm=norm).train()


def _relu_then_pool(enc: CNNEncoder) -> CNNEncoder:
    """The same encoder with the stages in the textbook order conv-norm-ReLU-pool."""
    layers = list(enc.features)
    for i in [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]:
        layers[i], layers[i + 1] = layers[i + 1], layers[i]
    enc.features = nn.Sequential(*layers)
    return enc


def _run(enc: CNNEncoder, x: torch.Tensor, present, amp: bool):
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = enc(x, present=present).pooled
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out.float() * weights).sum().backward()
    return out.detach(), x.grad, [p.grad for p in enc.parameters()], [b.clone() for b in enc.buffers()]


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x[:, :, :12, :12] = 0.0  # flat regions: equal values in many pooling windows
    present = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    return x, present


@pytest.mark.parametrize("norm", ["group", "batch"])
@pytest.mark.parametrize("amp", [False, True])
def test_pooling_before_relu_is_bit_identical(norm, amp):
    x, present = _inputs()
    for mask in (None, present):
        new = _run(_encoder(norm), x, mask, amp)
        old = _run(_relu_then_pool(_encoder(norm)), x, mask, amp)
        assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])
        assert all(torch.equal(a, b) for a, b in zip(new[2], old[2]))
        assert all(torch.equal(a, b) for a, b in zip(new[3], old[3]))


def _bn(seed=0) -> MaskedBatchNorm2d:
    torch.manual_seed(seed)
    bn = MaskedBatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1)
    return bn.train()


@pytest.mark.parametrize("fill", [0.0, 1e6, float("nan")])
def test_batch_norm_routes_agree(fill):
    """Fused kernel on the present rows (eager CPU) == masked reductions (compile / vmap / CUDA)."""
    x = torch.randn(7, 4, 6, 5) * 2 + 0.5
    present = torch.tensor([True, False, True, True, False, True, True])
    x[~present] = fill
    weights = torch.randn(7, 4, 6, 5)
    results = []
    for route in ("subset", "static"):
        bn = _bn()
        xx = x.clone().requires_grad_()
        out = bn(xx, present) if route == "subset" else bn._static(xx, present)
        # the loss also reads the missing rows' outputs: they must not feed the statistics' gradient
        loss = (torch.where(present.view(-1, 1, 1, 1), out, out.nan_to_num()) * weights).sum()
        loss.backward()
        results.append((out, xx.grad, [bn.running_mean, bn.running_var, bn.num_batches_tracked],
                        [bn.weight.grad, bn.bias.grad]))
    (out_a, gx_a, stats_a, grads_a), (out_b, gx_b, stats_b, grads_b) = results
    torch.testing.assert_close(out_a[present], out_b[present])
    torch.testing.assert_close(gx_a[present], gx_b[present])
    for a, b in zip(stats_a, stats_b):
        assert torch.isfinite(a.float()).all()
        torch.testing.assert_close(a, b)
    if fill != fill:  # NaN rows give NaN affine gradients (0 x NaN) on either route, as in BatchNorm
        return
    torch.testing.assert_close(out_a, out_b)  # missing rows: normalised with the present rows' statistics
    torch.testing.assert_close(gx_a, gx_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b)


def test_missing_rows_do_not_feed_the_statistics_gradient():
    x = torch.randn(6, 4, 5, 5)
    present = torch.tensor([True, True, False, True, False, True])
    for route in ("subset", "static"):
        bn = _bn()
        xx = x.clone().requires_grad_()
        out = bn(xx, present) if route == "subset" else bn._static(xx, present)
        out[~present].sum().backward()
        assert torch.all(xx.grad[present] == 0), route
        assert torch.all(xx.grad[~present] != 0), route


def test_all_present_is_batchnorm_on_every_route():
    x = torch.randn(5, 4, 6, 6)
    plain = nn.BatchNorm2d(4).train()
    ones = torch.ones(5, dtype=torch.bool)
    for route in ("fused", "static"):
        bn = _bn()
        plain.load_state_dict(bn.state_dict())
        out = bn(x, ones) if route == "fused" else bn._static(x, ones)
        torch.testing.assert_close(out, plain(x))
        torch.testing.assert_close(bn.running_var, plain.running_var)


def _hooked_layouts(enc: CNNEncoder) -> list[bool]:
    layouts: list[bool] = []
    for layer in enc.features:
        if isinstance(layer, nn.Conv2d):
            layer.register_forward_hook(
                lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last) and o.shape[1] > 1))
    return layouts


def test_channels_last_gives_the_same_values():
    x, present = _inputs()
    nchw = _encoder("batch")
    cl = _encoder("batch")
    set_memory_format(cl, "auto", torch.device("cpu"))
    assert cl.channels_last and not nchw.channels_last
    layouts = _hooked_layouts(cl)
    a, b = _run(nchw, x, present, False), _run(cl, x, present, False)
    assert layouts and all(layouts)  # every convolution ran channels-last (the 1-channel input too)
    torch.testing.assert_close(b[0], a[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b[1], a[1], rtol=1e-4, atol=1e-6)
    for ga, gb in zip(a[2], b[2]):
        torch.testing.assert_close(gb, ga, rtol=1e-3, atol=1e-5)


def test_memory_format_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    group, batch = _encoder("group"), _encoder("batch")
    for enc in (group, batch):
        set_memory_format(enc, "auto", cpu)
    assert batch.channels_last and not group.channels_last  # GroupNorm's channels-last backward is slow
    set_memory_format(batch, "auto", cuda)
    assert not batch.channels_last
    set_memory_format(group, "channels_last", cpu)
    assert group.channels_last
    set_memory_format(batch, "contiguous", cpu)
    assert not batch.channels_last
    with pytest.raises(SpecError, match="memory_format must be"):
        set_memory_format(batch, "nhwc", cpu)


def test_trainer_memory_formats_agree():
    from tests.test_cnn_norm import _image_splits

    splits = _image_splits()
    enc = {"channels": 8, "blocks": 2, "norm": "batch"}
    base = dict(task="avmnist", fusion="concat", epochs=2, batch_size=40, embed_dim=16, hidden_dim=16, lr=3e-4,
                device="cpu", dropout=0.0, modality_dropout=0.3, encoders={"image": enc, "audio": dict(enc)})
    runs = {fmt: train(TrainConfig(**base, memory_format=fmt), progress=False, splits=splits)
            for fmt in ("contiguous", "auto")}
    a, b = runs["contiguous"], runs["auto"]
    for ha, hb in zip(a.history, b.history):
        assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4)
    for name, value in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[name].float(), value.float(), rtol=1e-3, atol=1e-4, msg=name)
    again = train(TrainConfig(**base, memory_format="auto"), progress=False, splits=splits)
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in b.history]  # deterministic


def test_complete_modalities_skip_the_mask(monkeypatch):
    """The trainer names the modalities present in every training row: their batch norms take the
    fused kernel without reading the mask, on every device (checked here by forbidding the
    masked-reduction route, which CUDA, compile and vmap would take)."""
    from tests.test_cnn_norm import _image_splits, _model

    import mmbench.models.encoders.cnn as cnn

    model = _model().train()
    image, audio = torch.randn(6, 1, 12, 12), torch.randn(6, 1, 16, 16)
    ones = {"image": torch.ones(6, dtype=torch.bool), "audio": torch.ones(6, dtype=torch.bool)}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    masked = model({"image": image, "audio": audio}, ones)
    model.load_state_dict(state)
    monkeypatch.setattr(cnn, "_eager_cpu", lambda *t: False)  # as on CUDA: no host reads of the mask
    # the static route, in place (`_static`) or handing its statistics back (`static_step`, under vmap)
    monkeypatch.setattr(MaskedBatchNorm2d, "static_step", lambda *a: pytest.fail("masked reductions used"))
    named = model({"image": image, "audio": audio}, ones, complete=("audio", "image"))
    assert torch.equal(named, masked)

    splits = _image_splits()  # audio missing in ~30% of the rows: only the image is complete
    splits["train"].present["audio"][:] = True
    enc = {"channels": 4, "blocks": 2, "norm": "batch"}
    base = dict(task="avmnist", fusion="concat", epochs=1, batch_size=40, embed_dim=8, hidden_dim=8, device="cpu",
                encoders={"image": enc, "audio": dict(enc)})
    train(TrainConfig(**base), progress=False, splits=splits)  # every training row complete: no masked route
    with pytest.raises(pytest.fail.Exception, match="masked reductions used"):
        train(TrainConfig(**base, modality_dropout=0.3), progress=False, splits=splits)
    # the same for the seeds vmapped together (reproduce on a GPU), batch-norm recalibration included
    from mmbench.training.multiseed import train_seeds

    train_seeds(TrainConfig(**base, bn_recalibration=40), [0, 1], splits=splits, vectorize=True)
    with pytest.raises(pytest.fail.Exception, match="masked reductions used"):
        train_seeds(TrainConfig(**base, modality_dropout=0.3), [0, 1], splits=splits, vectorize=True)


def test_batch_norm_recalibration_averages_the_chosen_rows():
    from mmbench.training.trainer import recalibrate_batch_norm
    from tests.test_cnn_norm import _image_splits, _model

    model = _model().eval()
    data = _image_splits()["train"]
    first = model.encoders["image"].features[1]
    seen = []
    first.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().mean((0, 2, 3))))
    first.running_mean.fill_(5.0)
    recalibrate_batch_norm(model, data, rows=100, batch_size=40, seed=3, device=torch.device("cpu"), amp=None)
    assert len(seen) == 3  # batches of 40, 40 and 20 rows
    torch.testing.assert_close(first.running_mean, torch.stack(seen).mean(0))  # batch means averaged
    assert first.momentum == 0.1 and not model.training


def test_trainer_with_recalibration_keeps_the_recalibrated_statistics():
    from mmbench.training.trainer import recalibrate_batch_norm
    from tests.test_cnn_norm import _image_splits

    splits = _image_splits()
    enc = {"channels": 4, "blocks": 2, "norm": "batch"}
    cfg = TrainConfig(task="avmnist", fusion="concat", epochs=3, batch_size=40, embed_dim=8, hidden_dim=8, device="cpu",
                      bn_recalibration=80, encoders={"image": enc, "audio": dict(enc)})
    result = train(cfg, progress=False, splits=splits)
    kept = {k: v.clone() for k, v in result.model.state_dict().items() if "running" in k}
    recalibrate_batch_norm(result.model, splits["train"], 80, 40, cfg.seed, torch.device("cpu"), None)
    for name, value in result.model.state_dict().items():
        if "running" in name:  # the best epoch's weights, with the statistics recalibrated for them
            torch.testing.assert_close(value, kept[name], msg=name)
