"""The CNN encoder's masked batch norm: batch statistics over present samples only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmbench.data.samples import Split
from mmbench.models.encoders.cnn import CNNEncoder, MaskedBatchNorm2d
from mmbench.models.model import build_model
from mmbench.training.trainer import TrainConfig, train


def _pair(channels=3, seed=0):
    torch.manual_seed(seed)
    masked, plain = MaskedBatchNorm2d(channels), nn.BatchNorm2d(channels)
    with torch.no_grad():
        masked.weight.uniform_(0.5, 1.5), masked.bias.uniform_(-1, 1)
    plain.load_state_dict(masked.state_dict())
    return masked.train(), plain.train()


def test_without_mask_it_is_batchnorm():
    masked, plain = _pair()
    x = torch.randn(6, 3, 5, 4) * 3 + 1
    for _ in range(2):
        torch.testing.assert_close(masked(x), plain(x))
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)


@pytest.mark.parametrize("fill", [0.0, 1e6, float("nan")])
def test_statistics_come_from_present_samples_only(fill):
    masked, plain = _pair()
    x = torch.randn(7, 3, 5, 4) * 2 - 0.5
    present = torch.tensor([True, False, True, True, False, True, True])
    x[~present] = fill
    out = masked(x, present)
    expected = plain(x[present])  # BatchNorm over the present samples alone
    torch.testing.assert_close(out[present], expected)
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)  # unbiased, as BatchNorm's


def test_fewer_than_two_present_uses_running_statistics_and_keeps_them():
    masked, _ = _pair()
    masked.running_mean.fill_(0.3), masked.running_var.fill_(2.0)
    x = torch.randn(4, 3, 5, 4)
    present = torch.tensor([False, True, False, False])
    out = masked(x, present)
    expected = (x - 0.3) / torch.sqrt(torch.tensor(2.0) + masked.eps) * masked.weight.view(1, -1, 1, 1) \
        + masked.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(out, expected)
    assert torch.all(masked.running_mean == 0.3) and torch.all(masked.running_var == 2.0)
    assert int(masked.num_batches_tracked) == 0


def test_eval_mode_is_per_sample():
    masked, plain = _pair()
    masked(torch.randn(8, 3, 5, 4), torch.ones(8, dtype=torch.bool))
    masked.eval()
    x = torch.randn(5, 3, 5, 4)
    torch.testing.assert_close(masked(x)[:2], masked(x[:2]))


def test_bad_norm_is_refused():
    from mmbench.core.errors import SpecError

    with pytest.raises(SpecError, match="norm must be"):
        CNNEncoder((1, 12, 12), norm="layer")


def _model(norm="batch"):
    torch.manual_seed(0)
    return build_model({"task": "t", "target_type": "multiclass", "num_classes": 4, "modalities": ["audio", "image"],
                        "inputs": {"image": {"shape": [1, 12, 12], "sequence": False},
                                   "audio": {"shape": [1, 16, 16], "sequence": False}},
                        "fusion": "concat", "fusion_options": {"dropout": 0.0}, "embed_dim": 8, "hidden_dim": 16, "dropout": 0.0,
                        "encoders": {"image": {"name": "cnn", "channels": 4, "blocks": 2, "norm": norm},
                                     "audio": {"name": "cnn", "channels": 4, "blocks": 2, "norm": norm}}})


def test_missing_fill_does_not_leak_in_training_mode():
    model = _model().train()
    image, audio = torch.randn(6, 1, 12, 12), torch.randn(6, 1, 16, 16)
    present = {"image": torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool), "audio": torch.ones(6, dtype=torch.bool)}
    outs = []
    for fill in (0.0, 50.0, float("nan")):
        im = image.clone()
        im[~present["image"]] = fill
        outs.append(model({"image": im, "audio": audio}, present))
    assert torch.isfinite(outs[0]).all()
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(outs[2], outs[0])
    outs[0].sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def _image_splits(n_train=120, n_val=40):
    g = torch.Generator().manual_seed(0)

    def make(name, n):
        y = torch.randint(0, 10, (n,), generator=g)
        image = torch.randn(n, 1, 12, 12, generator=g) + y.view(-1, 1, 1, 1) * 0.2
        audio = torch.randn(n, 1, 16, 16, generator=g) - y.view(-1, 1, 1, 1) * 0.2
        present_audio = torch.rand(n, generator=g) > 0.3
        return Split(name, [f"{name}{i}" for i in range(n)], {"image": image, "audio": audio},
                     {"image": torch.ones(n, dtype=torch.bool), "audio": present_audio}, y)

    return {"train": make("train", n_train), "validation": make("val", n_val), "test": make("test", n_val)}


def test_batch_norm_cnn_trains_and_vmapped_seeds_match():
    from mmbench.training.multiseed import train_seeds

    splits = _image_splits()
    enc = {"channels": 16, "blocks": 2, "norm": "batch"}
    cfg = TrainConfig(task="avmnist", fusion="concat", epochs=2, batch_size=40, embed_dim=16, hidden_dim=16, lr=3e-4,
                      device="cpu", dropout=0.0, fusion_options={"dropout": 0.0}, encoders={"image": enc, "audio": dict(enc)})
    vec = train_seeds(cfg, [0, 1], splits=splits, vectorize=True)
    for s, v in zip([0, 1], vec):
        one = train(TrainConfig(**{**cfg.to_dict(), "seed": s}), progress=False, splits=splits)
        assert v.best_epoch == one.best_epoch
        for hv, ho in zip(v.history, one.history):
            assert hv["train_loss"] == pytest.approx(ho["train_loss"], rel=1e-5, abs=1e-5)
        sv, so = v.model.state_dict(), one.model.state_dict()
        for name in sv:  # running statistics included
            torch.testing.assert_close(sv[name].float(), so[name].float(), rtol=1e-3, atol=2e-4, msg=name)
        assert float(so["encoders.image.features.1.running_var"].sub(1).abs().max()) > 1e-3  # they moved


def test_weights_hash_covers_batch_norm_buffers():
    from mmbench.evaluation.evaluator import state_hash

    model = _model()
    before = state_hash(model)  # num_batches_tracked is a 0-dim int64 buffer
    model.encoders["image"].features[1].num_batches_tracked.add_(1)
    assert state_hash(model) != before
