"""Pretraining: the configuration, the one epoch loop (one process or DDP), checkpoints and resume, the fast step."""
from .checkpoint import load_encoder, load_pretrained
from .config import PretrainConfig, build_model
from .loop import pretrain

__all__ = ["PretrainConfig", "build_model", "pretrain", "load_pretrained", "load_encoder"]
