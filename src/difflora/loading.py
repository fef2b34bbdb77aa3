"""Loading models: a real checkpoint from a path or the hub, an adapter on top of it, or a tiny
model built from config (tests, benchmarks).

Every command that takes "a model" takes a spec string:
    BASE                      a base model (local folder or hub id)
    BASE::ADAPTER_DIR         a PEFT adapter (DiffLoRA or LoRA) on that base
    ADAPTER_DIR               an adapter folder alone; its adapter_config.json names the base
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from . import compat
from .errors import UserError
from .quantization import bitsandbytes_config, parse_quantization, protect_quantized_base

TINY_SHAPES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 16}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),
    # head_dim 16 = hidden 64 / 4 heads; soft-capping and query_pre_attn_scalar != head_dim so both show
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",  # no SDPA support in transformers (soft-capping)
               {"attn_implementation": "eager", "head_dim": 16, "query_pre_attn_scalar": 24, "attn_logit_softcapping": 5.0, "sliding_window": 6,
                "final_logit_softcapping": 30.0}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                    {"head_dim": 16, "query_pre_attn_scalar": 24, "sliding_window": 6, "sliding_window_pattern": 2}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"sliding_window": 8}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2,
                                                        "sliding_window": 8}),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", {"num_experts": 4, "num_experts_per_tok": 2,
                                                            "moe_intermediate_size": 32,
                                                            "shared_expert_intermediate_size": 48}),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", {"head_dim": 16, "num_experts": 4,
                                                            "num_experts_per_tok": 2, "moe_intermediate_size": 32}),
}


def tiny_model(family: str = "llama", *, vocab_size: int = 128, hidden_size: int = 64, layers: int = 2,
               heads: int = 4, kv_heads: int = 2, intermediate_size: int = 96, seed: int = 0,
               attn_implementation: str = "sdpa", **overrides):
    """A randomly initialised model of the given family, built from config (no download)."""
    import transformers

    cfg_name, model_name, family_defaults = TINY_SHAPES[family]
    args = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                attn_implementation=attn_implementation)
    args.update(family_defaults)
    args.update(overrides)
    config = getattr(transformers, cfg_name)(**args)
    torch.manual_seed(seed)
    return getattr(transformers, model_name)(config).eval()


@dataclass
class ModelSpec:
    base: str
    adapter: str | None = None

    @property
    def label(self) -> str:
        return Path(self.adapter).name if self.adapter else Path(self.base).name


def parse_model_spec(spec: str) -> ModelSpec:
    """BASE, BASE::ADAPTER or ADAPTER (see module docstring)."""
    if "::" in spec:
        base, adapter = spec.split("::", 1)
        _check_adapter_dir(adapter)
        return ModelSpec(base, adapter)
    if os.path.isfile(os.path.join(spec, "adapter_config.json")):
        return ModelSpec(adapter_base(spec, f"pass BASE::{spec}"), spec)
    return ModelSpec(spec)


def adapter_base(folder: str, what_to_do: str) -> str:
    """The base model an adapter folder's adapter_config.json names (base_model_name_or_path, which
    save_pretrained writes); one that names none is a UserError ending with what_to_do."""
    base = read_adapter_config(folder).get("base_model_name_or_path")
    if not base:
        raise UserError(f"adapter '{folder}' does not name its base model: {what_to_do}")
    return str(base)


def _check_adapter_dir(path: str) -> None:
    if not os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise UserError(f"no adapter at '{path}': expected a folder with adapter_config.json (from save_pretrained)")
    read_adapter_config(path)


def read_adapter_config(folder: str) -> dict:
    """adapter_config.json of an adapter folder; a corrupt one is a one-line error naming the file and line."""
    path = os.path.join(folder, "adapter_config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno}); "
                        "save the adapter again (save_pretrained)") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save the adapter again (save_pretrained)") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} must hold a JSON object; save the adapter again (save_pretrained)")
    return config


# A hub id is "name" or "namespace/name" of these characters.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_local(name: str) -> bool:
    """Whether a model string is meant as a local path: it starts like one (./ ../ / ~), has more
    than one folder level, is not hub-id shaped, or its first part is an existing local folder
    (runs/nope when runs/ exists): such a string is never looked up on the hub."""
    if name.startswith(("./", "../", "/", "~", ".\\")) or (os.sep != "/" and os.sep in name):
        return True
    if not _HUB_ID.match(name):
        return True
    head = name.split("/", 1)[0]
    return "/" in name and os.path.isdir(head)


def check_local_model_path(name: str, what: str = "base model") -> None:
    """Refuse at once (no hub retries) a model string that is clearly a path but names no folder."""
    if os.path.isdir(name):
        return
    if os.path.exists(name):
        raise UserError(f"{what} '{name}' is a file, not a model folder (config.json + weights + tokenizer)")
    if looks_local(name):
        raise UserError(f"{what} '{name}' is neither a local folder (nothing is at that path) nor a hub id; "
                        "check the path")


def check_model_source(name: str, what: str = "base model") -> None:
    """check_local_model_path, and a hub id is refused at once when the hub is offline (else it is
    left to from_pretrained)."""
    check_local_model_path(name, what)
    if not os.path.isdir(name) and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"{what} '{name}' is not a local folder and the hub is offline (HF_HUB_OFFLINE=1)")


def load_base(name_or_path: str, *, dtype: str | torch.dtype = "auto", attn_implementation: str | None = None,
              device: str | None = None, quantization=None):
    """A causal LM and its tokenizer from a local folder or the hub (when the hub is reachable);
    quantization (a difflora.quantization setting: nf4, fp4, int8 or a mapping) loads the base
    weights in 4 or 8 bits with bitsandbytes."""
    check_model_source(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as exc:
        why = ("the folder has no usable config.json" if os.path.isdir(name_or_path)
               else "it is neither a local folder nor reachable on the hub")
        raise UserError(f"cannot load base model '{name_or_path}': {why} ({exc.__class__.__name__})") from exc
    except ValueError as exc:  # a corrupt config.json
        raise UserError(f"cannot load base model '{name_or_path}': {str(exc).splitlines()[0][:200]}") from exc
    kwargs = {"dtype": _dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:
        kwargs.update(_quantized_loading(quantization, kwargs["dtype"], device))
        device = None  # placed by device_map: a quantized model cannot be moved afterwards
    model = AutoModelForCausalLM.from_pretrained(name_or_path, config=config, **kwargs)
    protect_quantized_base(model)  # before any forward: see difflora.quantization
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise UserError(f"no usable tokenizer in '{name_or_path}' ({str(exc).splitlines()[0][:120]}); "
                        "save the tokenizer beside the model (tokenizer.save_pretrained)") from exc
    ensure_pad_token(tokenizer)
    if device:
        model.to(device)
    return model.eval(), tokenizer


def load_chat_tokenizer(source: str, what: str = "model"):
    """The tokenizer of a model folder (or hub id) for chat fine-tuning: it must have a chat template,
    and gets a pad token when it has none. `what` names the source in errors (model or tokenizer)."""
    check_model_source(source, what)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        if not os.path.isdir(source):  # a hub id that did not load: say so, not what the tokenizer lacks
            raise UserError(f"'{source}' is neither a local folder nor reachable on the hub "
                            f"({type(exc).__name__}); give a model folder or a hub id") from exc
        raise UserError(f"cannot load a tokenizer from '{source}' ({str(exc).splitlines()[0][:160]}); "
                        "give a model folder with its tokenizer, or tokenizer: PATH") from exc
    if tokenizer.chat_template is None:
        raise UserError(f"the tokenizer of '{source}' has no chat template; give one with "
                        "tokenizer: PATH (a tokenizer folder whose tokenizer_config.json has chat_template)")
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer):
    """Batches need a pad token: a tokenizer without one pads with its end-of-sequence token (the
    padded positions are masked out of attention and loss)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: str | ModelSpec, **base_kwargs):
    """Base model, optionally with a PEFT adapter (DiffLoRA or LoRA) loaded on top; returns (model, tokenizer)."""
    from peft import PeftModel

    import difflora  # noqa: F401  (registers DIFFLORA with PEFT)

    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    model, tokenizer = load_base(spec.base, **base_kwargs)
    if spec.adapter:
        _check_adapter_dir(spec.adapter)
        with compat.quiet_peft_deprecations():
            model = PeftModel.from_pretrained(model, spec.adapter).eval()
        if os.path.isfile(os.path.join(spec.adapter, "tokenizer_config.json")):
            tokenizer = AutoTokenizer.from_pretrained(spec.adapter)
    return model, tokenizer


def _quantized_loading(quantization, dtype, device: str | None) -> dict:
    """from_pretrained arguments for a quantized base: its BitsAndBytesConfig and a device_map (this
    process's GPU, or the CPU)."""
    setting = parse_quantization(quantization)
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    model_dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32
    return {"quantization_config": bitsandbytes_config(setting, model_dtype), "device_map": {"": device}}


def _dtype(dtype):
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise UserError(f"unknown dtype '{dtype}': use one of {', '.join(names)} or auto")
    return names[dtype]
