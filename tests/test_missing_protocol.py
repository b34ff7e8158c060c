"""The image-text missing protocol (missing:<type>:<eta>): exact counts, halves, seeds, export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmbench.core.errors import SpecError
from mmbench.data.masks import condition_masks, expand_conditions, parse_condition

MODS = ["image", "text"]
IDS = [f"movie{i:04d}" for i in range(1000)]


@pytest.mark.parametrize("eta", [0.0, 0.1, 0.7, 1.0])
def test_exact_counts_per_type(eta):
    k = int(len(IDS) * eta)
    for kind in MODS:
        keep = condition_masks(f"missing:{kind}:{eta}", IDS, MODS)
        other = "text" if kind == "image" else "image"
        assert (~keep[kind]).sum() == k and keep[other].all()
    both = condition_masks(f"missing:both:{eta}", IDS, MODS)
    assert (~both["image"]).sum() == int(k * 0.5) and (~both["text"]).sum() == k - int(k * 0.5)
    assert not (~both["image"] & ~both["text"]).any()  # a sample loses one modality, never both


def test_same_affected_samples_for_every_type_nested_and_order_free():
    lost = {t: ~condition_masks(f"missing:{t}:0.7", IDS, MODS)[t if t != "both" else "image"] for t in ("text", "image")}
    assert np.array_equal(lost["text"], lost["image"])  # the same 70% whatever is removed
    both = condition_masks("missing:both:0.7", IDS, MODS)
    assert np.array_equal(~both["image"] | ~both["text"], lost["text"])
    small = ~condition_masks("missing:text:0.3", IDS, MODS)["text"]
    assert (lost["text"] | ~small).all() and not (small & ~lost["text"]).any()  # nested across eta
    perm = np.random.default_rng(0).permutation(len(IDS))
    shuffled = condition_masks("missing:both:0.7", [IDS[i] for i in perm], MODS)
    for m in MODS:
        assert np.array_equal(shuffled[m], both[m][perm])
    other_seed = condition_masks("missing:both:0.7", IDS, MODS, seed=1)
    assert not np.array_equal(other_seed["image"], both["image"])


def test_masks_are_fixed_numbers():
    """The assignment is a pure function of (seed, split, ids): pin a few values across machines."""
    keep = condition_masks("missing:both:0.5", [f"s{i}" for i in range(10)], MODS, seed=0, split="test")
    assert keep["image"].astype(int).tolist() == _PINNED_IMAGE and keep["text"].astype(int).tolist() == _PINNED_TEXT


_PINNED_IMAGE = [1, 1, 1, 1, 1, 0, 1, 0, 1, 1]
_PINNED_TEXT = [1, 1, 0, 1, 0, 1, 0, 1, 1, 1]


def test_parse_names_and_errors():
    assert parse_condition("missing:both:0.70", MODS).name == "missing:both:0.7"
    assert [c.name for c in expand_conditions(["clean", "missing:text:0.7"], MODS)] == ["clean", "missing:text:0.7"]
    with pytest.raises(SpecError, match="unknown modality 'audio'"):
        parse_condition("missing:audio:0.7", MODS)
    with pytest.raises(SpecError, match="not a number"):
        parse_condition("missing:text:lots", MODS)
    with pytest.raises(SpecError, match=r"in \[0, 1\]"):
        parse_condition("missing:text:1.5", MODS)
    with pytest.raises(SpecError, match="two modalities"):
        parse_condition("missing:both:0.5", ["image", "text", "audio"])


def test_masks_cli_exports_protocol_conditions_and_training_masks(tmp_path, monkeypatch, capsys):
    import yaml

    from _cli import run_main
    from mmbench.data.tasks import builtin_dir

    spec = yaml.safe_load((builtin_dir("tasks") / "synthetic-synergy.yaml").read_text())
    spec["name"] = "synergy-missing"
    spec["missing"] = {"seed": 3, "conditions": ["clean", "missing:both:0.7"], "train": "missing:m0:0.5"}
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "synergy-missing.yaml").write_text(yaml.safe_dump(spec))
    env = {"MMBENCH_TASKS_PATH": str(tmp_path / "tasks")}
    from mmbench.data import tasks as tasks_module

    tasks_module._all_specs.cache_clear()
    try:
        rc, out, err = run_main(["data", "masks", "synergy-missing", "-o", tmp_path / "test.csv"], monkeypatch, capsys, env)
        assert rc == 0, err
        table = pd.read_csv(tmp_path / "test.csv", dtype={"id": str})
        both = table[table.condition == "missing:both:0.7"]
        want = condition_masks("missing:both:0.7", both["id"].tolist(), ["m0", "m1"], seed=3, split="test")
        assert np.array_equal(both["m0"].to_numpy(), want["m0"]) and np.array_equal(both["m1"].to_numpy(), want["m1"])
        rc, out, err = run_main(["data", "masks", "synergy-missing", "--split", "train", "-o", tmp_path / "train.csv"],
                                monkeypatch, capsys, env)
        assert rc == 0, err
        train = pd.read_csv(tmp_path / "train.csv", dtype={"id": str})
        assert set(train.condition) == {"missing:m0:0.5"} and (train.m0 == 0).sum() == len(train) // 2

        from mmbench.data.splits import load_training_splits
        from mmbench.data.tasks import get_task

        splits = load_training_splits(get_task("synergy-missing"))
        assert np.array_equal(splits["train"].present["m0"].numpy(), train.m0.to_numpy().astype(bool))
        assert splits["test"].present["m0"].all()  # test conditions are applied at evaluation only
    finally:
        tasks_module._all_specs.cache_clear()
