"""mmbench: benchmarking multimodal learning.

Importing the package is cheap (torch is imported on first use). Every built-in dataset,
encoder, fusion, metric and task is available through the registries without importing
anything else first::

    import mmbench
    mmbench.FUSIONS.names()          # ['add', 'attention', 'concat', 'gnn', ...]
    spec = mmbench.get_task("synthetic-synergy")
    result = mmbench.train(mmbench.TrainConfig(task="synthetic-synergy", fusion="concat"))
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "DATASETS": "mmbench.registry",
    "ENCODERS": "mmbench.registry",
    "FUSIONS": "mmbench.registry",
    "METRICS": "mmbench.metrics",
    "get_task": "mmbench.tasks",
    "task_names": "mmbench.tasks",
    "load_task_spec": "mmbench.tasks",
    "TaskSpec": "mmbench.tasks",
    "load_dataset": "mmbench.datasets.base",
    "Split": "mmbench.data",
    "Batch": "mmbench.data",
    "collate": "mmbench.data",
    "TrainConfig": "mmbench.training.trainer",
    "train": "mmbench.training.trainer",
    "load_model": "mmbench.training.trainer",
    "MultimodalModel": "mmbench.models.model",
    "MMBenchError": "mmbench.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
