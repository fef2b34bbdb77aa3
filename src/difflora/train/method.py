"""Turning a base model into the model to train: DiffLoRA, PEFT LoRA, or full fine-tuning."""

from __future__ import annotations

import warnings

from peft import LoraConfig, get_peft_model

from ..tuner.config import DiffLoRAConfig

# The paper's baseline (FullLoRA): r=8 on every linear module of the decoder layers.
LORA_8 = dict(r=8, lora_alpha=16, lora_dropout=0.0,
              target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def peft_config_for(method: dict):
    """The PEFT config a method section describes (None for full fine-tuning)."""
    kind = method.get("type", "difflora")
    fields = {k: v for k, v in method.items() if k not in ("type", "preset")}
    if kind == "difflora":
        preset = method.get("preset")
        return DiffLoRAConfig.from_preset(preset, **fields) if preset else DiffLoRAConfig(**fields)
    if kind == "lora":
        return LoraConfig(**{**LORA_8, **fields}, task_type="CAUSAL_LM")
    return None


def prepare_model(model, method: dict):
    config = peft_config_for(method)
    if config is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    with warnings.catch_warnings():
        # peft 0.21 reads model.is_gradient_checkpointing, which transformers 5 deprecates: not ours to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def method_label(method: dict) -> str:
    kind = method.get("type", "difflora")
    return method.get("preset") or ("lora-8" if kind == "lora" else kind)
