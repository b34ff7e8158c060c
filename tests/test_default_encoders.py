"""The encoder picked for a modality nobody configured: token ids get the embedding encoder (with
the tokenizer's vocabulary from the loader), small fixed-shape arrays the MLP over their flattened
values, images the CNN; shapes, absent inputs (presence masks, length 0) and one training epoch
through the CLI on a generated dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from _cli import run_main
from mmbench.core.errors import SpecError
from mmbench.core.registry import ENCODERS
from mmbench.data.samples import VOCABULARIES, Split
from mmbench.models.encoders import CNN_MIN_SIDE, default_encoder_for
from mmbench.models.model import MultimodalModel, describe_inputs


@pytest.mark.parametrize("shape, sequence, tokens, name", [
    ((), True, True, "embedding"),
    ((6,), False, False, "mlp"),
    ((3, 2), False, False, "mlp"),  # a small table, not an image
    ((1, 3, 2), False, False, "mlp"),
    ((CNN_MIN_SIDE - 1, 40), False, False, "mlp"),  # one side too short for three pooling stages
    ((CNN_MIN_SIDE, CNN_MIN_SIDE), False, False, "cnn"),
    ((3, 28, 28), False, False, "cnn"),
    ((4, 3, 2, 2), False, False, "mlp"),
    ((4, 3, 16, 16), False, False, "video"),
    ((3, 16, 16), True, False, "video"),
    ((3, 2), True, False, "gru"),  # a sequence of small [3, 2] steps
    ((20,), True, False, "gru"),
])
def test_the_rule(shape, sequence, tokens, name):
    assert default_encoder_for(shape, sequence, tokens) == name


@pytest.mark.parametrize("shape", [(3, 2), (1, 3, 2), (CNN_MIN_SIDE - 1, 40), (4, 3, 2, 2), (5, 1)])
def test_every_small_array_encodes_through_its_default(shape):
    encoder = ENCODERS.get(default_encoder_for(shape, False))(shape, out_dim=8)
    x = torch.randn(4, *shape)
    out = encoder(x).pooled
    assert out.shape == (4, 8) and torch.isfinite(out).all()
    # the MLP reads every value: changing the last one of a sample changes that sample's output only
    y = x.clone()
    y[1].view(-1)[-1] += 5.0
    changed = (encoder.eval()(y).pooled - encoder(x).pooled).abs().sum(1) > 0
    assert changed.tolist() == [False, True, False, False]


def test_the_cnn_refuses_an_array_too_small_for_its_pooling_in_one_line():
    with pytest.raises(SpecError, match=r"cnn encoder: per-sample shape \(3, 2\) is not .* sides of at least 8"):
        ENCODERS.get("cnn")((3, 2))
    ENCODERS.get("cnn")((4, 4), blocks=2)(torch.randn(2, 4, 4))  # sides of 2**blocks work


def _token_split(n: int = 6, steps: int = 7, vocab: int = 30) -> Split:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 3, 0, 5, 1, 2])[:n]
    ids = torch.randint(1, vocab, (n, steps), generator=g)
    ids[torch.arange(steps)[None, :] >= lengths[:, None]] = 0  # padded with pad id 0
    modalities = {"text": ids, "table": torch.randn(n, 3, 2, generator=g)}
    present = {"text": lengths > 0, "table": torch.tensor([True, True, True, False, True, True])[:n]}
    modalities["table"][~present["table"]] = 0
    return Split("train", [f"s{i}" for i in range(n)], modalities, present, torch.arange(n) % 3, {"text": lengths},
                 {VOCABULARIES: {"text": {"vocab_size": vocab, "pad_id": 0}}})


def test_token_ids_are_described_with_their_vocabulary_and_embedded():
    split = _token_split()
    inputs = describe_inputs(split)
    assert inputs == {"table": {"shape": [3, 2], "sequence": False},
                      "text": {"shape": [], "sequence": True, "tokens": True, "vocab_size": 30, "pad_id": 0}}
    model = MultimodalModel({"inputs": inputs, "target_type": "multiclass", "num_classes": 3, "fusion": "concat"}).eval()
    assert type(model.encoders["text"]).__name__ == "EmbeddingEncoder"
    assert model.encoders["text"].embed.num_embeddings == 30
    assert type(model.encoders["table"]).__name__ == "MLPEncoder"
    out = model(split.modalities, split.present, split.lengths)
    assert out.shape == (6, 3) and torch.isfinite(out).all()


def test_the_embedding_encoder_reads_real_tokens_only():
    torch.manual_seed(0)
    split = _token_split()
    enc = ENCODERS.get("embedding")((), out_dim=8, vocab_size=30, pad_id=0).eval()
    ids, lengths = split.modalities["text"], split.lengths["text"]
    got = enc(ids, lengths)
    assert got.pooled.shape == (6, 8) and got.sequence.shape == (6, 7, 8)
    assert got.mask.tolist() == (torch.arange(7)[None, :] < lengths[:, None]).tolist()
    assert torch.equal(got.pooled[2], torch.zeros(8))  # absent (length 0): nothing reaches the pooled vector
    # tokens past a sample's length change nothing; without lengths, the pad id marks padding
    noisy = ids.clone()
    noisy[torch.arange(7)[None, :] >= lengths[:, None]] = 17
    assert torch.allclose(enc(noisy, lengths).pooled, got.pooled, atol=1e-6)
    assert torch.allclose(enc(ids).pooled, got.pooled, atol=1e-6)
    # the same sample alone encodes the same as within the batch (cut to its length)
    alone = enc(ids[3:4, :5], lengths[3:4]).pooled
    assert torch.allclose(alone, got.pooled[3:4], atol=1e-5)


def test_the_embedding_encoder_needs_a_vocabulary():
    with pytest.raises(SpecError, match="embedding encoder: needs the tokenizer's vocab_size"):
        ENCODERS.get("embedding")((), vocab_size=None)
    with pytest.raises(SpecError, match="pad_id 40 is outside the vocabulary"):
        ENCODERS.get("embedding")((), vocab_size=30, pad_id=40)
    split = _token_split()
    split.info.clear()  # a loader that gave token ids without saying whose
    with pytest.raises(SpecError, match="vocab_size"):
        MultimodalModel({"inputs": describe_inputs(split), "target_type": "multiclass", "num_classes": 3,
                         "fusion": "concat"})


def test_one_epoch_through_the_cli_on_token_and_small_array_modalities(tmp_path, monkeypatch, capsys):
    import datasets

    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    feats = datasets.Features({"text": datasets.Value("string"), "grid": datasets.Array2D(shape=(3, 2), dtype="float32"),
                               "present_grid": datasets.Value("bool"), "label": datasets.ClassLabel(names=["a", "b"])})
    parts = {}
    for split, n in (("train", 12), ("validation", 6), ("test", 6)):
        rows = {"text": [None if i % 5 == 2 else f"word {i} {'yes' if i % 2 else 'no'}" for i in range(n)],
                "grid": [np.full((3, 2), i % 2, np.float32) for i in range(n)],
                "present_grid": [i % 4 != 1 for i in range(n)], "label": [i % 2 for i in range(n)]}
        parts[split] = datasets.Dataset.from_dict(rows, features=feats)
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "data"))
    spec_file = tmp_path / "mine.yaml"
    rc, out, err = run_main(["tasks", "init", "mine", "--hf", tmp_path / "data", "-o", spec_file], monkeypatch, capsys)
    assert rc == 0, err
    spec = yaml.safe_load(spec_file.read_text())
    assert spec["dataset"]["options"]["modalities"]["grid"] == {"column": "grid", "type": "features", "present": "present_grid"}
    spec["dataset"]["options"] |= {"text_encoder": "tokens", "max_tokens": 12}
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))

    rc, out, err = run_main(["train", spec_file, "--fusion", "concat", "--epochs", "1", "--out", tmp_path / "runs",
                             "--no-progress", "--device", "cpu"], monkeypatch, capsys)
    assert rc == 0, err
    assert "mine concat seed 0: best epoch 0, test accuracy " in out
    run = tmp_path / "runs" / "mine" / "concat" / "seed0"
    inputs = json.loads((run / "config.json").read_text())["model"]["inputs"]
    from mmbench.models.encoders.pretrained import tokenizer_info

    assert inputs["grid"] == {"shape": [3, 2], "sequence": False}
    assert inputs["text"] == {"shape": [], "sequence": True, "tokens": True, **tokenizer_info()}
    assert (run / "metrics.json").is_file()


def test_seeds_vectorised_train_the_token_and_array_encoders_as_one_by_one():
    from mmbench.training.multiseed import train_seeds
    from mmbench.training.trainer import TrainConfig, train

    def split(name: str, n: int, seed: int) -> Split:  # the label: whether token 5 occurs
        g = torch.Generator().manual_seed(seed)
        lengths = torch.randint(0, 8, (n,), generator=g)
        ids = torch.randint(1, 30, (n, 8), generator=g)
        ids[torch.arange(8)[None, :] >= lengths[:, None]] = 0
        y = (ids == 5).any(1).long()
        return Split(name, [f"{name}{i}" for i in range(n)], {"m0": ids, "m1": torch.randn(n, 3, 2, generator=g)},
                     {"m0": lengths > 0, "m1": torch.ones(n, dtype=torch.bool)}, y, {"m0": lengths},
                     {VOCABULARIES: {"m0": {"vocab_size": 30, "pad_id": 0}}})

    splits = {"train": split("train", 40, 0), "validation": split("validation", 20, 1), "test": split("test", 20, 2)}
    cfg = TrainConfig(task="synthetic-synergy", fusion="concat", epochs=1, batch_size=16, embed_dim=8, hidden_dim=16,
                      lr=3e-4, device="cpu", dropout=0.0, fusion_options={"dropout": 0.0}, encoders={"m1": {"dropout": 0.0}})
    for vec in train_seeds(cfg, [0, 1], splits=splits, vectorize=True):
        one = train(TrainConfig(**{**cfg.to_dict(), "seed": vec.config.seed}), splits=splits, progress=False)
        assert vec.test_metrics == pytest.approx(one.test_metrics, abs=1e-9)
        sv, so = vec.model.state_dict(), one.model.state_dict()
        assert "encoders.m0.embed.weight" in sv and sv.keys() == so.keys()
        for name in sv:
            torch.testing.assert_close(sv[name], so[name], rtol=1e-3, atol=2e-4, msg=name)
