"""The generic audio-visual clip loader: real MOSI clip, generated clips in several containers,
missing audio, corrupt files and manifest errors."""

from __future__ import annotations

import os
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
av = pytest.importorskip("av")

from _datapaths import real_data_root

from mmbench.data.datasets.clips import ClipsDataset, DataWarning, decode_audio, decode_video
from mmbench.core.errors import DataError, SpecError

# container -> (video codec, audio codec, audio rate); every one ships with PyAV's FFmpeg
CONTAINERS = {
    "mp4": ("libx264", "aac", 44100),
    "mkv": ("mpeg4", "mp3", 22050),
    "webm": ("libvpx", "libopus", 48000),
    "avi": ("mjpeg", "pcm_s16le", 16000),
    "mov": ("mpeg4", "aac", 32000),
}


def write_clip(path: Path, vcodec: str, acodec: str | None, images: list[np.ndarray], wave: np.ndarray | None = None,
               rate: int = 16000, fps: int = 10) -> Path:
    """Encode RGB `images` ([H, W, 3] uint8 each) and, with `acodec`, the mono float `wave` at `rate`."""
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height = width, height
        vs.pix_fmt = "yuvj420p" if vcodec == "mjpeg" else "yuv420p"
        if acodec:
            aus = out.add_stream(acodec, rate=rate)
            aus.layout = "mono"
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        if acodec:
            fmt = aus.codec_context.format.name
            chunk = aus.codec_context.frame_size or 1024
            for start in range(0, len(wave), chunk):
                piece = wave[start : start + chunk]
                if fmt.startswith("s16"):
                    arr = (piece * 32767).astype(np.int16)
                elif fmt.startswith("s32"):
                    arr = (piece * 2147483647).astype(np.int32)
                else:
                    arr = piece.astype(np.float64 if fmt.startswith("dbl") else np.float32)
                fr = av.AudioFrame.from_ndarray(arr[None, :], format=fmt, layout="mono")
                fr.sample_rate = rate
                fr.pts = start
                fr.time_base = Fraction(1, rate)
                for packet in aus.encode(fr):
                    out.mux(packet)
            for packet in aus.encode(None):
                out.mux(packet)
    return path


def make_clip(path: Path, vcodec: str, acodec: str | None, rate: int = 16000, n_frames: int = 12,
              size: tuple[int, int] = (48, 32), fps: int = 10, tone_hz: float = 440.0) -> Path:
    """A short clip whose red channel ramps up frame by frame, with an optional tone track."""
    width, height = size
    images = []
    for i in range(n_frames):
        img = np.zeros((height, width, 3), dtype=np.uint8)
        img[..., 0] = int(255 * i / (n_frames - 1))
        img[..., 1] = 64
        images.append(img)
    t = np.arange(int(rate * n_frames / fps)) / rate
    wave = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    return write_clip(path, vcodec, acodec, images, wave, rate, fps)


def write_manifest(root: Path, rows: list[tuple], header: str = "path,label,split", name: str = "manifest.csv") -> Path:
    text = header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    (root / "v").mkdir()
    for ext, (vc, ac, rate) in CONTAINERS.items():
        make_clip(root / "v" / f"with_audio.{ext}", vc, ac, rate)
        make_clip(root / "v" / f"silent.{ext}", vc, None)
    return root


# ------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_generated_containers_decode(clip_root, ext):
    frames, why = decode_video(clip_root / "v" / f"with_audio.{ext}", 4, 16)
    assert why is None and frames.shape == (4, 3, 16, 16) and frames.dtype == np.uint8
    red = frames[:, 0].reshape(4, -1).mean(1)
    assert red[0] < 40 and red[-1] > 200 and np.all(np.diff(red) > 0)  # first..last frame, in order
    wave, why = decode_audio(clip_root / "v" / f"with_audio.{ext}", 16000)
    assert why is None
    assert abs(len(wave) / 16000 - 1.2) < 0.15  # 12 frames at 10 fps
    spectrum = np.abs(np.fft.rfft(wave[2000:10000]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) < 10  # the 440 Hz tone survives resampling
    silent, why = decode_audio(clip_root / "v" / f"silent.{ext}", 16000)
    assert silent is None and why == "no audio track"


def test_loader_over_all_containers(clip_root, tmp_path):
    rows = []
    for i, ext in enumerate(sorted(CONTAINERS)):
        rows.append((f"v/with_audio.{ext}", "9" if i % 2 else "10", "train"))
        rows.append((f"v/silent.{ext}", "2", "test"))
    write_manifest(clip_root, rows, name="all.csv")
    ds = ClipsDataset(clip_root, manifest="all.csv", frames=6, frame_size=32, n_mels=40, cache_dir=str(tmp_path / "c"))
    assert ds.split_names == ("train", "test")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = ds.load_split("train")
        test = ds.load_split("test")
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(msgs) == 1 and "'test': audio: 5 of 5 masked" in msgs[0] and "no audio track" in msgs[0]
    # classes in sorted order, numerically as every label is an integer: 2 < 9 < 10
    assert train.info["class_names"] == ["2", "9", "10"]
    assert train.targets.tolist() == [2, 1, 2, 1, 2]
    assert test.targets.tolist() == [0] * 5
    assert train.modalities["video"].shape == (5, 6, 3, 32, 32)
    assert bool(train.present["video"].all()) and bool(train.present["audio"].all())
    assert train.modalities["audio"].shape[0] == 5 and train.modalities["audio"].shape[2] == 40
    assert all(abs(int(n) - 121) <= 15 for n in train.lengths["audio"])  # 1.2 s at a 10 ms hop
    assert bool(test.present["video"].all()) and not bool(test.present["audio"].any())
    assert test.lengths["audio"].tolist() == [0] * 5 and float(test.modalities["audio"].abs().sum()) == 0.0
    sample = train[0]
    assert sample["modalities"]["audio"].shape[0] == int(train.lengths["audio"][0])
    assert train.ids == [f"v/with_audio.{ext}" for ext in sorted(CONTAINERS)]


def test_real_mosi_clip(tmp_path):
    src = real_data_root() / "sentiment" / "mosi" / "raw" / "video" / "Oz06ZWiO20M_6.mp4"
    if not src.exists():
        pytest.skip(f"real MOSI clip not found: {src}")
    (tmp_path / "clips").mkdir()
    os.symlink(src, tmp_path / "clips" / src.name)
    write_manifest(tmp_path / "clips", [(src.name, "positive", "test", "Oz06ZWiO20M_6")], header="path,label,split,id")
    ds = ClipsDataset(tmp_path, cache_dir=str(tmp_path / "cache"))  # default manifest: <root>/clips/manifest.csv
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        split = ds.load_split("test")
    assert split.ids == ["Oz06ZWiO20M_6"]
    video = split.modalities["video"]
    assert video.shape == (1, 8, 3, 64, 64) and 0.0 <= float(video.min()) and float(video.max()) <= 1.0
    assert float(video.std()) > 0.02  # real picture content, not a blank fill
    assert bool(split.present["video"][0]) and bool(split.present["audio"][0])
    # 7.5 s of AAC audio at 16 kHz, 10 ms hop; the spectrogram has structure
    assert abs(int(split.lengths["audio"][0]) - 750) <= 10
    assert split.modalities["audio"].shape[2] == 64 and float(split.modalities["audio"].std()) > 0.05
    # a second load reads the cache
    ds2 = ClipsDataset(tmp_path, cache_dir=str(tmp_path / "cache"))
    again = ds2.load_split("test")
    assert ds2.cache.last_hit is True
    assert torch.equal(again.modalities["audio"], split.modalities["audio"])
    assert torch.equal(again.modalities["video"], split.modalities["video"])


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------


def test_corrupt_and_missing_clips_are_masked_with_a_count(clip_root, tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    good = (clip_root / "v" / "with_audio.mp4").read_bytes()
    (root / "good.mp4").write_bytes(good)
    (root / "garbage.mp4").write_bytes(os.urandom(4096))
    (root / "truncated.mp4").write_bytes(good[:200])
    (root / "empty.mkv").write_bytes(b"")
    write_manifest(root, [("good.mp4", "a", "train"), ("garbage.mp4", "a", "train"), ("truncated.mp4", "b", "train"),
                          ("empty.mkv", "b", "train"), ("absent.webm", "a", "train")])
    for attempt in ("build", "cache hit"):
        ds = ClipsDataset(root, manifest="manifest.csv", cache_dir=str(tmp_path / "cache"), frames=4, frame_size=16)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            split = ds.load_split("train")
        assert ds.cache.last_hit is (attempt == "cache hit")
        msgs = sorted(str(w.message) for w in caught if issubclass(w.category, DataWarning))
        assert len(msgs) == 2, msgs
        assert "audio: 4 of 5 masked" in msgs[0] and "video: 4 of 5 masked" in msgs[1]
        assert "absent.webm: file not found" in msgs[1]
        assert split.present["video"].tolist() == [True, False, False, False, False]
        assert split.present["audio"].tolist() == [True, False, False, False, False]
        assert float(split.modalities["video"][1:].abs().sum()) == 0.0


def test_manifest_missing_column(clip_root):
    path = write_manifest(clip_root, [("v/silent.mp4", "train")], header="path,split", name="nolabel.csv")
    with pytest.raises(DataError, match="missing column") as exc:
        ClipsDataset(clip_root, manifest="nolabel.csv").load_split("train")
    assert str(path) in str(exc.value) and "'label'" in str(exc.value)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "v/../../outside.mp4"])
def test_manifest_path_traversal_refused(clip_root, bad):
    path = write_manifest(clip_root, [("v/silent.mp4", "a", "train"), (bad, "a", "train")], name="evil.csv")
    with pytest.raises(DataError) as exc:
        ClipsDataset(clip_root, manifest="evil.csv").load_split("train")
    assert str(path) in str(exc.value) and "line 3" in str(exc.value) and bad in str(exc.value)


def test_manifest_other_errors(clip_root, tmp_path):
    with pytest.raises(DataError, match="not found"):
        ClipsDataset(tmp_path, manifest="nope.csv").load_split("train")
    write_manifest(clip_root, [("v/silent.mp4", "a", "train"), ("v/silent.mkv", "a", "train", "x")],
                   header="path,label,split,id", name="dup.csv")
    (clip_root / "dup.csv").write_text("path,label,split,id\nv/silent.mp4,a,train,x\nv/silent.mkv,a,train,x\n")
    with pytest.raises(DataError, match="duplicate id 'x'"):
        ClipsDataset(clip_root, manifest="dup.csv").load_split("train")
    (clip_root / "empty_label.csv").write_text("path,label,split\nv/silent.mp4,,train\n")
    with pytest.raises(DataError, match="line 2: empty 'label'"):
        ClipsDataset(clip_root, manifest="empty_label.csv").load_split("train")
    write_manifest(clip_root, [("v/silent.mp4", "a", "train")], name="one.csv")
    with pytest.raises(DataError, match="no split 'val'"):
        ClipsDataset(clip_root, manifest="one.csv").load_split("val")
    # an absolute manifest path works too
    with pytest.warns(DataWarning, match="1 of 1 masked"):
        split = ClipsDataset(None, manifest=str(clip_root / "one.csv"), cache=False).load_split("train")
    assert split.ids == ["v/silent.mp4"]


def test_classes_option_fixes_the_order_and_refuses_other_labels(clip_root, tmp_path):
    write_manifest(clip_root, [("v/with_audio.mp4", "b", "train"), ("v/with_audio.mkv", "a", "train"),
                               ("v/silent.mp4", "c", "test")], name="abc.csv")
    ds = ClipsDataset(clip_root, manifest="abc.csv", classes=["c", "a", "b"], frames=2, frame_size=16, cache=False)
    assert ds.load_split("train").targets.tolist() == [2, 1]  # index = position in classes, not sorted order
    assert ds.load_split("train").info["class_names"] == ["c", "a", "b"]
    # integers from YAML are label names too; a label outside the list names the manifest line
    ds = ClipsDataset(clip_root, manifest="abc.csv", classes=[0, "a", "b"], cache=False)
    with pytest.raises(DataError, match=r"line 4: label 'c' is not one of the classes 0, a, b") as exc:
        ds.load_split("train")
    assert str(clip_root / "abc.csv") in str(exc.value)
    for bad in ("abc", [], ["a", "a"], ["a", " "]):
        with pytest.raises(SpecError, match="clips: classes must be"):
            ClipsDataset(clip_root, manifest="abc.csv", classes=bad)
