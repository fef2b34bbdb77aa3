"""Everything difflora needs from transformers internals, in one place.

A new transformers release should only ever touch this file. The attention body of the Llama
family (q/k/v projections, optional per-head q/k norm, rotary, cache update, pluggable backend,
o_proj) has been stable from 5.5 to 5.23; what differs between families is listed in FAMILIES.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


@dataclass(frozen=True)
class Family:
    """How one model family's attention module is laid out."""

    module: str  # transformers.models.<module>.modeling_<module>
    attention_class: str
    has_qk_norm: bool = False


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "LlamaAttention"),
    "mistral": Family("mistral", "MistralAttention"),
    "qwen2": Family("qwen2", "Qwen2Attention"),
    "qwen3": Family("qwen3", "Qwen3Attention", has_qk_norm=True),
}


class UnsupportedModelError(ValueError):
    """The base model is not a Llama-family architecture difflora knows how to transform."""


def family_of(model_type: str | None) -> Family:
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"difflora does not support model type '{model_type}': supported types are "
            f"{', '.join(sorted(FAMILIES))} (Llama-family attention with q_proj/k_proj/v_proj/o_proj and rotary)."
        )
    return FAMILIES[model_type]


def _modeling_module(family: Family):
    return importlib.import_module(f"transformers.models.{family.module}.modeling_{family.module}")


def attention_class(family: Family) -> type[nn.Module]:
    return getattr(_modeling_module(family), family.attention_class)


def rotary_function(family: Family) -> Callable:
    """The family's own apply_rotary_pos_emb(q, k, cos, sin)."""
    return _modeling_module(family).apply_rotary_pos_emb


def qk_norms(attn: nn.Module, family: Family) -> tuple[Callable, Callable]:
    """Per-head q/k normalisation applied before rotary (Qwen3), identity elsewhere."""
    if family.has_qk_norm:
        return attn.q_norm, attn.k_norm
    return (lambda t: t), (lambda t: t)


def sliding_window_kwargs(attn: nn.Module, family: Family) -> dict:
    """The extra keyword the family passes to its attention backend for sliding windows."""
    if family.module == "mistral":
        return {"sliding_window": getattr(attn.config, "sliding_window", None)}
    if hasattr(attn, "sliding_window"):
        return {"sliding_window": attn.sliding_window}
    return {}


def attention_backend(attn: nn.Module) -> Callable:
    """The backend the model is configured with (sdpa, eager, flash_attention_2, flex_attention, ...)."""
    from transformers.models.llama.modeling_llama import eager_attention_forward

    return ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)


def pretrained_model(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside a PeftModel / tuner wrapper (or the model itself)."""
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise TypeError(f"{type(model).__name__} holds no transformers PreTrainedModel")


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run the model with the eager backend, which builds (and returns) the softmax maps and
    receives masks in the additive float form, then restore the configured backend."""
    hf_model = pretrained_model(model)
    previous = hf_model.config._attn_implementation
    hf_model.set_attn_implementation("eager")
    try:
        yield
    finally:
        hf_model.set_attn_implementation(previous)


def layer_index(attn: nn.Module) -> int:
    return int(attn.layer_idx)


def base_shape(config) -> dict:
    """The shape facts an adapter depends on; saved with the adapter and checked on load."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    return {
        "model_type": text.model_type,
        "hidden_size": text.hidden_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": getattr(text, "num_key_value_heads", None) or heads,
        "head_dim": getattr(text, "head_dim", None) or text.hidden_size // heads,
    }


def model_type_of(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "model_type", None)

