"""The sample / batch format: collate fills missing slots, pads sequences, Split gathers."""

import pytest
import torch

from mmbench.data.samples import Split, collate


def _sample(i, audio_len=None, image=True):
    mods = {"image": torch.full((3, 4, 4), float(i))}
    present = {"image": image, "audio": audio_len is not None}
    if audio_len is not None:
        mods["audio"] = torch.full((audio_len, 5), float(i))
    if not image:
        del mods["image"]
    return {"id": f"s{i}", "modalities": mods, "present": present, "target": torch.tensor(i % 2)}


def test_collate_fills_missing_and_pads_sequences():
    samples = [_sample(1, audio_len=3), _sample(2, audio_len=None), _sample(3, audio_len=6, image=False)]
    b = collate(samples, shapes={"image": (3, 4, 4), "audio": (5,)}, sequence_modalities=["audio"], fill=0.0)
    assert b.ids == ["s1", "s2", "s3"]
    assert b.modalities["image"].shape == (3, 3, 4, 4)
    assert b.modalities["audio"].shape == (3, 6, 5)
    assert b.present["image"].tolist() == [True, True, False]
    assert b.present["audio"].tolist() == [True, False, True]
    assert b.lengths["audio"].tolist() == [3, 0, 6]
    assert torch.all(b.modalities["image"][2] == 0)  # filled slot
    assert torch.all(b.modalities["audio"][0, 3:] == 0)  # padding after the real steps
    mask = b.padding_mask("audio")
    assert mask.tolist()[0] == [True] * 3 + [False] * 3
    assert not mask[1].any()
    assert b.targets.tolist() == [1, 0, 1]


def test_collate_custom_fill_and_absent_everywhere_needs_shape():
    samples = [_sample(1, audio_len=2, image=False), _sample(2, audio_len=2, image=False)]
    b = collate(samples, shapes={"image": (3, 4, 4)}, sequence_modalities=["audio"], fill=-7.0)
    assert torch.all(b.modalities["image"] == -7.0) and not b.present["image"].any()
    with pytest.raises(ValueError, match="no declared shape"):
        collate(samples, sequence_modalities=["audio"])


def test_split_roundtrip_and_gather():
    samples = [_sample(i, audio_len=i + 1) for i in range(5)]
    split = Split.from_samples("train", samples, sequence_modalities=["audio"])
    assert len(split) == 5
    s3 = split[3]
    assert s3["id"] == "s3" and s3["modalities"]["audio"].shape == (4, 5)  # padding sliced off
    b = split.batch(torch.tensor([4, 0]))
    assert b.ids == ["s4", "s0"] and b.lengths["audio"].tolist() == [5, 1]
    assert split.summary()["present"] == {"audio": 5, "image": 5}


def test_with_present_overwrites_dropped_data():
    split = Split.from_samples("test", [_sample(i, audio_len=2) for i in range(4)], sequence_modalities=["audio"])
    masked = split.with_present({"image": torch.tensor([True, False, True, False])})
    assert masked.present["image"].tolist() == [True, False, True, False]
    assert torch.all(masked.modalities["image"][1] == 0) and torch.all(masked.modalities["image"][2] == 2)
    dropped_audio = split.with_present({"audio": torch.zeros(4, dtype=torch.bool)})
    assert dropped_audio.lengths["audio"].tolist() == [0, 0, 0, 0]
    assert split.present["image"].all()  # the original is untouched


def test_split_rejects_inconsistent_rows_and_duplicate_ids():
    with pytest.raises(ValueError, match="duplicate ids"):
        Split("x", ["a", "a"], {"m": torch.zeros(2, 1)}, {"m": torch.ones(2, dtype=torch.bool)}, torch.zeros(2))
    with pytest.raises(ValueError, match="rows"):
        Split("x", ["a", "b"], {"m": torch.zeros(3, 1)}, {"m": torch.ones(2, dtype=torch.bool)}, torch.zeros(2))
