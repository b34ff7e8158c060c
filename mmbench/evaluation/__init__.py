"""Evaluation: scoring a model or a submission under the task's missing-modality conditions.

Metrics (`metrics`), the result record (`results`), labels-only scoring of a predictions file
(`scoring`, imports no torch), scoring a model under conditions (`evaluator`), paired
significance (`significance`), submissions by kind (`submissions/`) and the sandbox that runs
submitted models (`sandbox/`). May import `core`, `data` and `models` (see docs/architecture.md
for the two calls into `training`).
"""
