"""difflora: differential-attention low-rank adapters (DiffLoRA) for Hugging Face causal LMs.

    import difflora                      # registers the DIFFLORA method with PEFT
    from peft import get_peft_model
    model = get_peft_model(base_model, difflora.DiffLoRAConfig.from_preset("difflora-64-fixed"))
"""

from .compat import UnsupportedModelError
from .introspection import attention_maps, difflora_layers, lambdas
from .tuner import PRESETS, DiffLoRAAttention, DiffLoRAConfig, DiffLoRAModel, MergeNotSupportedError
from .tuner.registration import register as _register

_register()

__version__ = "0.1.0"


def merge_positive_adapters(model, adapter_name: str | None = None) -> None:
    """Fold the positive LoRA adapters (Q1/K1) into the frozen W_Q/W_K in place.

    The differential (negative) part cannot be folded: see merge_and_unload's error."""
    _tuner(model).merge_positive_adapters(adapter_name)


def unmerge_positive_adapters(model, adapter_name: str | None = None) -> None:
    _tuner(model).unmerge_positive_adapters(adapter_name)


def _tuner(model) -> DiffLoRAModel:
    for module in model.modules():
        if isinstance(module, DiffLoRAModel):
            return module
    raise ValueError("not a DiffLoRA PeftModel")


__all__ = [
    "DiffLoRAConfig", "DiffLoRAModel", "DiffLoRAAttention", "PRESETS", "MergeNotSupportedError",
    "UnsupportedModelError", "attention_maps", "lambdas", "difflora_layers",
    "merge_positive_adapters", "unmerge_positive_adapters", "__version__",
]
