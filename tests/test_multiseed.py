"""Vectorised multi-seed training (mmbench.training.multiseed) equals one-by-one training.

With every dropout at 0 the K seeds trained at once must follow the trainer's runs exactly,
up to floating-point rounding: same init, same per-epoch data order, same per-seed clipping and
AdamW updates, same model selection and early stopping.
"""

import json

import pytest
import torch

from mmbench.data.samples import Split
from mmbench.training.multiseed import StackedModels, train_seeds
from mmbench.training.trainer import TrainConfig, train

NO_DROPOUT = dict(dropout=0.0, fusion_options={"dropout": 0.0},
                  encoders={"m0": {"dropout": 0.0}, "m1": {"dropout": 0.0}})
# A small learning rate: AdamW turns rounding noise in (near-)zero gradients into steps of
# about lr, so differences between batched and one-by-one kernels grow with lr x steps. At
# 3e-4 they stay below 1e-4 while a different data order or update moves weights by ~1e-2.
FAST = dict(epochs=3, batch_size=50, embed_dim=16, hidden_dim=32, lr=3e-4, max_grad_norm=0.25, device="cpu",
            dataset_options={"n_samples": 300})


def _close_metrics(a: dict, b: dict, tol: float = 1e-9) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=tol), key


def _assert_same_run(vec, one, loss_tol=1e-5):
    assert vec.config.seed == one.config.seed
    assert vec.best_epoch == one.best_epoch
    assert len(vec.history) == len(one.history)
    for hv, ho in zip(vec.history, one.history):
        assert hv["epoch"] == ho["epoch"] and hv["best"] == ho["best"]
        assert hv["train_loss"] == pytest.approx(ho["train_loss"], rel=loss_tol, abs=loss_tol)
        _close_metrics(hv["val"], ho["val"])
    _close_metrics(vec.val_metrics, one.val_metrics)
    _close_metrics(vec.test_metrics, one.test_metrics)
    sv, so = vec.model.state_dict(), one.model.state_dict()
    assert sv.keys() == so.keys()
    for name in sv:
        torch.testing.assert_close(sv[name], so[name], rtol=1e-3, atol=2e-4, msg=name)


@pytest.mark.parametrize("fusion", ["concat", "attention", "gnn"])
def test_vectorised_seeds_match_one_by_one(fusion):
    cfg = TrainConfig(task="synthetic-synergy", fusion=fusion, **FAST, **NO_DROPOUT)
    seeds = [0, 3]
    vec = train_seeds(cfg, seeds, vectorize=True)
    for s, v in zip(seeds, vec):
        one = train(TrainConfig(**{**cfg.to_dict(), "seed": s}), progress=False)
        _assert_same_run(v, one)


def test_modality_dropout_and_early_stopping_match():
    # modality dropout draws from each seed's epoch generator, as the trainer does; patience 1
    # makes seeds stop at different epochs
    cfg = TrainConfig(task="synthetic-unique", fusion="concat", modality_dropout=0.3, patience=1,
                      **{**FAST, "epochs": 6}, **NO_DROPOUT)
    seeds = [1, 2, 5]
    vec = train_seeds(cfg, seeds, vectorize=True)
    for s, v in zip(seeds, vec):
        one = train(TrainConfig(**{**cfg.to_dict(), "seed": s}), progress=False)
        _assert_same_run(v, one)


def _image_splits(n_train=120, n_val=40, seed=0):
    g = torch.Generator().manual_seed(seed)

    def make(name, n):
        y = torch.randint(0, 10, (n,), generator=g)
        image = torch.randn(n, 1, 12, 12, generator=g) + y.view(-1, 1, 1, 1) * 0.2
        audio = torch.randn(n, 1, 16, 16, generator=g) - y.view(-1, 1, 1, 1) * 0.2
        ones = torch.ones(n, dtype=torch.bool)
        return Split(name, [f"{name}{i}" for i in range(n)], {"image": image, "audio": audio},
                     {"image": ones, "audio": ones.clone()}, y)

    return {"train": make("train", n_train), "validation": make("val", n_val), "test": make("test", n_val)}


def test_cnn_encoders_with_vmap_match():
    splits = _image_splits()
    # 16 channels: GroupNorm(8, 16) has 2 channels per group. With one channel per group the
    # conv bias has an exactly-zero gradient and AdamW steps on pure rounding noise.
    cfg = TrainConfig(task="avmnist", fusion="gnn", epochs=2, batch_size=40, embed_dim=16, hidden_dim=16, lr=3e-4,
                      device="cpu", dropout=0.0, fusion_options={"dropout": 0.0},
                      encoders={"image": {"channels": 16, "blocks": 2}, "audio": {"channels": 16, "blocks": 2}})
    seeds = [0, 1]
    vec = train_seeds(cfg, seeds, splits=splits, vectorize=True)
    for s, v in zip(seeds, vec):
        one = train(TrainConfig(**{**cfg.to_dict(), "seed": s}), progress=False, splits=splits)
        _assert_same_run(v, one)


def bn_config(**over) -> TrainConfig:
    """A small run of the AV-MNIST baselines' batch-norm CNNs, every dropout at 0."""
    enc = {"channels": 8, "blocks": 2, "norm": "batch"}
    return TrainConfig(**{**dict(task="avmnist", fusion="concat", epochs=2, batch_size=40, embed_dim=16, hidden_dim=16,
                                 lr=3e-4, device="cpu", dropout=0.0, fusion_options={"dropout": 0.0},
                                 encoders={"image": enc, "audio": dict(enc)}), **over})


def vectorised_matches_one_by_one(cfg: TrainConfig, seeds: list[int], splits) -> list:
    """`train_seeds` vectorised, each seed checked against its own `train` run; the results."""
    vec = train_seeds(cfg, seeds, splits=splits, vectorize=True)
    for s, v in zip(seeds, vec):
        one = train(TrainConfig(**{**cfg.to_dict(), "seed": s}), progress=False, splits=splits)
        _assert_same_run(v, one)
    return vec


def test_batch_norm_recalibration_vectorised_matches_one_by_one():
    # batch-norm CNNs (the AV-MNIST baselines' encoders) with the statistics recomputed before
    # each validation: each seed on its own rows, as its one-by-one run does
    splits = _image_splits()
    cfg = bn_config(epochs=3, bn_recalibration=70)
    seeds = [0, 2]
    vec = vectorised_matches_one_by_one(cfg, seeds, splits)
    # the statistics are the recalibrated ones, not the training run's moving averages
    plain = train_seeds(TrainConfig(**{**cfg.to_dict(), "bn_recalibration": 0}), seeds[:1], splits=splits,
                        vectorize=True)[0]
    name = "encoders.image.features.1.running_mean"
    assert not torch.allclose(plain.model.state_dict()[name], vec[0].model.state_dict()[name], atol=1e-3)


def test_per_seed_clipping_equals_clip_grad_norm():
    from mmbench.models.model import MultimodalModel

    cfg = {"target_type": "multiclass", "num_classes": 3, "inputs": {"a": {"shape": [5], "sequence": False}},
           "modalities": ["a"], "fusion": "concat", "embed_dim": 4, "hidden_dim": 4}
    models = []
    for s in range(3):
        torch.manual_seed(s)
        models.append(MultimodalModel(cfg))
    stacked = StackedModels(models, "cpu")
    grads = {}
    for n, p in stacked.params.items():
        p.grad = torch.randn_like(p) * (1 + torch.arange(3.0).view((3,) + (1,) * (p.dim() - 1)))
        grads[n] = p.grad.clone()
    totals = stacked.clip_grad_norm_(1.0)
    for k, m in enumerate(models):
        for n, p in m.named_parameters():
            p.grad = grads[n][k].clone()
        total = torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        assert float(totals[k]) == pytest.approx(float(total), rel=1e-6)
        for n, p in m.named_parameters():
            torch.testing.assert_close(stacked.params[n].grad[k], p.grad)


def test_run_folders_are_written(tmp_path):
    cfg = TrainConfig(task="synthetic-redundant", fusion="concat", **{**FAST, "epochs": 2})
    dirs = [tmp_path / "s0", tmp_path / "s1"]
    results = train_seeds(cfg, [0, 1], out_dirs=dirs, vectorize=True)
    for d, r in zip(dirs, results):
        for name in ("config.json", "log.jsonl", "best.safetensors", "metrics.json"):
            assert (d / name).exists(), name
        assert json.loads((d / "metrics.json").read_text())["test"] == r.test_metrics
        assert len((d / "log.jsonl").read_text().splitlines()) == 2


def test_compiled_vectorised_step_matches_eager():
    # the dynamo trace through vmap + functional_call (AOTAutograd for the backward pass); the
    # "aot_eager" backend keeps it to seconds -- inductor and CUDA graphs are exercised by
    # `python -m benchmarks --device cuda`
    cfg = TrainConfig(task="synthetic-redundant", fusion="concat", **{**FAST, "epochs": 2}, **NO_DROPOUT)
    eager = train_seeds(cfg, [0, 1], vectorize=True)
    compiled = train_seeds(TrainConfig(**{**cfg.to_dict(), "compile": True, "compile_backend": "aot_eager"}), [0, 1],
                           vectorize=True)
    for a, b in zip(eager, compiled):
        _assert_same_run(b, a)


def test_default_on_cpu_is_the_trainer_itself():
    cfg = TrainConfig(task="synthetic-redundant", fusion="concat", **{**FAST, "epochs": 1})
    got = train_seeds(cfg, [4])[0]
    want = train(TrainConfig(**{**cfg.to_dict(), "seed": 4}), progress=False)
    assert got.history == want.history and got.test_metrics == want.test_metrics


# --------------------------------------------------------------------------------------------
# functional batch norm (issue 29): the vmapped step returns the new running statistics
# --------------------------------------------------------------------------------------------


def _bn_models(k=3, missing=False):
    from mmbench.models.model import MultimodalModel, describe_inputs

    split = _image_splits(n_train=16)["train"]
    if missing:  # rows without audio: the masked batch norm's static route under vmap
        present = dict(split.present)
        present["audio"] = torch.arange(len(split)) % 3 != 0
        split = split.with_present(present)
    enc = {"channels": 8, "blocks": 2, "norm": "batch"}
    config = {"inputs": describe_inputs(split), "target_type": "classification", "num_classes": 10, "fusion": "concat",
              "fusion_options": {"dropout": 0.0}, "encoders": {"image": dict(enc), "audio": dict(enc)},
              "embed_dim": 8, "hidden_dim": 8, "dropout": 0.0}
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(MultimodalModel(config).train())
    return models, split


def _per_seed_batches(split, k):
    """Each model its own rows (a different slice per seed), with a leading K axis."""
    rows = [torch.arange(i, i + 12) for i in range(k)]
    stack = lambda d: {m: torch.stack([v[r] for r in rows]) for m, v in d.items()}  # noqa: E731
    return rows, stack(split.modalities), stack(split.present), stack(split.lengths), torch.stack([split.targets[r] for r in rows])


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "masked"])
def test_functional_batch_norm_step_writes_nothing_and_returns_each_seeds_statistics(missing):
    models, split = _bn_models(missing=missing)
    complete = () if missing else ("audio", "image")
    stacked = StackedModels(models, "cpu", complete).train()
    rows, mods, present, lengths, targets = _per_seed_batches(split, len(models))
    step = stacked.loss_step(lambda out, y: torch.nn.functional.cross_entropy(out.float(), y.long()))
    inputs = {**stacked.params, **stacked.buffers}
    before = {n: (t.detach().clone(), t._version) for n, t in inputs.items()}
    losses, new = step(stacked.params, stacked.buffers, mods, present, lengths, targets)
    for n, t in inputs.items():  # not one input written, not even a version bump
        assert t._version == before[n][1] and torch.equal(t.detach(), before[n][0]), n
    assert set(new) == {n for n in stacked.buffers if n.rsplit(".", 1)[-1] in
                        ("running_mean", "running_var", "num_batches_tracked")}
    for k, (m, r) in enumerate(zip(models, rows)):  # the in-place forward of each model on its own rows
        sub = lambda d: {name: v[r] for name, v in d.items()}  # noqa: E731
        out = m(sub(split.modalities), sub(split.present), sub(split.lengths), complete)
        loss = torch.nn.functional.cross_entropy(out.float(), split.targets[r].long())
        assert float(losses[k].detach()) == pytest.approx(float(loss.detach()), rel=1e-5)
        for name, b in m.named_buffers():
            torch.testing.assert_close(new[name][k], b, rtol=1e-5, atol=1e-6, msg=name)
            assert not torch.equal(b, before[name][0][k]) or "num_batches" in name  # the statistics did move
    stacked.set_buffers(new)
    for name, b in stacked.buffers.items():
        assert torch.equal(b, new[name])


def test_compiled_functional_step_writes_no_input():
    # traced by dynamo and AOTAutograd ("aot_eager": seconds on the CPU): a step that mutated
    # an input would have it written back by AOTAutograd's wrapper (a version bump here), and
    # inductor would skip CUDA graphs for it
    models, split = _bn_models(k=2, missing=True)
    stacked = StackedModels(models, "cpu").train()
    rows, mods, present, lengths, targets = _per_seed_batches(split, 2)
    step = stacked.loss_step(lambda out, y: torch.nn.functional.cross_entropy(out.float(), y.long()))
    eager_losses, eager_new = step(stacked.params, stacked.buffers, mods, present, lengths, targets)
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    versions = {n: t._version for n, t in {**stacked.params, **stacked.buffers}.items()}
    losses, new = compiled(stacked.params, stacked.buffers, mods, present, lengths, targets)
    losses.sum().backward()
    assert {n: t._version for n, t in {**stacked.params, **stacked.buffers}.items()} == versions
    torch.testing.assert_close(losses, eager_losses)
    for name in eager_new:
        torch.testing.assert_close(new[name], eager_new[name])


def test_batch_norm_running_statistics_match_one_by_one_without_recalibration():
    # the moving averages themselves (no recalibration overwrites them), with rows missing in
    # every batch: the vmapped static route against each seed's own in-place run
    splits = _image_splits()
    present = dict(splits["train"].present)
    present["audio"] = torch.arange(len(splits["train"])) % 4 != 0
    splits["train"] = splits["train"].with_present(present)
    vec = vectorised_matches_one_by_one(bn_config(), [0, 2], splits)  # state dicts: the running statistics included
    for v in vec:  # the best epoch's model: 3 steps an epoch
        assert int(v.model.state_dict()["encoders.audio.features.1.num_batches_tracked"]) == 3 * (v.best_epoch + 1)
