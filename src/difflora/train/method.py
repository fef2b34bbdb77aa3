"""Turning a base model into the model to train: DiffLoRA, PEFT LoRA, or full fine-tuning."""

from __future__ import annotations

from peft import get_peft_model

from .. import compat
from .method_spec import MethodSpec


def prepare_model(model, method: MethodSpec):
    config = method.peft_config()
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

