"""Registers DIFFLORA with PEFT.

PEFT's public register_peft_method only accepts names in its closed PeftType enum, so the three
type mappings get a "DIFFLORA" key directly (PeftType is a str enum, so the plain string works as a
key everywhere PEFT looks a type up). This touches PEFT internals: peft is pinned to one minor
series in pyproject.toml and tests/core/test_peft_integration.py exercises every entry point.
"""

from __future__ import annotations

import functools
import os

from .config import PEFT_TYPE, DiffLoRAConfig
from .model import DiffLoRAModel


def register() -> None:
    from peft import mapping

    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[PEFT_TYPE] = DiffLoRAConfig
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[PEFT_TYPE] = DiffLoRAModel
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[PEFT_TYPE] = DiffLoRAModel.prefix
    _wrap_weight_loading()
    _make_from_pretrained_atomic()
    _add_loading_note_to_model_card()


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


def _make_from_pretrained_atomic() -> None:
    """PeftModel.from_pretrained injects adapter layers into the caller's base model before it
    reads the weights; if reading fails (corrupt file, wrong shape) the base model would be left
    half-converted with random adapters. Undo the injection before re-raising."""
    from peft import PeftModel

    original = PeftModel.from_pretrained.__func__
    if getattr(original, "_difflora_wrapped", False):
        return

    @functools.wraps(original)
    def from_pretrained(cls, model, model_id, *args, **kwargs):
        try:
            return original(cls, model, model_id, *args, **kwargs)
        except Exception:
            _remove_difflora_layers(model)
            raise

    from_pretrained._difflora_wrapped = True
    PeftModel.from_pretrained = classmethod(from_pretrained)


def _remove_difflora_layers(model) -> None:
    from .layer import DiffLoRAAttention

    for name, module in list(model.named_modules()):
        if isinstance(module, DiffLoRAAttention):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.base_layer)
    if "peft_config" in getattr(model, "__dict__", {}):
        del model.peft_config


LOADING_NOTE = """
## Loading this DiffLoRA adapter

This adapter uses the DIFFLORA method of the `difflora` package, which PEFT does not ship.
Install it (`pip install difflora`) and `import difflora` before `PeftModel.from_pretrained(base, path)`
(a pip-installed difflora also registers itself whenever `peft` is imported).
"""


def _add_loading_note_to_model_card() -> None:
    """Say in the saved README.md what a reader needs to load the adapter."""
    from peft import PeftModel

    original = PeftModel.create_or_update_model_card
    if getattr(original, "_difflora_wrapped", False):
        return

    @functools.wraps(original)
    def create_or_update_model_card(self, output_dir: str):
        original(self, output_dir)
        if not any(getattr(c, "peft_type", None) == PEFT_TYPE for c in self.peft_config.values()):
            return
        card = os.path.join(output_dir, "README.md")
        text = open(card, encoding="utf-8").read() if os.path.exists(card) else ""
        if "import difflora" not in text:
            with open(card, "a", encoding="utf-8") as f:
                f.write(LOADING_NOTE)

    create_or_update_model_card._difflora_wrapped = True
    PeftModel.create_or_update_model_card = create_or_update_model_card
