"""The `clips` task end to end, and the `video` encoder.

Generated clips (mp4 H.264 + AAC, mkv MPEG-4 + MP3, webm VP8 + Opus; one without audio) whose
label is the colour of a bar sweeping across a noisy background go through the CLI:
`mmbench data info`, `mmbench train` (two fusions) and `mmbench evaluate --model baseline`.
The audio is a tone of random pitch, so only the video carries the label: a model that scores
well must have learned it through the video encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
av = pytest.importorskip("av")

from _cli import run_main
from test_clips import write_clip

from mmbench.data.datasets.clips import DataWarning
from mmbench.core.errors import SpecError
from mmbench.models.encoders import default_encoder_for
from mmbench.models.encoders.cnn import CNNEncoder
from mmbench.models.encoders.video import VideoEncoder
from mmbench.models.model import MultimodalModel

CONTAINERS = {"mp4": ("libx264", "aac", 44100), "mkv": ("mpeg4", "mp3", 22050), "webm": ("libvpx", "libopus", 48000)}
SPLITS = {"train": 32, "val": 12, "test": 12}
SILENT = "test-0"  # written without an audio track
EPOCHS = 8


def label_clip(path: Path, label: int, rng: np.random.Generator, ext: str, with_audio: bool) -> None:
    """A bar sweeping left to right over a noisy grey background, red for label 0 and blue for
    label 1; background level, bar width, start and tone pitch are random per clip."""
    vcodec, acodec, rate = CONTAINERS[ext]
    width, height, fps, n = 32, 24, 8, 8
    colour = np.array([220, 40, 40] if label == 0 else [40, 40, 220], dtype=np.float64)
    level, bar, start = rng.integers(60, 180), int(rng.integers(4, 9)), int(rng.integers(0, width // 3))
    images = []
    for i in range(n):
        img = level + rng.normal(0.0, 12.0, (height, width, 3))
        x = (start + 3 * i) % (width - bar)
        img[:, x : x + bar] = colour
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    t = np.arange(int(rate * n / fps)) / rate
    wave = (0.4 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    write_clip(path, vcodec, acodec if with_audio else None, images, wave, rate, fps)


def write_clip_set(root: Path, splits: dict[str, int], seed: int = 0) -> Path:
    """<root>/clips/manifest.csv and the clips under <root>/clips/v/, labels alternating."""
    (root / "clips" / "v").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows, k = ["path,label,split,id"], 0
    for split, count in splits.items():
        for j in range(count):
            ext = sorted(CONTAINERS)[k % len(CONTAINERS)]
            rel, label, clip_id = f"v/{split}_{j}.{ext}", j % 2, f"{split}-{j}"
            label_clip(root / "clips" / rel, label, rng, ext, with_audio=clip_id != SILENT)
            rows.append(f"{rel},{label},{split},{clip_id}")
            k += 1
    (root / "clips" / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_clip_set(tmp_path_factory.mktemp("clipdata"), SPLITS)


@pytest.fixture
def env(tmp_path):
    return {"MMBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------
# the task through the CLI
# ------------------------------------------------------------------------------------------


def test_task_is_listed(monkeypatch, capsys):
    rc, out, err = run_main(["tasks", "--json"], monkeypatch, capsys)
    assert rc == 0, err
    row = next(r for r in json.loads(out) if r["name"] == "clips")
    assert row["dataset"] == "clips" and row["modalities"] == ["video", "audio"] and row["primary_metric"] == "accuracy"


def test_data_info_counts_clips_and_masks_the_silent_one(data_root, env, monkeypatch, capsys):
    with pytest.warns(DataWarning, match=r"'test': audio: 1 of 12 masked \(v/test_0\.\w+: no audio track\)"):
        rc, out, err = run_main(["data", "info", "clips", "--data-dir", data_root, "--json"], monkeypatch, capsys, env)
    assert rc == 0, err
    info = json.loads(out)
    assert info["files"]["manifest"] == str(data_root / "clips" / "manifest.csv")
    splits = info["splits"]
    assert {s: v["samples"] for s, v in splits.items()} == SPLITS
    assert splits["train"]["present"] == {"audio": 32, "video": 32}
    assert splits["test"]["present"] == {"audio": 11, "video": 12}  # the silent clip's audio is masked
    assert splits["test"]["classes"] == {"0": 6, "1": 6}


# the attention run trains with modality dropout, so it must also work with either modality dropped
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::mmbench.data.datasets.clips.DataWarning")  # the silent clip, checked above
@pytest.mark.parametrize("fusion, modality_dropout", [("concat", 0.0), ("attention", 0.3)])
def test_train_and_evaluate_learn_the_video_pattern(fusion, modality_dropout, data_root, env, tmp_path, monkeypatch, capsys):
    from mmbench.training.trainer import load_model

    runs = tmp_path / "runs"
    rc, out, err = run_main(["train", "clips", "--fusion", fusion, "--epochs", EPOCHS, "--seed", 0, "--device", "cpu",
                             "--modality-dropout", modality_dropout, "--set", "batch_size=8",  # 4 steps an epoch
                             "--data-dir", data_root, "--out", runs, "--no-progress"], monkeypatch, capsys, env)
    assert rc == 0, err
    run = runs / "clips" / fusion / "seed0"
    assert out.startswith(f"clips {fusion} seed 0: best epoch") and str(run) in out
    for name in ("config.json", "log.jsonl", "best.safetensors", "last.safetensors", "metrics.json"):
        assert (run / name).is_file(), name
    assert len((run / "log.jsonl").read_text().splitlines()) == EPOCHS
    test_metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert test_metrics["accuracy"] >= 11 / 12, test_metrics  # chance is 6/12

    model, config = load_model(run / "best.safetensors")
    assert config["inputs"]["video"] == {"shape": [8, 3, 64, 64], "sequence": False}
    assert isinstance(model.encoders["video"], VideoEncoder)  # picked by shape, no encoders entry

    result_file = tmp_path / "result.json"
    rc, _, err = run_main(["evaluate", "clips", "--model", "baseline", "--weights", run / "best.safetensors",
                           "--name", f"clips-{fusion}", "--data-dir", data_root, "--output", result_file,
                           "--bootstrap", "0"], monkeypatch, capsys, env)
    assert rc == 0, err
    metrics = json.loads(result_file.read_text())["metrics"]
    assert set(metrics) == {"clean", "drop:audio", "drop:video"}
    assert metrics["clean"]["accuracy"] == pytest.approx(test_metrics["accuracy"])
    if modality_dropout:
        assert metrics["drop:audio"]["accuracy"] >= 11 / 12  # the video alone carries the label
        assert metrics["drop:video"]["accuracy"] <= 9 / 12  # the random-pitch audio does not


def test_label_outside_the_task_classes_is_one_clear_error(data_root, env, tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "v").symlink_to(data_root / "clips" / "v")
    lines = (data_root / "clips" / "manifest.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 3)[0] + ",2,train,odd"
    (root / "clips" / "manifest.csv").write_text("\n".join(lines) + "\n")
    rc, _, err = run_main(["train", "clips", "--fusion", "concat", "--epochs", 1, "--device", "cpu",
                           "--data-dir", root, "--out", tmp_path / "runs", "--no-progress"], monkeypatch, capsys, env)
    assert rc == 1 and "Traceback" not in err
    assert err.strip() == (f"error: {root / 'clips' / 'manifest.csv'}: line 4: label '2' is not one of the classes 0, 1 "
                           "(dataset option classes; other labels need their own task spec, see docs/datasets.md "
                           "'Audio-visual clips')")
    assert not (tmp_path / "runs").exists()


def test_own_spec_with_other_labels_through_the_tasks_path(data_root, env, tmp_path, monkeypatch, capsys):
    """The route docs/datasets.md gives for other labels: a copy of tasks/clips.yaml in MMBENCH_TASKS_PATH."""
    import yaml

    from mmbench.data import tasks

    names = ["cat", "dog", "owl"]
    root = tmp_path / "data"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "v").symlink_to(data_root / "clips" / "v")
    rows = (data_root / "clips" / "manifest.csv").read_text().splitlines()
    relabelled = [rows[0]] + [f"{r.split(',')[0]},{names[i % 3]},{r.split(',')[2]},{r.split(',')[3]}"
                              for i, r in enumerate(rows[1:])]
    (root / "clips" / "manifest.csv").write_text("\n".join(relabelled) + "\n")
    spec = yaml.safe_load((tasks.builtin_dir("tasks") / "clips.yaml").read_text())
    spec["name"] = "my-clips"
    spec["dataset"]["options"] |= {"classes": names, "frames": 3, "frame_size": 16}
    spec["target"] |= {"num_classes": 3, "class_names": names}
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "my-clips.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("MMBENCH_TASKS_PATH", str(tmp_path / "specs"))
    tasks._all_specs.cache_clear()
    try:
        with pytest.warns(DataWarning, match="no audio track"):
            rc, out, err = run_main(["data", "info", "my-clips", "--data-dir", root, "--json"], monkeypatch, capsys, env)
        assert rc == 0, err
        assert json.loads(out)["splits"]["train"]["classes"] == {"0": 11, "1": 11, "2": 10}  # cat, dog, owl
        runs = tmp_path / "runs"
        with pytest.warns(DataWarning):
            rc, out, err = run_main(["train", "my-clips", "--fusion", "concat", "--epochs", 1, "--device", "cpu",
                                     "--config", tasks.builtin_dir("baselines") / "clips.yaml", "--data-dir", root,
                                     "--out", runs, "--no-progress"], monkeypatch, capsys, env)
        assert rc == 0, err
    finally:
        tasks._all_specs.cache_clear()
    config = json.loads((runs / "my-clips" / "concat" / "seed0" / "config.json").read_text())
    assert config["model"]["num_classes"] == 3 and config["model"]["inputs"]["video"]["shape"] == [3, 3, 16, 16]
    assert config["train"]["batch_size"] == 16 and config["train"]["patience"] == 8  # from baselines/clips.yaml


# ------------------------------------------------------------------------------------------
# the video encoder
# ------------------------------------------------------------------------------------------


def _clips(b=3, t=5, size=16, seed=0):
    return torch.rand(b, t, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_default_encoder_by_shape():
    assert default_encoder_for((8, 3, 64, 64), False) == "video"
    assert default_encoder_for((3, 64, 64), True) == "video"  # a padded sequence of frames
    assert default_encoder_for((3, 64, 64), False) == "cnn"
    assert default_encoder_for((1, 112, 112), False) == "cnn"
    assert default_encoder_for((20, 64), True) == "gru"
    assert default_encoder_for((73,), False) == "mlp"


@pytest.mark.parametrize("temporal", ["mean", "conv", "gru"])
def test_output_shapes_and_gradient_flow(temporal):
    torch.manual_seed(0)
    enc = VideoEncoder((5, 3, 16, 16), out_dim=24, channels=4, blocks=2, temporal=temporal)
    assert isinstance(enc.frame, CNNEncoder)  # the image CNN, reused per frame
    x = _clips().requires_grad_(True)
    out = enc(x)
    assert out.pooled.shape == (3, 24) and out.sequence.shape == (3, 5, 24) and out.mask.shape == (3, 5)
    assert bool(out.mask.all())
    out.pooled.pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("temporal", ["mean", "conv", "gru"])
def test_frames_past_the_length_change_nothing(temporal):
    torch.manual_seed(0)
    enc = VideoEncoder((3, 16, 16), out_dim=16, channels=4, blocks=2, temporal=temporal, kernel=3, temporal_layers=2)
    x = _clips(b=3, t=6)
    lengths = torch.tensor([6, 2, 4])
    junk = x.clone()
    junk[1, 2:] = float("nan")
    junk[2, 4:] = torch.rand(2, 3, 16, 16) * 100
    outs, grads = [], []
    for inp in (x, junk):
        enc.zero_grad()
        out = enc(inp, lengths)
        out.pooled.sum().backward()
        outs.append(out)
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
    torch.testing.assert_close(outs[0].pooled, outs[1].pooled)
    assert torch.isfinite(outs[1].sequence).all()
    assert outs[1].mask.tolist() == [[True] * 6, [True] * 2 + [False] * 4, [True] * 4 + [False] * 2]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)
    # a padded clip encodes exactly as the same clip cut to its length
    for i, n in enumerate(lengths.tolist()):
        alone = enc(x[i : i + 1, :n]).pooled
        torch.testing.assert_close(alone, outs[0].pooled[i : i + 1], atol=1e-5, rtol=1e-4)


def test_mean_ignores_frame_order_and_temporal_models_do_not():
    x = _clips(b=2, t=6)
    perm = torch.tensor([5, 3, 1, 0, 2, 4])
    for temporal in ("mean", "conv", "gru"):
        torch.manual_seed(0)
        enc = VideoEncoder((6, 3, 16, 16), out_dim=16, channels=4, blocks=2, temporal=temporal).eval()
        same = torch.allclose(enc(x).pooled, enc(x[:, perm]).pooled, atol=1e-5)
        assert same is (temporal == "mean"), temporal


def test_bad_encoder_options_name_the_problem():
    with pytest.raises(SpecError, match=r"frame stacks \[T, C, H, W\].*\(64,\)"):
        VideoEncoder((64,))
    with pytest.raises(SpecError, match="temporal must be one of mean, conv, gru, not 'lstm'"):
        VideoEncoder((4, 3, 16, 16), temporal="lstm")
    with pytest.raises(SpecError, match="kernel must be odd"):
        VideoEncoder((4, 3, 16, 16), temporal="conv", kernel=2)


@pytest.mark.parametrize("fusion", ["concat", "mult"])
def test_inside_a_fusion_model_missing_video_is_ignored(fusion):
    torch.manual_seed(0)
    config = {"task": "t", "target_type": "multiclass", "num_classes": 3, "fusion": fusion, "embed_dim": 16,
              "hidden_dim": 16, "encoders": {"video": {"channels": 4, "blocks": 2}},
              "inputs": {"video": {"shape": [4, 3, 16, 16], "sequence": False},
                         "audio": {"shape": [10], "sequence": True}}}
    model = MultimodalModel(config).eval()
    assert isinstance(model.encoders["video"], VideoEncoder)
    video, audio = _clips(b=4, t=4), torch.rand(4, 7, 10)
    present = {"video": torch.tensor([True, True, False, True]), "audio": torch.tensor([True, False, True, True])}
    lengths = {"audio": torch.tensor([7, 0, 5, 3])}
    out = model({"video": video, "audio": audio}, present, lengths)
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    other = video.clone()
    other[2] = float("nan")  # the missing sample's fill, whatever it is, must not matter
    torch.testing.assert_close(model({"video": other, "audio": audio}, present, lengths)[2], out[2])
    model.train()
    model({"video": video, "audio": audio}, present, lengths).logsumexp(1).sum().backward()
    assert model.encoders["video"].frame.proj.weight.grad.abs().sum() > 0
