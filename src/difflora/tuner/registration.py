"""Registers DIFFLORA with PEFT.

PEFT's public register_peft_method only accepts names in its closed PeftType enum, so the three
type mappings get a "DIFFLORA" key directly (PeftType is a str enum, so the plain string works as a
key everywhere PEFT looks a type up). This touches PEFT internals: peft is pinned to one minor
series in pyproject.toml and tests/core/test_peft_integration.py exercises every entry point.
"""

from __future__ import annotations

import functools

from .config import PEFT_TYPE, DiffLoRAConfig
from .model import DiffLoRAModel


def register() -> None:
    from peft import mapping

    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[PEFT_TYPE] = DiffLoRAConfig
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[PEFT_TYPE] = DiffLoRAModel
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[PEFT_TYPE] = DiffLoRAModel.prefix
    _wrap_weight_loading()


def _wrap_weight_loading() -> None:
    """A corrupt or truncated adapter file should say so in one line, not as a safetensors trace."""
    from peft import peft_model
    from peft.utils import save_and_load

    original = save_and_load.load_peft_weights
    if getattr(original, "_difflora_wrapped", False):
        return

    @functools.wraps(original)
    def load_peft_weights(model_id, *args, **kwargs):
        try:
            return original(model_id, *args, **kwargs)
        except Exception as exc:  # safetensors raises its own error type for bad headers/truncation
            if type(exc).__name__ in ("SafetensorError", "HeaderTooLarge", "InvalidHeaderDeserialization"):
                raise ValueError(
                    f"the adapter weights in '{model_id}' are corrupt or truncated ({exc}); "
                    "save or download the adapter again"
                ) from exc
            raise

    load_peft_weights._difflora_wrapped = True
    save_and_load.load_peft_weights = load_peft_weights
    peft_model.load_peft_weights = load_peft_weights
