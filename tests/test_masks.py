"""Missing-modality protocols: deterministic, achieve their rates, export/import, dropout."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.data.samples import Batch
from mmbench.core.errors import SpecError
from mmbench.data.masks import (ModalityDropout, condition_masks, expand_conditions, masks_table, parse_condition,
                           read_masks_table, uniform_hash)

IDS = [f"clip_{i}" for i in range(5000)]
MODS = ["audio", "text", "vision"]


def test_parse_and_names_roundtrip():
    for text in ["clean", "drop:audio", "rate:0.3", "pattern:audio+text"]:
        assert parse_condition(text, MODS).name == text
    assert parse_condition("pattern:text+audio").name == "pattern:audio+text"  # sorted
    for bad in ["rate:1.5", "rate:x", "drop:", "nope", "drop:smell"]:
        with pytest.raises(SpecError):
            parse_condition(bad, MODS)


def test_expand_patterns_and_drop_each():
    conds = [c.name for c in expand_conditions(["clean", "drop-each", "patterns"], MODS)]
    assert conds[:4] == ["clean", "drop:audio", "drop:text", "drop:vision"]
    patterns = [c for c in conds if c.startswith("pattern:")]
    assert len(patterns) == 2 ** len(MODS) - 1  # every non-empty subset, once
    assert "pattern:audio+text+vision" in patterns


def test_clean_drop_pattern_masks():
    assert all(m.all() for m in condition_masks("clean", IDS, MODS).values())
    d = condition_masks("drop:text", IDS, MODS)
    assert not d["text"].any() and d["audio"].all() and d["vision"].all()
    p = condition_masks("pattern:vision", IDS, MODS)
    assert p["vision"].all() and not p["audio"].any() and not p["text"].any()


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
@pytest.mark.parametrize("mods", [["audio", "image"], MODS])
def test_rate_is_a_share_of_items_each_losing_one_modality(rate, mods):
    """rate:r (SMR): a share r of the items is affected, each loses exactly one modality (never
    all), the losses split evenly: floor(n r / k) items per modality."""
    m = condition_masks(f"rate:{rate}", IDS, mods, seed=3, split="test")
    lost = np.stack([~m[name] for name in mods])
    assert lost.sum(0).max() <= 1 and np.stack([m[name] for name in mods]).any(0).all()
    for name in mods:
        assert (~m[name]).sum() == int(np.floor(len(IDS) * rate / len(mods) + 1e-9)), name
    assert abs(lost.any(0).mean() - rate) <= len(mods) / len(IDS)


def test_rate_masks_are_deterministic_order_free_and_nested():
    a = condition_masks("rate:0.5", IDS, MODS, seed=7, split="test")
    b = condition_masks("rate:0.5", IDS, MODS, seed=7, split="test")
    for name in MODS:
        np.testing.assert_array_equal(a[name], b[name])
    rev = condition_masks("rate:0.5", IDS[::-1], MODS, seed=7, split="test")
    np.testing.assert_array_equal(rev["audio"][::-1], a["audio"])  # per-id, not per-position
    other = condition_masks("rate:0.5", IDS, MODS, seed=8, split="test")
    assert (other["audio"] != a["audio"]).mean() > 0.1
    for lo, hi in [(0.1, 0.3), (0.3, 0.5), (0.5, 0.9)]:
        low = condition_masks(f"rate:{lo}", IDS, MODS, seed=7, split="test")
        high = condition_masks(f"rate:{hi}", IDS, MODS, seed=7, split="test")
        for name in MODS:
            assert not np.any(~low[name] & high[name]), name  # lost at the lower rate => lost at the higher


def test_smr_is_imr_with_equal_shares():
    two = ["audio", "image"]
    smr = condition_masks("rate:0.5", IDS, two, seed=1)
    imr = condition_masks("rate:audio=0.25,image=0.25", IDS, two, seed=1)
    for name in two:
        np.testing.assert_array_equal(smr[name], imr[name])


TEN_K = [f"item{i:05d}" for i in range(10_000)]


@pytest.mark.parametrize("mods,shares", [(["audio", "image"], {"audio": 0.7, "image": 0.1}),
                                         (["audio", "image"], {"audio": 0.1, "image": 0.4}),
                                         (MODS, {"audio": 0.5, "text": 0.1, "vision": 0.3})])
def test_imr_hits_each_share_disjoint_and_nested(mods, shares):
    """IMR: each modality's share lost within 2 points on 10,000 items (exactly floor(n s)), the
    loss sets disjoint (no item left empty), nested across shares."""
    spec = "rate:" + ",".join(f"{m}={s}" for m, s in shares.items())
    keep = condition_masks(spec, TEN_K, mods, seed=0)
    for m, s in shares.items():
        assert abs((~keep[m]).mean() - s) < 0.02 and (~keep[m]).sum() == int(np.floor(10_000 * s + 1e-9))
    assert np.stack([~keep[m] for m in mods]).sum(0).max() <= 1
    half = condition_masks("rate:" + ",".join(f"{m}={s / 2}" for m, s in shares.items()), TEN_K, mods, seed=0)
    for m in mods:
        assert not np.any(~half[m] & keep[m]), m  # lost at half the shares => lost at the shares
    if len(mods) == 2:  # two modalities: each set nested in its own share, whatever the other's
        a, b = mods
        more = condition_masks(f"rate:{a}={min(1 - shares[b], shares[a] + 0.2):g},{b}={shares[b]}", TEN_K, mods, seed=0)
        assert not np.any(~keep[a] & more[a]) and np.array_equal(keep[b], more[b])


def test_imr_names_and_refusals():
    assert parse_condition("rate:image=0.1,audio=0.70", ["audio", "image"]).name == "rate:audio=0.7,image=0.1"
    assert parse_condition("rate:audio=0.7,image=0.1").level == "instance"
    assert parse_condition("drop:audio").level == parse_condition("pattern:audio").level == "dataset"
    with pytest.raises(SpecError, match="sum to 1.1"):
        parse_condition("rate:audio=0.7,image=0.4", ["audio", "image"])
    with pytest.raises(SpecError, match="unknown modality 'smell'"):
        parse_condition("rate:audio=0.1,smell=0.2", ["audio", "image"])
    with pytest.raises(SpecError, match=r"in \[0, 1\]"):
        parse_condition("rate:audio=1.5", ["audio", "image"])
    with pytest.raises(SpecError, match="given twice"):
        parse_condition("rate:audio=0.1,audio=0.2", ["audio", "image"])


def test_smr_imr_shorthand_pairs_at_equal_average():
    conds = expand_conditions(["smr-imr:0.25,0.4"], ["image", "audio"])
    assert [c.name for c in conds] == ["rate:0.5", "rate:audio=0.4,image=0.1", "rate:audio=0.1,image=0.4",
                                       "rate:0.8", "rate:audio=0.7,image=0.1", "rate:audio=0.1,image=0.7"]
    for c in conds:
        assert c.average_missing(2) in (pytest.approx(0.25), pytest.approx(0.4))
    with pytest.raises(SpecError, match="average"):
        expand_conditions(["smr-imr:0.6"], ["image", "audio"])


def test_smr_imr_groups_pair_conditions_by_average():
    from mmbench.data.masks import smr_imr_groups

    names = [c.name for c in expand_conditions(["clean", "rate:0.1", "smr-imr:0.25", "smr-imr:0.4"], ["audio", "image"])]
    assert smr_imr_groups(names, 2) == {
        0.25: {"smr": ["rate:0.5"], "imr": ["rate:audio=0.4,image=0.1", "rate:audio=0.1,image=0.4"]},
        0.4: {"smr": ["rate:0.8"], "imr": ["rate:audio=0.7,image=0.1", "rate:audio=0.1,image=0.7"]}}


def test_presence_decides_what_an_item_can_lose():
    """An item whose data give it one modality loses nothing; MOSI-like data (vision absent
    everywhere) split the losses between the two modalities the items have."""
    n = 2000
    ids = IDS[:n]
    present = {"audio": np.ones(n, bool), "text": np.ones(n, bool), "vision": np.zeros(n, bool)}
    present["audio"][:100] = False  # 100 text-only items
    keep = condition_masks("rate:0.6", ids, MODS, seed=0, present=present)
    seen = {m: keep[m] & present[m] for m in MODS}
    assert np.stack(list(seen.values())).any(0).all()  # nobody left empty
    assert seen["text"][:100].all()  # the text-only items keep it
    assert (~keep["audio"][100:]).sum() == (~keep["text"][100:]).sum() == int(1900 * 0.3)
    for cond in ("pattern:vision", "drop:text", "pattern:audio"):
        k = condition_masks(cond, ids, MODS, present=present)
        assert np.stack([k[m] & present[m] for m in MODS]).any(0).all(), cond  # never left empty


def test_equal_masks_are_one_condition_and_absent_modalities_are_named():
    from mmbench.data.masks import absent_modalities, distinct_conditions

    n = 300
    ids = IDS[:n]
    two = {"audio": np.ones(n, bool), "image": np.ones(n, bool)}
    conds = expand_conditions(["clean", "drop-each", "rate:0.5", "patterns"], ["audio", "image"])
    kept, aliases = distinct_conditions(conds, ids, ["audio", "image"], 0, "test", two)
    assert [c.name for c in kept] == ["clean", "drop:audio", "drop:image", "rate:0.5"]
    assert aliases == {"pattern:audio+image": "clean", "pattern:audio": "drop:image", "pattern:image": "drop:audio"}
    mosi = {"audio": np.ones(n, bool), "text": np.ones(n, bool), "vision": np.zeros(n, bool)}
    kept, aliases = distinct_conditions(expand_conditions(["clean", "drop-each", "patterns"], MODS), ids, MODS, 0,
                                        "test", mosi)
    assert aliases["drop:vision"] == "clean" and aliases["pattern:audio+text"] == "clean"
    assert absent_modalities(MODS, mosi) == ["vision"] and absent_modalities(MODS, None) == []


def test_hash_is_pinned_across_machines():
    # a fixed value guards against accidental changes of the hashing scheme
    value = uniform_hash(0, "test", "audio", ["03bSnISJMiM_1"])[0]
    assert value == pytest.approx(uniform_hash(0, "test", "audio", ["03bSnISJMiM_1"])[0])
    assert 0.0 <= value < 1.0
    assert round(float(value), 12) == (round(_reference_hash("0\x1ftest\x1faudio\x1f03bSnISJMiM_1"), 12))
    assert round(float(value), 6) == 0.308302  # pinned


def _reference_hash(text):
    import hashlib

    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") / 2.0**64


def test_export_import_roundtrip(tmp_path):
    conds = expand_conditions(["clean", "drop-each", "rate:0.5", "patterns"], MODS)
    table = masks_table(conds, IDS[:100], MODS, seed=0, split="test")
    assert len(table) == len(conds) * 100
    path = tmp_path / "masks.csv"
    table.to_csv(path, index=False)
    back = read_masks_table(path)
    assert list(back) == [c.name for c in conds]
    expected = condition_masks("rate:0.5", IDS[:100], MODS, seed=0, split="test")
    for name in MODS:
        np.testing.assert_array_equal(back["rate:0.5"][name], expected[name])
    assert list(back["rate:0.5"]["id"]) == IDS[:100]


@settings(max_examples=50, deadline=None)
@given(rate=st.floats(0, 1), seed=st.integers(0, 2**31), n=st.integers(1, 200))
def test_rate_masks_property(rate, seed, n):
    ids = [f"x{i}" for i in range(n)]
    m1 = condition_masks(parse_condition(f"rate:{rate}"), ids, MODS, seed=seed)
    m2 = condition_masks(parse_condition(f"rate:{rate}"), ids, MODS, seed=seed)
    for name in MODS:
        assert m1[name].dtype == bool and m1[name].shape == (n,)
        np.testing.assert_array_equal(m1[name], m2[name])
        if rate == 0.0:
            assert m1[name].all()
    assert np.stack([m1[name] for name in MODS]).any(0).all()  # no item left empty


def test_modality_dropout_seeded_rate_and_keep_one():
    b = Batch([str(i) for i in range(4000)], {"a": torch.ones(4000, 3), "b": torch.ones(4000, 2)},
              {"a": torch.ones(4000, dtype=torch.bool), "b": torch.ones(4000, dtype=torch.bool)}, torch.zeros(4000))
    out1 = ModalityDropout(0.4)(b, torch.Generator().manual_seed(1))
    out2 = ModalityDropout(0.4)(b, torch.Generator().manual_seed(1))
    assert torch.equal(out1.present["a"], out2.present["a"])
    assert (out1.present["a"] | out1.present["b"]).all()  # never both dropped
    rate_a = 1 - out1.present["a"].float().mean().item()
    assert 0.25 < rate_a < 0.4  # 0.4 minus the rescued both-dropped share (0.4*0.4/2 = 0.08)
    assert torch.all(out1.modalities["a"][~out1.present["a"]] == 0)
    with pytest.raises(SpecError):
        ModalityDropout(1.0)
