"""Instruction fine-tuning with DiffLoRA, LoRA or full fine-tuning (`difflora train`)."""

from .config import DataConfig, TrainConfig, load_train_config
from .method_spec import MethodSpec
from .runner import TrainResult, run_training

__all__ = ["DataConfig", "MethodSpec", "TrainConfig", "TrainResult", "load_train_config", "run_training"]
