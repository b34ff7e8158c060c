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
    "DATASETS": "mmbench.core.registry",
    "ENCODERS": "mmbench.core.registry",
    "FUSIONS": "mmbench.core.registry",
    "METRICS": "mmbench.evaluation.metrics",
    "get_task": "mmbench.data.tasks",
    "task_names": "mmbench.data.tasks",
    "load_task_spec": "mmbench.data.tasks",
    "TaskSpec": "mmbench.data.tasks",
    "load_dataset": "mmbench.data.datasets.base",
    "Split": "mmbench.data.samples",
    "Batch": "mmbench.data.samples",
    "collate": "mmbench.data.samples",
    "TrainConfig": "mmbench.training.trainer",
    "train": "mmbench.training.trainer",
    "load_model": "mmbench.models.checkpoint",
    "MultimodalModel": "mmbench.models.model",
    "MMBenchError": "mmbench.core.errors",
    # for submitters: the documented way to write a retrieval-model submission (README)
    "save_retrieval_program": "mmbench.evaluation.submissions.models",
    "export_submission": "mmbench.evaluation.submissions.contract",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
