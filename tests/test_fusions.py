"""Contract tests for every registered fusion (see mmbench/models/fusions/__init__.py).

Every fusion is checked with 2 and 3 modalities, and sequence-aware fusions also with
per-step sequences (one modality left without a sequence, to exercise the pooled-only path):
output shape, gradients (to every present modality, none to a missing one, no NaN in any
parameter gradient), invariance to the fill value of missing modalities and padded steps,
finite output for all-missing rows, learning a small problem that needs both modalities,
determinism, and a forward/backward pass of the full `MultimodalModel`.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mmbench.data.samples import Split
from mmbench.data.datasets.synthetic import SyntheticDataset
from mmbench.models.model import MultimodalModel, describe_inputs
from mmbench.core.registry import FUSIONS

NAMES = FUSIONS.names()
SEQUENCE_AWARE = [n for n in NAMES if FUSIONS.get(n).uses_sequences]
DIMS = {2: {"a": 6, "b": 5}, 3: {"a": 6, "b": 5, "c": 4}}
OUT = 3
STEPS = 5

CASES = [pytest.param(n, k, False, id=f"{n}-{k}mod") for n in NAMES for k in (2, 3)] + [
    pytest.param(n, k, True, id=f"{n}-{k}mod-seq") for n in SEQUENCE_AWARE for k in (2, 3)
]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The models here are tiny: intra-op threads only add contention (on a busy 2-core
    machine the learning tests ran ~10x slower with 2 threads than with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fusion_options(name: str, modalities) -> dict:
    return {"modality": sorted(modalities)[0]} if name == "unimodal" else {}


def build(name: str, dims: dict[str, int], out_dim: int = OUT, seed: int = 0):
    torch.manual_seed(seed)
    return FUSIONS.get(name)(dims, out_dim, **fusion_options(name, dims))


def used_modalities(name: str, dims) -> list[str]:
    return [sorted(dims)[0]] if name == "unimodal" else sorted(dims)


def make_inputs(dims: dict[str, int], with_seq: bool, seed: int = 0, min_len: int = 1):
    """Every presence pattern twice (so rows with everything / nothing present exist).
    With sequences, all modalities but the last have one, with random lengths."""
    g = torch.Generator().manual_seed(seed)
    mods = sorted(dims)
    patterns = list(itertools.product([True, False], repeat=len(mods))) * 2
    b = len(patterns)
    present = {m: torch.tensor([p[i] for p in patterns]) for i, m in enumerate(mods)}
    emb = {m: torch.randn(b, d, generator=g) for m, d in dims.items()}
    seqs = masks = None
    if with_seq:
        seqs, masks = {}, {}
        for m in mods[:-1]:
            seqs[m] = torch.randn(b, STEPS, dims[m], generator=g)
            lengths = torch.randint(min_len, STEPS + 1, (b,), generator=g)
            masks[m] = (torch.arange(STEPS)[None] < lengths[:, None]) & present[m][:, None]
    return emb, present, seqs, masks


def fill(emb, present, seqs, masks, mode: str, seed: int = 1):
    """Copies with every slot a fusion must ignore (missing rows, padded steps) overwritten."""
    g = torch.Generator().manual_seed(seed)

    def garbage(t):
        if mode == "zeros":
            return torch.zeros_like(t)
        if mode == "large":
            return torch.randn(t.shape, generator=g) * 1e6
        return torch.full_like(t, float("nan"))

    emb2 = {m: torch.where(present[m][:, None], e, garbage(e)) for m, e in emb.items()}
    seqs2 = None if seqs is None else {m: torch.where(masks[m][..., None], s, garbage(s)) for m, s in seqs.items()}
    return emb2, seqs2


def call(fusion, emb, present, seqs, masks):
    if fusion.uses_sequences:
        return fusion(emb, present, seqs, masks)
    return fusion(emb, present)


@pytest.mark.parametrize("name,k,with_seq", CASES)
def test_output_shape_and_finite(name, k, with_seq):
    dims = DIMS[k]
    fusion = build(name, dims)
    emb, present, seqs, masks = make_inputs(dims, with_seq)
    emb, seqs = fill(emb, present, seqs, masks, "nan")
    for train in (True, False):
        fusion.train(train)
        out = call(fusion, emb, present, seqs, masks)
        assert out.shape == (len(present["a"]), OUT)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,k,with_seq", CASES)
def test_gradients_reach_present_modalities_only(name, k, with_seq):
    dims = DIMS[k]
    fusion = build(name, dims).eval()
    emb, present, seqs, masks = make_inputs(dims, with_seq)
    emb, seqs = fill(emb, present, seqs, masks, "nan")
    for t in [*emb.values(), *(seqs or {}).values()]:
        t.requires_grad_(True)
    out = call(fusion, emb, present, seqs, masks)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(3))).sum().backward()

    for p_name, p in fusion.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"non-finite gradient in {p_name}"
    used = used_modalities(name, dims)
    for m in sorted(dims):
        g_emb = emb[m].grad if emb[m].grad is not None else torch.zeros_like(emb[m])
        per_row = g_emb.abs().sum(1)
        if seqs is not None and m in seqs:
            g_seq = seqs[m].grad if seqs[m].grad is not None else torch.zeros_like(seqs[m])
            assert torch.isfinite(g_seq).all()
            assert (g_seq[~masks[m]] == 0).all(), f"{m}: gradient reached padded or missing steps"
            per_row = per_row + g_seq.abs().sum((1, 2))
        assert torch.isfinite(per_row).all(), f"{m}: non-finite input gradient"
        assert (per_row[~present[m]] == 0).all(), f"{m}: gradient reached a missing modality"
        if m in used:
            assert (per_row[present[m]] > 0).all(), f"{m}: no gradient to a present modality"
        else:
            assert (per_row == 0).all(), f"{m}: unused modality got a gradient"


@pytest.mark.parametrize("name,k,with_seq", CASES)
def test_fill_value_of_masked_slots_is_ignored(name, k, with_seq):
    dims = DIMS[k]
    fusion = build(name, dims).eval()
    emb, present, seqs, masks = make_inputs(dims, with_seq)
    outs = {}
    with torch.no_grad():
        for mode in ("zeros", "large", "nan"):
            e, s = fill(emb, present, seqs, masks, mode)
            outs[mode] = call(fusion, e, present, s, masks)
    torch.testing.assert_close(outs["large"], outs["zeros"], rtol=0, atol=0)
    torch.testing.assert_close(outs["nan"], outs["zeros"], rtol=0, atol=0)


@pytest.mark.parametrize("name,k,with_seq", CASES)
def test_all_missing_rows_are_finite(name, k, with_seq):
    dims = DIMS[k]
    fusion = build(name, dims)
    emb, _, seqs, masks = make_inputs(dims, with_seq, min_len=0)
    b = len(next(iter(emb.values())))
    nobody = {m: torch.zeros(b, dtype=torch.bool) for m in dims}
    masks = None if masks is None else {m: torch.zeros_like(v) for m, v in masks.items()}
    emb, seqs = fill(emb, nobody, seqs, masks, "nan")
    emb = {m: e.requires_grad_(True) for m, e in emb.items()}
    for train in (True, False):
        fusion.train(train)
        fusion.zero_grad()
        out = call(fusion, emb, nobody, seqs, masks)
        assert torch.isfinite(out).all()
        out.sum().backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in fusion.parameters())
        assert all(e.grad is None or (e.grad == 0).all() for e in emb.values())


@pytest.mark.parametrize("name,k", [(n, k) for n in SEQUENCE_AWARE for k in (2, 3)])
def test_fully_padded_present_sequences_are_finite(name, k):
    """A present modality whose every step is padded (length 0) must not give NaN either."""
    dims = DIMS[k]
    fusion = build(name, dims).eval()
    emb, present, seqs, masks = make_inputs(dims, True)
    masks = {m: torch.zeros_like(v) for m, v in masks.items()}
    emb, seqs = fill(emb, present, seqs, masks, "nan")
    assert torch.isfinite(call(fusion, emb, present, seqs, masks)).all()


@pytest.mark.parametrize("name,k,with_seq", CASES)
def test_same_seed_same_output(name, k, with_seq):
    dims = DIMS[k]
    emb, present, seqs, masks = make_inputs(dims, with_seq)
    outs = []
    for _ in range(2):
        fusion = build(name, dims, seed=7)
        with torch.no_grad():
            fusion.eval()
            evaluated = call(fusion, emb, present, seqs, masks)
            fusion.train()
            torch.manual_seed(11)
            trained = call(fusion, emb, present, seqs, masks)  # dropout draws are seeded too
        outs.append((evaluated, trained))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def _two_modality_problem(n: int, seed: int):
    """y = [s_a + s_b > 0] with s_m a random projection of modality m: each modality alone
    predicts y with ~75% accuracy, both together perfectly."""
    g = torch.Generator().manual_seed(seed)
    xa, xb = torch.randn(n, 6, generator=g), torch.randn(n, 5, generator=g)
    ua = torch.randn(6, generator=torch.Generator().manual_seed(100))
    ub = torch.randn(5, generator=torch.Generator().manual_seed(101))
    sa, sb = xa @ ua / ua.norm(), xb @ ub / ub.norm()
    return {"a": xa, "b": xb}, ((sa + sb) > 0).long()


@pytest.mark.parametrize("name", NAMES)
def test_learns_a_problem_that_needs_both_modalities(name):
    dims = DIMS[2]
    fusion = build(name, dims, out_dim=2)
    train_x, train_y = _two_modality_problem(384, seed=1)
    test_x, test_y = _two_modality_problem(512, seed=2)
    opt = torch.optim.Adam(fusion.parameters(), lr=5e-3)
    torch.manual_seed(0)
    losses = []
    present = {m: torch.ones(384, dtype=torch.bool) for m in dims}
    for _ in range(150):
        loss = F.cross_entropy(call(fusion, train_x, present, None, None), train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    fusion.eval()
    with torch.no_grad():
        present = {m: torch.ones(512, dtype=torch.bool) for m in dims}
        acc = (call(fusion, test_x, present, None, None).argmax(1) == test_y).float().mean().item()
    if name == "unimodal":
        # sees modality "a" only: above chance, but capped near 75% by construction
        assert 0.62 < acc < 0.85, acc
    else:
        # above what either modality alone allows, so the fusion really combines them
        assert acc > 0.86, acc
        assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def _model(name: str, split: Split, **extra):
    config = {
        "inputs": describe_inputs(split),
        "target_type": "classification",
        "num_classes": 2,
        "fusion": name,
        "fusion_options": fusion_options(name, split.modality_names),
        "embed_dim": 16,
        "hidden_dim": 32,
        **extra,
    }
    torch.manual_seed(0)
    return MultimodalModel(config)


def _check_forward_backward(model: MultimodalModel, batch):
    model.train()
    out = model(batch.modalities, batch.present, batch.lengths)
    assert out.shape == (len(batch), 2)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, batch.targets).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("n_modalities", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_full_model_on_synthetic_data(name, n_modalities):
    split = SyntheticDataset(n_modalities=n_modalities, dim=8, n_samples=60).load_split("train")
    g = torch.Generator().manual_seed(0)
    keep = {m: torch.rand(len(split), generator=g) > 0.3 for m in split.modality_names}
    keep["m0"][:4] = False  # a few rows with nothing at all
    keep["m1"][:4] = False
    if n_modalities == 3:
        keep["m2"][:4] = False
    split = split.with_present(keep)
    model = _model(name, split)
    assert (model.head.__class__.__name__ == "Identity") == FUSIONS.get(name).late
    _check_forward_backward(model, split.batch(torch.arange(24)))


@pytest.mark.parametrize("name", NAMES)
def test_full_model_with_a_sequence_modality(name):
    """A GRU-encoded sequence modality beside a vector one; the fill of missing slots is
    ignored by the whole model."""
    n, steps = 24, 6
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, steps + 1, (n,), generator=g)
    seq = torch.randn(n, steps, 4, generator=g) * (torch.arange(steps)[None, :, None] < lengths[:, None, None])
    present = {"seq": torch.rand(n, generator=g) > 0.3, "vec": torch.rand(n, generator=g) > 0.3}
    present["seq"][:2] = False
    present["vec"][:2] = False
    split = Split("train", [f"s{i}" for i in range(n)], {"seq": seq, "vec": torch.randn(n, 5, generator=g)},
                  present, torch.randint(0, 2, (n,), generator=g), {"seq": lengths})
    split = split.with_present(present)
    model = _model(name, split)
    _check_forward_backward(model, split.batch(torch.arange(n)))

    model.eval()
    with torch.no_grad():
        ref = model(split.modalities, split.present, split.lengths)
        noisy = split.with_present(split.present, fill=1e6)
        torch.testing.assert_close(model(noisy.modalities, noisy.present, noisy.lengths), ref)


def test_unimodal_requires_a_known_modality():
    with pytest.raises(ValueError, match="modality"):
        FUSIONS.get("unimodal")(DIMS[2], OUT)
    with pytest.raises(ValueError, match="not one of"):
        FUSIONS.get("unimodal")(DIMS[2], OUT, modality="zzz")


def test_tensor_fusion_missing_modality_is_the_constant_term():
    """TFN's outer product with z_missing = [1, 0, ..., 0] equals the product of the
    present modalities alone, placed where the missing modality's constant index is 0."""
    fusion = build("tensor", DIMS[2]).eval()
    captured = {}
    fusion.mlp.register_forward_hook(lambda mod, args, out: captured.setdefault("x", args[0]))
    emb, present, _, _ = make_inputs(DIMS[2], False)
    present = {"a": torch.ones(8, dtype=torch.bool), "b": torch.zeros(8, dtype=torch.bool)}
    fusion(emb, present)
    dim = fusion.proj["a"][0].out_features
    product = captured["x"].view(8, dim + 1, dim + 1)
    ha = fusion.proj["a"](emb["a"])
    torch.testing.assert_close(product[:, 1:, 0], ha)
    torch.testing.assert_close(product[:, 0, 0], torch.ones(8))
    assert (product[:, :, 1:] == 0).all()
