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
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .errors import UserError

TINY_SHAPES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 16}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),
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
                attn_implementation=attn_implementation, **family_defaults)
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
        with open(os.path.join(spec, "adapter_config.json")) as f:
            base = json.load(f).get("base_model_name_or_path")
        if not base:
            raise UserError(f"adapter '{spec}' does not name its base model: pass BASE::{spec}")
        return ModelSpec(base, spec)
    return ModelSpec(spec)


def _check_adapter_dir(path: str) -> None:
    if not os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise UserError(f"no adapter at '{path}': expected a folder with adapter_config.json (from save_pretrained)")


def load_base(name_or_path: str, *, dtype: str | torch.dtype = "auto", attn_implementation: str | None = None,
              device: str | None = None):
    """A causal LM and its tokenizer from a local folder or the hub (when the hub is reachable)."""
    if not os.path.isdir(name_or_path) and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"base model '{name_or_path}' is not a local folder and the hub is offline (HF_HUB_OFFLINE=1)")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as exc:
        raise UserError(f"cannot load base model '{name_or_path}': not a model folder, and not reachable on the hub ({exc.__class__.__name__})") from exc
    kwargs = {"dtype": _dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(name_or_path, config=config, **kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise UserError(f"no usable tokenizer in '{name_or_path}' ({str(exc).splitlines()[0][:120]}); "
                        "save the tokenizer beside the model (tokenizer.save_pretrained)") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device:
        model.to(device)
    return model.eval(), tokenizer


def load_model(spec: str | ModelSpec, **base_kwargs):
    """Base model, optionally with a PEFT adapter (DiffLoRA or LoRA) loaded on top; returns (model, tokenizer)."""
    from peft import PeftModel

    import difflora  # noqa: F401  (registers DIFFLORA with PEFT)

    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    model, tokenizer = load_base(spec.base, **base_kwargs)
    if spec.adapter:
        _check_adapter_dir(spec.adapter)
        model = PeftModel.from_pretrained(model, spec.adapter).eval()
        if os.path.isfile(os.path.join(spec.adapter, "tokenizer_config.json")):
            tokenizer = AutoTokenizer.from_pretrained(spec.adapter)
    return model, tokenizer


def _dtype(dtype):
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise UserError(f"unknown dtype '{dtype}': use one of {', '.join(names)} or auto")
    return names[dtype]
