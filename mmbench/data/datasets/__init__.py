"""Dataset loaders. Each module registers its loader with `@DATASETS.register(name)`."""

from mmbench.data.datasets.base import MultimodalDataset, data_root, load_dataset

__all__ = ["MultimodalDataset", "data_root", "load_dataset"]
