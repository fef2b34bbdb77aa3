"""The README.md model card of an exported folder: what it is, how it was made, how to load it."""

from __future__ import annotations

import datetime

import torch
import transformers

from ..tuner.config import PRESETS, DiffLoRAConfig
from .standalone.modeling_difflora import TESTED_TRANSFORMERS

# The DiffLoRAConfig fields that define the method (the rest is PEFT bookkeeping).
METHOD_FIELDS = ("r", "lora_alpha", "positive_r", "positive_alpha", "negative_base", "negative_keys",
                 "lambda_mode", "lambda_init", "group_norm", "rescale", "layers_to_transform")
FORM_FIELDS = ("negative_base", "negative_keys", "lambda_mode", "lambda_init", "group_norm", "rescale")


def describe_config(config: DiffLoRAConfig) -> str:
    """'difflora-32 with r=8, lora_alpha=16': the preset the config is closest to, and what differs."""
    fields = [f for f in METHOD_FIELDS if hasattr(config, f)]

    def distance(name):  # a different form counts before a different size (ranks and alphas)
        preset = DiffLoRAConfig.from_preset(name)
        differs = [f for f in fields if getattr(preset, f) != getattr(config, f)]
        form = [f for f in differs if f in FORM_FIELDS] + (["positive"] if bool(preset.positive_r) != bool(config.positive_r) else [])
        return len(form), len(differs), differs

    name = min(PRESETS, key=lambda n: distance(n)[:2])
    differs = distance(name)[2]
    if not differs:
        return f"preset `{name}`"
    return f"preset `{name}` with " + ", ".join(f"{f}={getattr(config, f)!r}" for f in differs)


def model_card(*, base: str, source: str, config: DiffLoRAConfig, section: dict, lambdas: list[str],
               difflora_version: str, class_name: str) -> str:
    fields = "\n".join(f"| `{f}` | `{getattr(config, f)!r}` |" for f in METHOD_FIELDS if hasattr(config, f))
    layer_rows = "\n".join(f"| {layer} | {init:.4f} | {lam} |"
                           for layer, init, lam in zip(section["layers"], section["lambda_init"], lambdas))
    shared_keys = section["negative_keys"] == "shared"
    cache = ("the cache is the base model's (K2 = K1)" if shared_keys
             else "K2 is cached beside K1 in the key slot, so the KV cache is 1.5x the base model's")
    return f"""---
library_name: transformers
base_model: {base}
tags:
- difflora
- differential-attention
---

# DiffLoRA model: {base} with differential attention

This folder is a self-contained transformers model: the base model `{base}` with the DiffLoRA
adapter `{source}` built in. Layers {section["layers"]} compute differential attention
`O = softmax(Q1 K1^T) V - lambda * softmax(Q2 K2^T) V`; it needs neither difflora nor peft:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("PATH")
```

`trust_remote_code=True` runs `modeling_difflora.py` and `configuration_difflora.py` from this folder
(they import only torch and transformers; class `{class_name}` subclasses the base family's own
transformers model and replaces the attention of the listed layers). Tested with transformers
{" and ".join(TESTED_TRANSFORMERS)}. Cached generation works with transformers' own caches: {cache}.

## How it was made

`difflora export` (difflora {difflora_version}) on {datetime.date.today().isoformat()}, with torch
{torch.__version__} and transformers {transformers.__version__}.

* Base model: `{base}`
* Adapter: `{source}`, {describe_config(config)}
* Positive adapters (Q1/K1 LoRA, when present) are folded into `q_proj`/`k_proj`.
* The negative projections are low-rank factors `q2_proj`/`k2_proj` (rank {section["negative_rank"]}, alpha/r
  already in `B`); negative_base `{section["negative_base"]}`, negative_keys `{section["negative_keys"]}`.
* lambda: `{section["lambda_mode"]}`; group_norm {section["group_norm"]}; rescale {section["rescale"]}.

| adapter field | value |
| --- | --- |
{fields}

| layer | lambda_init | lambda at export |
| --- | --- | --- |
{layer_rows}
"""
