"""What tests and benchmarks build models from (as transformers' testing_utils): a tiny, randomly
initialised model of every supported family, made from config with no download.

A new family gets a shape in TINY_SHAPES, so the family tests (tests/core/test_families.py) and the
export tests cover it.
"""

from __future__ import annotations

import torch

# family -> (config class, model class, the family's own config values beside the shared tiny shape)
TINY_SHAPES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 16}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),
    # head_dim 16 = hidden 64 / 4 heads; soft-capping and query_pre_attn_scalar != head_dim so both show
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",  # no SDPA support in transformers (soft-capping)
               {"attn_implementation": "eager", "head_dim": 16, "query_pre_attn_scalar": 24,
                "attn_logit_softcapping": 5.0, "sliding_window": 6, "final_logit_softcapping": 30.0}),
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


def static_cache_decode(model, step_fn, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        max_cache_len: int, steps: int) -> torch.Tensor:
    """Prefill `model` eagerly into a StaticCache, then `steps` greedy decoding steps through step_fn
    (the model itself, or a compiled version of it). The step inputs keep one shape (the mask spans the
    whole cache), as transformers' compiled generate keeps them, and a left-padded prompt is numbered as
    generate numbers it. Returns the steps' last-position logits, (batch, steps, vocab)."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=max_cache_len)
    batch, prompt = input_ids.shape
    full_mask = torch.zeros(batch, max_cache_len, dtype=attention_mask.dtype, device=attention_mask.device)
    full_mask[:, :prompt] = attention_mask
    logits = []
    with torch.no_grad():
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                    past_key_values=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        for i in range(steps):
            full_mask[:, prompt + i] = 1
            positions = full_mask.sum(-1, keepdim=True) - 1
            out = step_fn(input_ids=token, attention_mask=full_mask.clone(), position_ids=positions,
                          past_key_values=cache, use_cache=True)
            logits.append(out.logits[:, -1])
            token = out.logits[:, -1].argmax(-1, keepdim=True)
    return torch.stack(logits, 1)


def cut_down(folder: str, out: str, layers: int = 2) -> str:
    """A pretrained model folder cut to its first `layers` layers (embeddings, final norm, head and
    tokenizer kept): a real model's weights and tokenizer at a fraction of its cost, for end-to-end
    tests of pipelines that a random tiny model cannot exercise (real text, a real chat template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, num_hidden_layers=layers, dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return out
