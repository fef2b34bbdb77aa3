"""Instruction fine-tuning with DiffLoRA, LoRA or full fine-tuning (`difflora train`)."""

from .config import DataConfig, TrainConfig, load_train_config
from .runner import TrainResult, run_training

__all__ = ["DataConfig", "TrainConfig", "TrainResult", "load_train_config", "run_training"]
