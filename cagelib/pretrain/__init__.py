"""Pretraining: configuration, the epoch loop, checkpoints and resume, the fast CUDA step, DDP."""
