"""Data: raw files -> one sample format -> a task's splits, with their missing-modality masks.

The sample and batch format (`samples`), task specs (`tasks`), loading the splits a task names
(`splits`), missing-modality protocols (`masks`), `mmbench data export` (`export`) and the
dataset loaders (`datasets/`). May import `mmbench.core`; the loaders that encode frozen
features call `mmbench.models.encoders.pretrained` inside a function (see docs/architecture.md).
"""
