"""Evaluation of an encoder: the paper's protocols over clip-grouped folds, metrics, controls, paired comparisons."""
from .compare import compare
from .protocols import EvalConfig, evaluate_folds

__all__ = ["EvalConfig", "evaluate_folds", "compare"]
