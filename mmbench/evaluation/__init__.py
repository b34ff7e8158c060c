from mmbench.evaluation.evaluator import evaluate_conditions, predict, robustness_summary

__all__ = ["evaluate_conditions", "predict", "robustness_summary"]
