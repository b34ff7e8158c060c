"""Training: a task's model trained seed by seed (`trainer`), K seeds vmapped together
(`multiseed`) and the retrieval dual encoder (`retrieval`), sharing a run's config and result
(`config`) and the choice of step (`step_mode`). May import `core`, `data`, `models`
and `evaluation` (the evaluator scores each epoch on the validation split).
"""

from mmbench.training.trainer import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
