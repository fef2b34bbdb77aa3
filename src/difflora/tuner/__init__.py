"""DiffLoRA as a PEFT method: the config, the tuner layer, the model-level injection."""

from .config import PRESETS, DiffLoRAConfig
from .layer import DiffLoRAAttention
from .model import DiffLoRAModel, MergeNotSupportedError

__all__ = ["DiffLoRAConfig", "DiffLoRAAttention", "DiffLoRAModel", "MergeNotSupportedError", "PRESETS"]
