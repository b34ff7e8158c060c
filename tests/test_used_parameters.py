"""Parameters and FLOPs count only the modules a model's output uses: a unimodal model counts
and runs one encoder (AV-MNIST's configs from baselines/, inputs as the dataset shapes them)."""

from __future__ import annotations

import pytest
import torch

from mmbench.models.model import build_model, used_parameter_count
from mmbench.reproduce import baseline_config, load_suite

INPUTS = {"image": {"shape": [1, 28, 28], "sequence": False}, "audio": {"shape": [1, 112, 112], "sequence": False}}


def _model(fusion: str):
    cfg = baseline_config("avmnist", fusion)
    return build_model({"task": "avmnist", "target_type": "multiclass", "num_classes": 10, "modalities": ["audio", "image"],
                        "inputs": INPUTS, "fusion": cfg["fusion"], "fusion_options": cfg.get("fusion_options", {}),
                        "encoders": cfg["encoders"], "embed_dim": cfg["embed_dim"], "hidden_dim": cfg["hidden_dim"],
                        "dropout": cfg["dropout"]})


def _flops(model) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    b = 4
    x = {m: torch.zeros(b, *v["shape"]) for m, v in INPUTS.items()}
    present = {m: torch.ones(b, dtype=torch.bool) for m in INPUTS}
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(x, present, {})
    return counter.get_total_flops()


def test_avmnist_unimodal_rows_count_one_encoder_below_every_fusion():
    fusions = load_suite("unimodal-avmnist")["fusions"]
    fusion_names = ["concat", "add", "attention", "gnn", "late", "tensor", "lowrank", "gated", "mult"]
    counts = {f: used_parameter_count(_model(f)) for f in fusion_names}
    image, audio = (_model(f) for f in fusions)  # unimodal:image, unimodal:audio
    enc = {m: sum(p.numel() for p in image.encoders[m].parameters()) for m in INPUTS}
    # the count is the used encoder + the fusion MLP + the head, and the ignored encoder is left out
    for m, model in (("image", image), ("audio", audio)):
        rest = sum(p.numel() for mod in (model.fusion, model.head) for p in mod.parameters())
        assert used_parameter_count(model) == enc[m] + rest
    assert sum(p.numel() for p in image.parameters()) - used_parameter_count(image) == enc["audio"]
    for name, m in (("image", image), ("audio", audio)):
        assert used_parameter_count(m) < min(counts.values()), (name, used_parameter_count(m), counts)
    # and the ignored encoder is not run: fewer FLOPs than any fusion, the output unchanged
    flops = {f: _flops(_model(f)) for f in ("concat", "late")}
    assert _flops(image) < min(flops.values()) and _flops(audio) < min(flops.values())


def test_skipping_the_ignored_encoder_leaves_the_output_unchanged():
    torch.manual_seed(0)
    model = _model("unimodal:image").eval()
    x = {m: torch.rand(3, *v["shape"]) for m, v in INPUTS.items()}
    present = {m: torch.ones(3, dtype=torch.bool) for m in INPUTS}
    with torch.no_grad():
        out = model(x, present, {})
        x2 = dict(x, audio=torch.rand(3, 1, 112, 112) * 100)  # another audio input: the same output
        assert torch.equal(out, model(x2, present, {}))
    assert model.used == ["image"]
    full = _model("concat")
    assert full.used == ["audio", "image"]
    assert used_parameter_count(full) == sum(p.numel() for p in full.parameters())


@pytest.mark.parametrize("fusion", ["unimodal:audio", "late"])
def test_measure_efficiency_reports_the_used_count_and_precision(fusion):
    from mmbench.data.samples import Split
    from mmbench.evaluation.evaluator import measure_efficiency

    n = 4
    split = Split(name="test", ids=[str(i) for i in range(n)], modalities={m: torch.rand(n, *v["shape"]) for m, v in INPUTS.items()},
                  present={m: torch.ones(n, dtype=torch.bool) for m in INPUTS}, targets=torch.zeros(n, dtype=torch.long))
    model = _model(fusion)
    eff = measure_efficiency(model, split, "cpu", batch_size=n, repeats=1)
    assert eff["params"] == used_parameter_count(model) and eff["precision"] == "float32" and eff["batch_size"] == n
