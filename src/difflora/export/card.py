"""The README.md model card of an exported folder: what it is, how it was made, how to load it."""

from __future__ import annotations

import datetime

import torch
import transformers

from ..tuner.config import PRESETS, DiffLoRAConfig
from .standalone.modeling_difflora import WRITTEN_FOR_TRANSFORMERS

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
        form = [f for f in differs if f in FORM_FIELDS]
        if bool(preset.positive_r) != bool(config.positive_r):
            form.append("positive")
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
    heads, kv_heads = section["attention_heads"], section["key_value_heads"]
    own_keys = section["negative_keys"] == "own"
    call_kv = 2 * kv_heads if own_keys else kv_heads
    if own_keys:
        call = (f"{2 * heads} query heads (Q1's and Q2's {heads} each) over {call_kv} kv heads (K1's and K2's "
                f"{kv_heads} each, V given to both)")
        cache = ("2x the base model's: K2 must be cached, and a serving engine's paged cache holds keys and "
                 "values for the same kv heads, so V is stored for K1's and K2's heads alike")
    else:
        call = f"{2 * heads} query heads (Q1's and Q2's {heads} each) over the base's {kv_heads} kv heads (K2 = K1)"
        cache = "the base model's"
    plain = "" if config.layers_to_transform is None else (
        "\n* Layers without DiffLoRA make the same call with their own heads twice (the second half dropped), "
        "since an engine gives every layer one size: twice the attention work there"
        + (", and 2x cache" if own_keys else "") + ".")
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
transformers model and replaces its attention).
Tested with transformers {" and ".join(WRITTEN_FOR_TRANSFORMERS)}.

Each layer computes both terms in ONE attention call: {call}; the output splits back into the two terms,
and lambda, the normalisation and `o_proj` follow in the layer. The KV cache is {cache}.
`config.json` states the call's head counts (`num_attention_heads` {2 * heads}, `num_key_value_heads`
{call_kv}, `head_dim`), because serving engines size their attention and cache from them; the base's are
`difflora.attention_heads` {heads} and `difflora.key_value_heads` {kv_heads}. Cached generation works with
transformers' own caches and attention backends.

## Serving (vLLM, SGLang)

The model keeps the contract of the serving engines' Transformers backends: kwargs reach the attention
function, attention is one `ALL_ATTENTION_FUNCTIONS` call per layer (the engine's paged attention, which
keeps the KV cache by `module.layer_idx`), and the model classes set `_supports_attention_backend = True`;
`auto_map` names `AutoModel`, which the engines load.

```bash
vllm serve PATH --model-impl transformers --trust-remote-code
python -m sglang.launch_server --model-path PATH --model-impl transformers --trust-remote-code
```

(Not run by difflora's tests, whose machines have no engine; they play the engine's attention function
instead: its own KV store by layer, one token per step, and the model's own logits and greedy tokens.)

* KV cache: {"2x" if own_keys else "1x"} the base model's.
* The adapter's parts that transformers keeps float32 (`q2_proj`, `k2_proj`, lambda, the GroupNorm
  weight) run in the engine's serving dtype (one dtype for every weight), so bf16 serving is not bit-equal
  to transformers' bf16 run.
* Tensor parallelism: not yet (the negative factors are not in the model's TP plan): one GPU per replica.{plain}

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

