"""Turning a base model into the model to train: DiffLoRA, PEFT LoRA, or full fine-tuning."""

from __future__ import annotations

from peft import LoraConfig, get_peft_model

from .. import compat
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
    with compat.quiet_peft_deprecations():
        return get_peft_model(model, config)


def load_initial_weights(model, adapter_dir: str) -> None:
    """Start the adapters of `model` from the weights saved in adapter_dir (same method, same
    target modules). Checked before anything is copied: every adapter tensor must be there with
    its shape, or nothing is loaded."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    from ..errors import UserError

    saved = load_peft_weights(adapter_dir, device="cpu")
    wanted = get_peft_model_state_dict(model)  # the same key format save_pretrained writes
    missing = sorted(set(wanted) - set(saved))
    extra = sorted(set(saved) - set(wanted))
    wrong = sorted(k for k in set(wanted) & set(saved) if saved[k].shape != wanted[k].shape)
    if missing or extra or wrong:
        problem = (f"{len(missing)} adapter tensors missing (first: {missing[0]})" if missing else
                   f"{len(extra)} tensors this model has no place for (first: {extra[0]})" if extra else
                   f"{wrong[0]} has shape {tuple(saved[wrong[0]].shape)}, this model {tuple(wanted[wrong[0]].shape)}")
        raise UserError(f"init_from '{adapter_dir}' does not fit this model and method: {problem}; "
                        "use the base model and method section it was saved with")
    set_peft_model_state_dict(model, saved)


def method_label(method: dict) -> str:
    kind = method.get("type", "difflora")
    return method.get("preset") or ("lora-8" if kind == "lora" else kind)
