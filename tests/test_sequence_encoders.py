"""The GRU encoder's two directions over padded batches equal nn.GRU over packed sequences,
and the encoder exports with torch.export (which packing, with its host-side lengths, does not)."""

import pytest
import torch
from torch import nn

from mmbench.models.encoders.sequence import GRUEncoder


def _packed_reference(enc: GRUEncoder, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """The per-step states the way research code computes them: pack, nn.GRU, pad with zeros."""
    b, t = x.shape[:2]
    mask = torch.ones(b, t, dtype=torch.bool) if lengths is None else torch.arange(t)[None] < lengths[:, None]
    h = enc.inp(x.float()) * mask.unsqueeze(-1)
    if lengths is None:
        out, _ = enc.gru(h)
    else:
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(enc.gru(packed)[0], batch_first=True, total_length=t)
    return enc.out(out)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_gru_equals_packed_nn_gru(layers, with_lengths):
    torch.manual_seed(layers)
    enc = GRUEncoder((6,), out_dim=5, hidden=7, layers=layers).eval()
    x = torch.randn(5, 9, 6)
    lengths = torch.tensor([9, 4, 1, 7, 2]) if with_lengths else None
    if with_lengths:  # padding holds large values: none of it may reach a real step
        x = torch.where(torch.arange(9)[None, :, None] < lengths[:, None, None], x, torch.full_like(x, 1e3))
    got = enc(x, lengths)
    want = _packed_reference(enc, x, lengths)
    mask = got.mask
    torch.testing.assert_close(got.sequence[mask], want[mask], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.pooled, (want * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))


def test_gru_gradients_equal_packed():
    torch.manual_seed(0)
    enc = GRUEncoder((4,), out_dim=3, hidden=5, layers=2)
    x = torch.randn(3, 6, 4)
    lengths = torch.tensor([6, 2, 5])
    enc(x, lengths).pooled.square().sum().backward()
    ours = {n: p.grad.clone() for n, p in enc.named_parameters()}
    enc.zero_grad()
    mask = torch.arange(6)[None] < lengths[:, None]
    want = _packed_reference(enc, x, lengths)
    ((want * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)).square().sum().backward()
    for n, p in enc.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_gru_exports_with_dynamic_lengths():
    torch.manual_seed(0)
    enc = GRUEncoder((6,), out_dim=5, hidden=7).eval()

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = enc

        def forward(self, x, lengths):
            return self.enc(x, lengths).pooled

    x, lengths = torch.randn(4, 8, 6), torch.tensor([8, 3, 1, 5])
    program = torch.export.export(Pooled(), (x, lengths))
    other = torch.tensor([2, 8, 8, 6])  # lengths are data, not baked into the program
    torch.testing.assert_close(program.module()(x, other), enc(x, other).pooled)
    torch.testing.assert_close(program.module()(x, lengths), enc(x, lengths).pooled)


def test_old_checkpoint_keys_unchanged():
    # the parameters are nn.GRU's own: state dicts written before keep loading
    enc = GRUEncoder((6,), out_dim=5, hidden=7, layers=2)
    assert {n for n, _ in enc.named_parameters() if n.startswith("gru.")} == {
        f"gru.{kind}_l{layer}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        for layer in (0, 1) for suffix in ("", "_reverse")}


@pytest.mark.parametrize("temporal", ["gru", "mean"])
def test_clip_model_with_gru_audio_exports(temporal):
    # the clips baseline's model (frames -> video encoder, audio [T, F] -> gru), exported with
    # a dynamic batch as a .pt2 submission is; its outputs equal the eager model's
    from mmbench.models.model import MultimodalModel

    torch.manual_seed(0)
    cfg = {"target_type": "multiclass", "num_classes": 2, "modalities": ["audio", "video"], "fusion": "concat",
           "inputs": {"video": {"shape": [3, 16, 16], "sequence": True}, "audio": {"shape": [8], "sequence": True}},
           "encoders": {"video": {"temporal": temporal}}, "embed_dim": 8, "hidden_dim": 8}
    model = MultimodalModel(cfg).eval()
    assert type(model.encoders["audio"]).__name__ == "GRUEncoder"
    b = 3
    mods = {"video": torch.randn(b, 4, 3, 16, 16), "audio": torch.randn(b, 10, 8)}
    present = {"video": torch.tensor([True, True, False]), "audio": torch.tensor([True, False, True])}
    lengths = {"video": torch.tensor([4, 2, 0]), "audio": torch.tensor([10, 0, 6])}
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(model, (mods, present, lengths), dynamic_shapes=(
        {k: {0: batch} for k in mods}, {k: {0: batch} for k in present}, {k: {0: batch} for k in lengths}))
    torch.testing.assert_close(program.module()(mods, present, lengths), model(mods, present, lengths))
    two = {k: v[:2] for k, v in mods.items()}, {k: v[:2] for k, v in present.items()}, {k: v[:2] for k, v in lengths.items()}
    torch.testing.assert_close(program.module()(*two), model(*two))
