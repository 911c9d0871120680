"""Evaluation: features of a frozen encoder, classifier fitting, the paper's protocols over folds, metrics."""
