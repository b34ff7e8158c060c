"""Frozen backbones researchers already have (issue 37): torchvision image classifiers from the
torch hub cache, any local transformers text encoder with its pooling, torchaudio wav2vec 2.0
bundles. No network: every architecture is built by torchvision / transformers / torchaudio
with random weights, saved the way those libraries cache them (a state dict under the file
name torchvision uses, in a temporary $TORCH_HOME), and mmbench's features are compared with a
direct call of the library on the same weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mmbench.core.errors import MMBenchError, SpecError
from mmbench.data.datasets.coco_features import image_features
from mmbench.models.encoders import backbones

# the five the issue names; resnet152 is saved under its V1 file (not the DEFAULT V2) to check the fallback
ARCHS = {"vgg16": "DEFAULT", "resnet18": "DEFAULT", "resnet50": "DEFAULT", "resnet152": "IMAGENET1K_V1",
         "vit_b_16": "DEFAULT"}


def _weights(arch: str, member: str = "DEFAULT"):
    from torchvision.models import get_model_weights

    return get_model_weights(arch)[member]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """$TORCH_HOME with random-weight checkpoints under torchvision's own file names."""
    from torchvision.models import get_model

    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        ckpt = home / "hub" / "checkpoints"
        ckpt.mkdir(parents=True)
        for i, (arch, member) in enumerate(ARCHS.items()):
            torch.manual_seed(i)
            torch.save(get_model(arch, weights=None).state_dict(), ckpt / os.path.basename(_weights(arch, member).url))
        yield ckpt


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Two photos of different sizes and aspect ratios (the weights' transforms resize and crop)."""
    from torchvision.io import write_png

    root = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    paths = []
    for i, (h, w) in enumerate([(260, 300), (320, 240)]):
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        write_png(img, str(root / f"{i}.png"))
        paths.append(root / f"{i}.png")
    return paths


def _direct(arch: str, path: Path, images: list[Path], member: str) -> torch.Tensor:
    """What a researcher writes with torchvision alone: the model, the weights' transforms, the
    pooled output (VGG: the conv trunk averaged; ResNet: fc removed; ViT: heads removed)."""
    from torchvision.io import ImageReadMode, read_image
    from torchvision.models import get_model

    with torch.device("meta"):  # no random initialisation to overwrite (it is slow for the big ones)
        model = get_model(arch, weights=None)
    model.load_state_dict(torch.load(path, weights_only=True), assign=True)
    model.eval()
    weights = _weights(arch, member)
    x = torch.stack([weights.transforms()(read_image(str(p), ImageReadMode.RGB)) for p in images])
    with torch.inference_mode():
        if arch.startswith("vgg"):
            return model.features(x).mean(dim=(2, 3))
        if arch.startswith("vit"):
            model.heads = nn.Identity()
        else:
            model.fc = nn.Identity()
        return model(x)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_features_equal_a_direct_torchvision_call(arch, hub, images, tmp_path):
    member = ARCHS[arch]
    backbone = backbones.resolve_image_backbone(f"torchvision:{arch}")
    assert backbone.weights.endswith(f".{_weights(arch, member).name}")  # resnet152: the V1 file that is there
    assert backbone.path == hub / os.path.basename(_weights(arch, member).url)
    feats, ok, info = image_features(images + [None], f"torchvision:{arch}", cache=tmp_path / "cache")
    expected = _direct(arch, backbone.path, images, member)
    assert feats.shape == (3, {"vgg16": 512, "resnet18": 512, "vit_b_16": 768}.get(arch, 2048))
    assert torch.equal(feats[:2], expected)  # bit for bit
    assert ok.tolist() == [True, True, False] and not feats[2].any() and info["absent"] == 1


def test_named_outputs_and_the_cache(hub, images, tmp_path, monkeypatch):
    from torchvision.models import get_model

    # a module's output averaged over space, and the classifier's logits
    state = torch.load(hub / os.path.basename(_weights("resnet18").url), weights_only=True)
    model = get_model("resnet18")
    model.load_state_dict(state)
    model.eval()
    from torchvision.io import ImageReadMode, read_image

    x = torch.stack([_weights("resnet18").transforms()(read_image(str(p), ImageReadMode.RGB)) for p in images])
    with torch.inference_mode():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        layer2 = model.layer2(model.layer1(stem)).mean(dim=(2, 3))
        logits = model(x)
    cache = tmp_path / "cache"
    got, _, info = image_features(images, "torchvision:resnet18", cache=cache, image_output="layer2")
    assert torch.equal(got, layer2) and info["image_cache"] == "miss"
    got, _, _ = image_features(images, "torchvision:resnet18", cache=cache, image_output="logits")
    assert torch.equal(got, logits)

    # a second load reads the cache and never builds the model
    backbones._image_model.cache_clear()
    monkeypatch.setattr(backbones, "_image_model", lambda *a: pytest.fail("model loaded on a warm cache"))
    again, _, info = image_features(images, "torchvision:resnet18", cache=cache, image_output="layer2")
    assert info["image_cache"] == "hit" and torch.equal(again, layer2)
    monkeypatch.undo()

    # the key holds the weights' content: other weights in the same file are a miss, other features
    path = hub / os.path.basename(_weights("resnet18").url)
    original = path.read_bytes()
    try:
        torch.manual_seed(99)
        torch.save(get_model("resnet18").state_dict(), path)
        other, _, info = image_features(images, "torchvision:resnet18", cache=cache, image_output="layer2")
        assert info["image_cache"] == "miss" and not torch.equal(other, layer2)
    finally:
        path.write_bytes(original)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_backbone_runs_channels_last_in_bfloat16_close_to_float32(hub, images):
    backbone = backbones.resolve_image_backbone("torchvision:resnet50")
    read = lambda i: backbones.read_image_file(images[i])  # noqa: E731
    cpu, _, _ = backbones.encode_image_sources(2, read, backbone, device="cpu")
    gpu, ok, _ = backbones.encode_image_sources(2, read, backbone, device="cuda")
    assert ok.all() and gpu.dtype == torch.float32 and gpu.device.type == "cpu"
    assert backbone.cache_options("d", torch.device("cuda"))["bf16"] == torch.cuda.is_bf16_supported()
    cos = nn.functional.cosine_similarity(cpu, gpu)
    assert (cos > 0.99).all(), cos  # bfloat16 keeps 8 bits of mantissa: close, not equal
    assert next(backbones.load_image_backbone(backbone).parameters()).device.type == "cpu"  # handed back


def test_bfloat16_is_refused_where_the_device_lacks_it():
    with pytest.raises(SpecError, match="precision bfloat16 needs a CUDA device"):
        backbones.ImageBackbone("resnet18", "ResNet18_Weights.IMAGENET1K_V1", Path("x"), "penultimate",
                                "bfloat16").cache_options("d", torch.device("cpu"))


def test_missing_weights_name_the_file_and_where_to_get_it(hub, tmp_path):
    with pytest.raises(SpecError) as err:
        backbones.resolve_image_backbone("torchvision:resnet34")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(hub / "resnet34-b627a593.pth") in msg and "https://download.pytorch.org/models/resnet34-b627a593.pth" in msg
    with pytest.raises(SpecError, match=r"did you mean resnet50"):
        backbones.resolve_image_backbone("torchvision:resnet5")
    with pytest.raises(SpecError, match=r"has no weights 'IMAGENET1K_V9'.*IMAGENET1K_V1, IMAGENET1K_V2"):
        backbones.resolve_image_backbone("torchvision:resnet50:IMAGENET1K_V9")
    with pytest.raises(SpecError, match=r"image_weights: weights file not found: .*nope.pth"):
        backbones.resolve_image_backbone("torchvision:resnet18", weights_path=tmp_path / "nope.pth")
    with pytest.raises(SpecError, match=r"image_output 'layer9'.*did you mean layer"):
        image_features([Path(__file__)], "torchvision:resnet18", cache=tmp_path, image_output="layer9")


class Payload:
    """Not a tensor: unpickling it would run code a checkpoint must never run."""


def test_weights_are_loaded_without_unpickling_objects(hub, tmp_path):
    from torchvision.models import get_model

    bad = tmp_path / "resnet18-evil.pth"
    torch.save({**get_model("resnet18").state_dict(), "extra": Payload()}, bad)
    backbone = backbones.resolve_image_backbone("torchvision:resnet18", weights_path=bad)
    with pytest.raises(MMBenchError, match=r"not a torchvision resnet18 state dict: .*Weights only load failed") as err:
        backbones.load_image_backbone(backbone)
    assert str(bad) in str(err.value)
    # a state dict saved by the user (weights_path) works like the hub file
    good = tmp_path / "mine.pt"
    torch.save(torch.load(hub / os.path.basename(_weights("resnet18").url), weights_only=True), good)
    assert backbones.resolve_image_backbone("torchvision:resnet18", weights_path=good).path == good


# ------------------------------------------------------------------------------------- text


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    """A tiny random BERT with its WordPiece tokenizer, saved with save_pretrained."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "on", "the", "mat", "meme", "is", "not", "fun"]
    (root / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(root)
    return root


TEXTS = ["the cat is on the mat", "a dog", "meme is not fun fun fun", "the cat is on the mat"]


@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean"])
def test_text_pooling_equals_a_direct_transformers_call(pooling, bert, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from mmbench.data.datasets.text import text_features
    from mmbench.core.cache import FeatureCache

    got = text_features(TEXTS, str(bert), FeatureCache(tmp_path), batch_size=1, pooling=pooling)
    assert got["info"]["text_pooling"] == pooling and got["info"]["cache"] == "miss"
    tok, model = AutoTokenizer.from_pretrained(bert), AutoModel.from_pretrained(bert).eval()
    rows = []
    with torch.inference_mode():
        for t in TEXTS:
            enc = tok([t], return_tensors="pt", truncation=True, max_length=128)
            out = model(**enc)
            if pooling == "cls":
                rows.append(out.last_hidden_state[0, 0])
            elif pooling == "pooler":
                rows.append(out.pooler_output[0])
            else:
                rows.append(nn.functional.normalize(out.last_hidden_state[0].mean(0), dim=0))
    assert np.array_equal(got["features"], torch.stack(rows).numpy())
    assert got["features"].shape == (4, 32)
    again = text_features(TEXTS, str(bert), FeatureCache(tmp_path), batch_size=1, pooling=pooling)
    assert again["info"]["cache"] == "hit"


def test_other_weights_of_the_same_size_in_a_text_folder_are_another_entry(bert, tmp_path):
    """A folder's large weight files are keyed by content (memoised by stat), not name and size."""
    import shutil

    from transformers import BertConfig, BertModel

    from mmbench.core.cache import FeatureCache
    from mmbench.data.datasets.text import text_features

    folder = tmp_path / "bert-wide"
    shutil.copytree(bert, folder)
    config = BertConfig(vocab_size=15, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    weights = folder / "model.safetensors"
    assert weights.stat().st_size > 4 << 20
    cache = FeatureCache(tmp_path / "cache")
    first = text_features(TEXTS, str(folder), cache, pooling="cls")
    torch.manual_seed(1)
    BertModel(config).save_pretrained(folder)  # same files, same sizes, other values
    second = text_features(TEXTS, str(folder), cache, pooling="cls")
    assert second["info"]["cache"] == "miss" and not np.array_equal(first["features"], second["features"])
    assert text_features(TEXTS, str(folder), cache, pooling="cls")["info"]["cache"] == "hit"


def test_text_pooling_is_refused_when_unknown(bert, tmp_path):
    from mmbench.data.datasets.text import text_features

    with pytest.raises(SpecError, match="text_pooling 'max' is not one of mean, cls, pooler"):
        text_features(TEXTS, str(bert), None, pooling="max")


# ------------------------------------------------------------------------------------ audio


@pytest.fixture(scope="module")
def wav2vec2(hub) -> Path:
    """WAV2VEC2_BASE's architecture with random weights, in torchaudio's cache file."""
    from torchaudio.models import wav2vec2_model
    from torchaudio.pipelines import WAV2VEC2_BASE

    torch.manual_seed(0)
    path = hub / os.path.basename(WAV2VEC2_BASE._path)
    torch.save(wav2vec2_model(**WAV2VEC2_BASE._params).state_dict(), path)
    return path


def test_audio_bundle_features_equal_a_direct_torchaudio_call(wav2vec2, tmp_path):
    import torchaudio.functional as AF
    from torchaudio.models import wav2vec2_model
    from torchaudio.pipelines import WAV2VEC2_BASE

    g = torch.Generator().manual_seed(1)
    waves = [torch.randn(8000, generator=g) * 0.1, torch.randn(5600, generator=g) * 0.1]  # 8 kHz, as FSDD
    backbone = backbones.resolve_audio_backbone("torchaudio:WAV2VEC2_BASE")
    assert backbone.path == wav2vec2
    got = backbones.encode_audio(waves, 8000, backbone, device="cpu")
    model = wav2vec2_model(**WAV2VEC2_BASE._params)
    model.load_state_dict(torch.load(wav2vec2, weights_only=True))
    model.eval()
    with torch.inference_mode():
        expected = torch.stack([model.extract_features(AF.resample(w[None], 8000, 16000))[0][-1][0].mean(0)
                                for w in waves])
        layer3 = model.extract_features(AF.resample(waves[0][None], 8000, 16000), num_layers=3)[0][-1][0].mean(0)
    assert got.shape == (2, 768) and torch.equal(got, expected)
    third = backbones.encode_audio(waves[:1], 8000, backbones.resolve_audio_backbone("torchaudio:WAV2VEC2_BASE", layer=3))
    assert torch.equal(third[0], layer3)
    with pytest.raises(SpecError, match=r"hubert_fairseq_base_ls960.pth .*HUBERT_BASE"):
        backbones.resolve_audio_backbone("torchaudio:HUBERT_BASE")
    with pytest.raises(SpecError, match="did you mean WAV2VEC2_BASE"):
        backbones.resolve_audio_backbone("torchaudio:WAV2VEC_BASE")


def test_clips_audio_through_a_bundle_beside_log_mel(wav2vec2, tmp_path):
    from test_clips import make_clip, write_manifest

    from mmbench.data.datasets.clips import ClipsDataset, decode_audio

    root = tmp_path / "data"
    (root / "clips").mkdir(parents=True)
    for i in range(2):
        make_clip(root / "clips" / f"c{i}.mp4", "mpeg4", "aac", tone_hz=300 + 200 * i, n_frames=6)
    write_manifest(root / "clips", [("c0.mp4", 0, "train"), ("c1.mp4", 1, "train")])
    split = ClipsDataset(root, audio_encoder="torchaudio:WAV2VEC2_BASE", cache_dir=tmp_path / "cache").load_split("train")
    assert split.modalities["audio"].shape == (2, 768) and "audio" not in split.lengths
    wave, _ = decode_audio(root / "clips" / "c1.mp4", 16000)
    backbone = backbones.resolve_audio_backbone("torchaudio:WAV2VEC2_BASE")
    assert torch.equal(split.modalities["audio"][1], backbones.encode_audio([torch.from_numpy(wave)], 16000, backbone)[0])
    logmel = ClipsDataset(root, cache_dir=tmp_path / "cache").load_split("train")
    assert logmel.modalities["audio"].dim() == 3 and "audio" in logmel.lengths  # the default is unchanged
    with pytest.raises(SpecError, match="audio_encoder 'wav2vec' is not logmel or torchaudio"):
        ClipsDataset(root, audio_encoder="wav2vec")


def test_avmnist_fsdd_windows_through_a_bundle(wav2vec2, tmp_path):
    """AV-MNIST's noisy 8 kHz windows (here two recordings of the real FSDD) encoded by the
    bundle instead of the log-mel spectrogram; MultiBench's arrays (no waveforms) are refused."""
    from _datapaths import real_data_root

    from mmbench.data.datasets.avmnist import AVMNISTDataset, add_noise

    root = real_data_root()
    ds = AVMNISTDataset(root, pairing="recording", audio_encoder="torchaudio:WAV2VEC2_BASE", cache_dir=tmp_path)
    recs = ds._recordings()[:2]
    feats = ds._spectrograms(recs)
    assert feats["spectrograms"].shape == (2, 768) and feats["present"].all()
    clean, power, _, _ = ds._clean_windows(recs)
    import zlib

    rng = np.random.default_rng([ds.seed, zlib.crc32(recs[1][3].name.encode())])
    window = torch.from_numpy(add_noise(clean[1], ds.audio_snr_db, rng, signal_power=power[1]))
    expected = backbones.encode_audio([window], 8000, backbones.resolve_audio_backbone("torchaudio:WAV2VEC2_BASE"))
    assert torch.equal(feats["spectrograms"][1], expected[0])
    assert AVMNISTDataset(root, pairing="recording").fingerprint() != ds.fingerprint()
    with pytest.raises(SpecError, match="needs the FSDD recordings"):
        AVMNISTDataset(root, source="multibench", audio_encoder="torchaudio:WAV2VEC2_BASE")


# ------------------------------------------------------------------------------ everywhere


def test_mmf_style_hateful_memes_trains_on_a_resnet_and_bert(hub, bert, tmp_path, monkeypatch, capsys):
    """MMBT's recipe at tiny size: a ResNet's pooled vector and BERT's pooler output, named with
    --set (ResNet-152 in `tasks show`, which prints the resolved encoders; ResNet-18 to encode
    and train, for time); `data prepare` encodes with a progress bar."""
    from _cli import run_main
    from _hfdata import make_hateful_memes

    data = tmp_path / "data"
    make_hateful_memes(data, counts=(10, 6, 4))
    env = {"MMBENCH_CACHE": str(tmp_path / "cache"), "TORCH_HOME": os.environ["TORCH_HOME"]}
    options = {"image_encoder": "torchvision:resnet152", "text_encoder": str(bert), "text_pooling": "pooler",
               "val_fraction": 0.4}
    sets = [f"{k}={v}" for k, v in options.items()]

    rc, out, err = run_main(["tasks", "show", "hateful-memes", *[a for s in sets for a in ("--set", s)]],
                            monkeypatch, capsys, env)
    options["image_encoder"] = "torchvision:resnet18"
    sets = [f"{k}={v}" for k, v in options.items()]
    assert rc == 0, err
    assert (f"# image encoder: torchvision:resnet152 (ResNet152_Weights.IMAGENET1K_V1, output penultimate) from "
            f"{hub / 'resnet152-394f9c45.pth'}") in out
    assert f"# text encoder: transformers model folder {bert} (pooling pooler)" in out

    rc, out, err = run_main(["data", "prepare", "hateful-memes", "--data-dir", data,
                             *[a for s in sets for a in ("--set", s)]], monkeypatch, capsys, env)
    assert rc == 0, err
    assert "hateful-memes: torchvision:resnet18 on " in err and " images" in err  # the progress bars, on stderr
    assert f"texts with {bert.name}" in err

    rc, out, err = run_main(["train", "hateful-memes", "--fusion", "concat", "--epochs", "2", "--data-dir", data,
                             "--out", tmp_path / "runs", "--device", "cpu", "--no-progress", "--set", "batch_size=4",
                             *[a for s in sets for a in ("--set", f"dataset_options.{s}")]], monkeypatch, capsys, env)
    assert rc == 0, err
    assert "test auroc " in out

    from mmbench.data.datasets.hateful_memes import HatefulMemesDataset

    split = HatefulMemesDataset(data, cache_dir=tmp_path / "cache", **{k: v for k, v in options.items()}).load_split("train")
    assert split.modalities["image"].shape[1:] == (512,) and split.modalities["text"].shape[1:] == (32,)
