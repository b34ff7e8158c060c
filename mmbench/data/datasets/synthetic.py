"""A synthetic multimodal dataset with a chosen interaction between modalities; no download.

Each sample has modalities ``m0 .. m{n-1}`` (float vectors of `dim` features) and a label in
``range(num_classes)``. Modality m draws a latent class ``c_m`` and encodes it as that class's
prototype (a fixed random vector per modality and class) plus Gaussian noise of std `noise`,
mixed by a fixed random rotation so no single feature is the answer. The interaction decides
the label:

- ``redundant``: every modality encodes the label itself (``c_m = y``): each alone suffices.
- ``unique``: only ``m0`` encodes the label; the others encode independent random classes.
- ``synergy``: the modalities encode independent classes and ``y = sum(c_m) mod num_classes``
  (XOR for two classes): every modality alone is at chance, together they determine y.

Everything is drawn from ``numpy.random.default_rng(seed)``, so the same options give the
same data on every machine. Splits are fixed fractions of one draw.
"""

from __future__ import annotations

import numpy as np
import torch

from mmbench.data.samples import Split
from mmbench.data.datasets.base import MultimodalDataset
from mmbench.core.errors import SpecError
from mmbench.core.registry import DATASETS

INTERACTIONS = ("redundant", "unique", "synergy")


@DATASETS.register("synthetic")
class SyntheticDataset(MultimodalDataset):
    name = "synthetic"
    split_names = ("train", "val", "test")
    needs_files = False

    def __init__(
        self,
        data_dir=None,
        interaction: str = "redundant",
        n_modalities: int = 2,
        dim: int = 16,
        num_classes: int = 2,
        n_samples: int = 3000,
        noise: float = 0.5,
        fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
        seed: int = 0,
    ):
        super().__init__(data_dir, interaction=interaction, n_modalities=n_modalities, dim=dim,
                         num_classes=num_classes, n_samples=n_samples, noise=noise, fractions=list(fractions), seed=seed)
        if interaction not in INTERACTIONS:
            raise SpecError(f"synthetic: interaction {interaction!r} is not one of {', '.join(INTERACTIONS)}")
        if n_modalities < 2 or dim < 1 or num_classes < 2 or n_samples < 10 or noise < 0:
            raise SpecError("synthetic: need n_modalities >= 2, dim >= 1, num_classes >= 2, n_samples >= 10, noise >= 0")
        if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6:
            raise SpecError("synthetic: fractions must be three numbers summing to 1")
        self.interaction, self.n_modalities, self.dim = interaction, n_modalities, dim
        self.num_classes, self.n_samples, self.noise = num_classes, n_samples, noise
        self.fractions, self.seed = fractions, seed
        self.modalities = tuple(f"m{i}" for i in range(n_modalities))
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def _generate(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            rng = np.random.default_rng(self.seed)
            n, k, c = self.n_samples, self.n_modalities, self.num_classes
            y = rng.integers(0, c, size=n)
            latent = rng.integers(0, c, size=(k, n))
            if self.interaction == "redundant":
                latent[:] = y
            elif self.interaction == "unique":
                latent[0] = y
            else:  # synergy: the last modality's class completes the sum
                latent[-1] = (y - latent[:-1].sum(0)) % c
            xs = np.empty((k, n, self.dim), dtype=np.float32)
            for m in range(k):
                prototypes = rng.normal(size=(c, self.dim))
                prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
                rotation, _ = np.linalg.qr(rng.normal(size=(self.dim, self.dim)))
                clean = prototypes[latent[m]] * 2.0
                xs[m] = (clean + rng.normal(scale=self.noise, size=clean.shape)) @ rotation
            self._arrays = (xs, y)
        return self._arrays

    def load_split(self, split: str) -> Split:
        self.check_split(split)
        xs, y = self._generate()
        n_train = int(round(self.fractions[0] * self.n_samples))
        n_val = int(round(self.fractions[1] * self.n_samples))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, self.n_samples)}
        lo, hi = bounds[split]
        ids = [f"{self.interaction}-{i:06d}" for i in range(lo, hi)]
        mods = {name: torch.from_numpy(xs[m, lo:hi].copy()) for m, name in enumerate(self.modalities)}
        present = {name: torch.ones(hi - lo, dtype=torch.bool) for name in self.modalities}
        return Split(split, ids, mods, present, torch.from_numpy(y[lo:hi].astype(np.int64)))

    def locate(self) -> dict[str, str]:
        return {"generated": f"in memory from seed {self.seed}"}
