"""Everything difflora needs from transformers internals, in one place.

A new transformers release should only ever touch this file (the attention module's interface below;
the TrainingArguments names training passes, at the end). The attention body of the Llama
family (q/k/v projections, optional per-head q/k norm, rotary, cache update, pluggable backend,
o_proj) is the same from 5.5 to 5.25 except for one rename: 5.24 passes the cache to the attention
module as `cache=` (formerly `past_key_values=`) and calls `cache.update(k, v, layer_idx, kwargs=...)`.
What differs between families is listed in FAMILIES. `check_attention_module` refuses, at wrap time,
any attention class whose interface is not one of the layouts below, so a future rename is a clear
error instead of a silently wrong output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import transformers
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# bitsandbytes (imported by peft when installed; difflora imports this module before peft) logs, on every
# CPU without the optional `kernels` package, that its fused 4-bit CPU kernel is missing, then uses its plain
# one. Users cannot act on it, and it would be a second line under every one-line error.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# The transformers releases CI runs (the floor and the newest); pyproject.toml claims this range.
TESTED_TRANSFORMERS = ("5.5.0", "5.25.0")


@dataclass(frozen=True)
class Family:
    """How one model family's attention module is laid out (read off its transformers source)."""

    module: str  # transformers.models.<module>.modeling_<module>
    attention_class: str
    qk_norm: str = "none"  # "head": per-head norm after the head split (Qwen3, Gemma 3); "projection":
    #                        norm over the whole q/k projection before it (OLMo 2)
    fused_qkv: bool = False  # one qkv_proj whose output is [q | k | v] (Phi-3)
    sliding_window: str = "none"  # where the family reads the window it hands its backend: "config"
    #                               (config.sliding_window), "attribute" (attn.sliding_window), "none"
    softcap: bool = False  # the backend gets softcap=attn.attn_logit_softcapping (Gemma 2)

    @property
    def has_qk_norm(self) -> bool:
        return self.qk_norm != "none"


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "LlamaAttention"),
    "mistral": Family("mistral", "MistralAttention", sliding_window="config"),
    "qwen2": Family("qwen2", "Qwen2Attention", sliding_window="attribute"),
    "qwen3": Family("qwen3", "Qwen3Attention", qk_norm="head", sliding_window="attribute"),
    "gemma2": Family("gemma2", "Gemma2Attention", sliding_window="attribute", softcap=True),
    "gemma3_text": Family("gemma3", "Gemma3Attention", qk_norm="head", sliding_window="attribute"),
    "phi3": Family("phi3", "Phi3Attention", fused_qkv=True, sliding_window="config"),
    "olmo2": Family("olmo2", "Olmo2Attention", qk_norm="projection"),
    # mixture-of-experts models whose attention is the Llama/Qwen one (only the MLP differs)
    "mixtral": Family("mixtral", "MixtralAttention", sliding_window="config"),
    "qwen2_moe": Family("qwen2_moe", "Qwen2MoeAttention"),
    "qwen3_moe": Family("qwen3_moe", "Qwen3MoeAttention", qk_norm="head", sliding_window="attribute"),
}


class UnsupportedModelError(ValueError):
    """The base model is not a Llama-family architecture difflora knows how to transform."""


def family_of(model_type: str | None) -> Family:
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"difflora does not support model type '{model_type}': supported types are "
            f"{', '.join(sorted(FAMILIES))} (rotary attention whose layout difflora reproduces; see README, "
            "'Supported families')."
        )
    return FAMILIES[model_type]


def _modeling_module(family: Family):
    return importlib.import_module(f"transformers.models.{family.module}.modeling_{family.module}")


def attention_class(family: Family) -> type[nn.Module]:
    return getattr(_modeling_module(family), family.attention_class)


def rotary_function(family: Family) -> Callable:
    """The family's own apply_rotary_pos_emb(q, k, cos, sin)."""
    return _modeling_module(family).apply_rotary_pos_emb


def projection_shapes(attn: nn.Module, family: Family) -> tuple[int, int, int]:
    """(hidden size, query width, key/value width) of the module's projections."""
    if family.fused_qkv:
        q_out = attn.config.num_attention_heads * attn.head_dim
        kv_out = (attn.qkv_proj.out_features - q_out) // 2
        return attn.qkv_proj.in_features, q_out, kv_out
    return attn.q_proj.in_features, attn.q_proj.out_features, attn.k_proj.out_features


def project_qkv(attn: nn.Module, family: Family, hidden_states):
    """The pretrained projections W_Q x, W_K x, W_V x, each flat (batch, seq, width)."""
    if family.fused_qkv:
        _, q_out, kv_out = projection_shapes(attn, family)
        return attn.qkv_proj(hidden_states).split([q_out, kv_out, kv_out], dim=-1)
    return attn.q_proj(hidden_states), attn.k_proj(hidden_states), attn.v_proj(hidden_states)


def query_key_weights(attn: nn.Module, family: Family):
    """W_Q and W_K as (out x in) tensors that share storage with the module (views of the fused
    weight for Phi-3), so a positive adapter can be folded in place."""
    if family.fused_qkv:
        _, q_out, kv_out = projection_shapes(attn, family)
        weight = attn.qkv_proj.weight
        return weight[:q_out], weight[q_out:q_out + kv_out]
    return attn.q_proj.weight, attn.k_proj.weight


def split_heads(attn: nn.Module, family: Family, flat, head_shape, which: str):
    """A flat query or key projection (batch, seq, width) -> (batch, seq, heads, head_dim), with the
    family's q/k norm where the family puts it: over the whole projection before the split (OLMo 2)
    or per head after it (Qwen3, Gemma 3). `which` is "q" or "k"."""
    norm = getattr(attn, f"{which}_norm") if family.has_qk_norm else None
    if family.qk_norm == "projection":
        flat = norm(flat)
    heads = flat.view(head_shape)
    return norm(heads) if family.qk_norm == "head" else heads


def backend_kwargs(attn: nn.Module, family: Family) -> dict:
    """The family-specific keywords its attention backend receives (sliding window, soft-capping)."""
    kwargs = {}
    if family.sliding_window == "config":
        kwargs["sliding_window"] = getattr(attn.config, "sliding_window", None)
    elif family.sliding_window == "attribute":
        kwargs["sliding_window"] = attn.sliding_window
    if family.softcap:
        kwargs["softcap"] = attn.attn_logit_softcapping
    return kwargs


# ------------------------------------------------------------------------------------------------
# The attention module's call interface, and the wrap-time check that it is one we know.

# Names the decoder layer may use to hand the cache to its attention module (newest first).
CACHE_KWARGS = ("cache", "past_key_values")
# The forward signatures (after self, before **kwargs) that the DiffLoRA layer reproduces.
KNOWN_FORWARD_SIGNATURES = {
    ("hidden_states", "position_embeddings", "attention_mask", "past_key_values"): "past_key_values",  # 5.5-5.23
    ("hidden_states", "position_embeddings", "attention_mask", "cache"): "cache",  # 5.24
}
# What DiffLoRAAttention reads from the wrapped module besides its forward.
REQUIRED_ATTRIBUTES = ("o_proj", "head_dim", "scaling", "layer_idx", "config", "attention_dropout")


def required_attributes(family: Family) -> tuple[str, ...]:
    projections = ("qkv_proj",) if family.fused_qkv else ("q_proj", "k_proj", "v_proj")
    norms = ("q_norm", "k_norm") if family.has_qk_norm else ()
    extras = ("sliding_window",) if family.sliding_window == "attribute" else ()
    extras += ("attn_logit_softcapping",) if family.softcap else ()
    return projections + REQUIRED_ATTRIBUTES + norms + extras


class UnsupportedTransformersError(ValueError):
    """The installed transformers changed an internal that the DiffLoRA layer reproduces."""


def _refuse(what: str) -> UnsupportedTransformersError:
    low, high = TESTED_TRANSFORMERS
    return UnsupportedTransformersError(
        f"difflora cannot wrap this attention module safely: {what} with transformers {transformers.__version__} "
        f"(difflora is tested with transformers {low} to {high}); install a tested release "
        f"(pip install 'transformers>={low},<={high}') or upgrade difflora."
    )


def forward_parameters(attention_cls: type[nn.Module]) -> tuple[tuple[str, ...], bool]:
    """The named parameters of the class's forward (after self) and whether it takes **kwargs."""
    params = list(inspect.signature(attention_cls.forward).parameters.values())[1:]
    named = tuple(p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def cache_kwarg_of(attention_cls: type[nn.Module]) -> str:
    """The keyword under which this attention class receives the cache, or an error if its forward
    is not a layout the DiffLoRA layer reproduces (a new parameter could change the output)."""
    named, var_kwargs = forward_parameters(attention_cls)
    if named not in KNOWN_FORWARD_SIGNATURES or not var_kwargs:
        raise _refuse(f"{attention_cls.__name__}.forward{named} is not a known signature")
    return KNOWN_FORWARD_SIGNATURES[named]


def check_attention_module(attn: nn.Module, family: Family) -> str:
    """Everything the DiffLoRA layer relies on, checked once when it wraps `attn`; returns the
    cache keyword. Anything unknown raises UnsupportedTransformersError naming the version."""
    cache_kwarg = cache_kwarg_of(type(attn))
    missing = [name for name in required_attributes(family) if not hasattr(attn, name)]
    if missing:
        raise _refuse(f"{type(attn).__name__} has no {', '.join(missing)}")
    module = _modeling_module(family)
    for function in ("apply_rotary_pos_emb", "eager_attention_forward"):
        if not callable(getattr(module, function, None)):
            raise _refuse(f"{module.__name__} has no {function}")
    return cache_kwarg


def check_model_attention(model: nn.Module, family: Family) -> None:
    """check_attention_module on every attention module of the family in `model`, before any is
    wrapped, so a refusal leaves the model untouched."""
    cls = attention_class(family)
    for module in model.modules():
        if isinstance(module, cls):
            check_attention_module(module, family)


def pop_cache(kwargs: dict):
    """Take the cache out of the keywords a decoder layer passed, under whichever name it used."""
    found = [kwargs.pop(name) for name in CACHE_KWARGS if name in kwargs]
    found = [c for c in found if c is not None]
    return found[0] if found else None


def update_cache(cache, keys, values, layer_idx: int, cache_kwarg: str, kwargs: dict):
    """cache.update as the wrapped release calls it (5.24 forwards the layer's kwargs to the cache)."""
    if cache_kwarg == "cache":
        return cache.update(keys, values, layer_idx, kwargs=kwargs)
    return cache.update(keys, values, layer_idx)


@contextlib.contextmanager
def quiet_peft_deprecations() -> Iterator[None]:
    """Silence the one deprecation peft 0.21 triggers inside transformers >= 5.24 (PeftModel reads
    model.is_gradient_checkpointing): it is not the user's to act on, and would print on every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def eager_function(family: Family) -> Callable:
    """The family's own eager attention function (Gemma 2's applies the soft-cap). Resolved once, when
    a layer is wrapped: importing a module inside the forward would break a compiled graph."""
    return _modeling_module(family).eager_attention_forward


def attention_backend(attn: nn.Module, eager: Callable) -> Callable:
    """The backend the model is configured with (sdpa, eager, flash_attention_2, flex_attention, ...),
    with `eager` (eager_function) standing for "eager"."""
    return ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager)


# ------------------------------------------------------------------------------------------------
# Shared-key differential attention (negative_keys="shared", docs/method.md): one backend call with twice
# the query heads.

class _PairedHeads:
    """The attention module as a backend sees it when called with 2H query heads over the same kv
    heads. Every backend reads the module only for attributes (config, is_causal, training,
    layer_idx, ...); the eager and SDPA ones also repeat or pack K/V by `num_key_value_groups`,
    which must then count 2H / kv_heads. Everything else is the wrapped module's own."""

    def __init__(self, attn: nn.Module, num_key_value_groups: int):
        self._attn = attn
        self.num_key_value_groups = num_key_value_groups

    def __getattr__(self, name: str):
        return getattr(self._attn, name)


# Backends that take a single token's query heads as rows of their kv head (core.attention's
# pack_single_query): they apply the given mask row to every query row and take is_causal=False
# (transformers' own sdpa packs H heads the same way for one token when a mask is given). Flash and
# flex kernels index masks and windows by query position, so they keep the 2H-head call.
PACKABLE_BACKENDS = ("sdpa", "eager")


def packs_query_rows(attn: nn.Module) -> bool:
    return attn.config._attn_implementation in PACKABLE_BACKENDS


def paired_heads(attn: nn.Module, query_heads: int, kv_heads: int):
    """`attn` for a backend call with `query_heads` query heads (Q1 and Q2 stacked) over `kv_heads`."""
    return _PairedHeads(attn, query_heads // kv_heads)


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


# ------------------------------------------------------------------------------------------------
# TrainingArguments: transformers 5.2x renamed gradient_checkpointing(_kwargs) to
# activation_checkpointing(_kwargs). A config may use either spelling on every 5.x release; training
# passes the one the installed release knows.

CHECKPOINTING_SPELLINGS = (("gradient_checkpointing", "activation_checkpointing"),
                           ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"))


@functools.cache
def _training_fields() -> frozenset[str]:
    from transformers import TrainingArguments

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments))


def training_argument_names() -> frozenset[str]:
    """Every key a config's training: section may hold: the TrainingArguments fields of this release
    and both spellings of the checkpointing options."""
    return _training_fields() | {name for pair in CHECKPOINTING_SPELLINGS for name in pair}


def checkpointing_argument() -> str:
    """The TrainingArguments field that switches activation checkpointing on in this release (its
    keywords are this name + "_kwargs")."""
    return "activation_checkpointing" if "activation_checkpointing" in _training_fields() else "gradient_checkpointing"


def training_arguments(values: dict) -> dict:
    """A copy of training settings with the checkpointing options under this release's names."""
    out = dict(values)
    renamed = checkpointing_argument() == "activation_checkpointing"
    for old, new in CHECKPOINTING_SPELLINGS:
        used, alias = (new, old) if renamed else (old, new)
        if alias in out:
            out.setdefault(used, out.pop(alias))
    return out
