"""The exported model keeps the contract of serving engines' Transformers backends (vLLM
`--model-impl transformers`, SGLang's transformers backend), played here by an engine-like attention
function, for every preset on Llama, Mistral, Qwen2 and Qwen3.

What the engines do (vLLM's vllm/model_executor/models/transformers/base.py, SGLang's
srt/models/transformers.py) and PagedEngine does alike:
  * build the model with AutoModel (config.json's auto_map) and refuse it unless the class says
    `_supports_attention_backend`;
  * size one attention instance per layer, and its KV cache, from config.json's num_attention_heads,
    num_key_value_heads and head_dim (and each layer's sliding window from layer_types / sliding_window);
  * run the model with use_cache=False and explicit position_ids, all tokens in one row, their own objects
    passed as a model kwarg (`attention_instances`) that must reach the attention function;
  * in that function (registered in ALL_ATTENTION_FUNCTIONS), read module.layer_idx and the `scaling`
    kwarg, view q/k/v with the instance's head counts, keep K/V in the engine's own store, compute causal
    attention and return (tokens, heads * head_dim).
PagedEngine also fails when a layer calls it more than once in one forward. Prefill plus 16 decoding steps
through it must give the exported model's own logits (float32, 1e-5) and its greedy tokens (DynamicCache,
sdpa and eager).
"""

import json
from collections import Counter

import pytest
import torch
from peft import get_peft_model
from transformers import AttentionInterface, AutoModel, AutoModelForCausalLM

import difflora
from difflora import DiffLoRAConfig
from difflora.export import export_standalone
from difflora.testing import tiny_model

from .test_export import randomize

ENGINE = "difflora_contract_engine"
FAMILY_SHAPES = {
    "llama": {},
    "mistral": {"sliding_window": 12},  # prompt + 16 steps is longer: the engine's window is exercised
    "qwen2": {"use_sliding_window": True, "sliding_window": 12, "max_window_layers": 1},  # windowed layer 1 only
    "qwen3": {},
}
CASES = [(family, preset, None) for family in FAMILY_SHAPES for preset in difflora.PRESETS]
# adapters on one layer: the other layer makes the same paired call as an engine sizes every layer alike
CASES += [("llama", "difflora-32", [1]), ("qwen3", "shared-diff-kv", [0])]
PROMPT, STEPS = 10, 16
TOLERANCE = 1e-5


class PagedEngine:
    """One sequence's attention as a serving engine computes it; see the module docstring."""

    def __init__(self, config):
        # what vLLM's create_attention_instances / SGLang's RadixAttention take from the config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        layer_types = getattr(config, "layer_types", None)
        window = getattr(config, "sliding_window", None)
        self.windows = [window if window and (not layer_types or layer_types[i] == "sliding_attention") else None
                        for i in range(config.num_hidden_layers)]
        self.keys, self.values = {}, {}  # layer_idx -> (tokens so far, kv_heads, head_dim)
        self.calls = Counter()

    def attend(self, module, query, key, value, scaling):
        layer = module.layer_idx
        self.calls[layer] += 1
        assert self.calls[layer] == 1, f"layer {layer} called the attention function twice in one forward"
        assert module.is_causal
        tokens = query.shape[-2]
        assert query.shape == (1, self.heads, tokens, self.head_dim), "queries do not match config.json's heads"
        assert key.shape == value.shape == (1, self.kv_heads, tokens, self.head_dim), \
            "keys/values do not match config.json"
        q, k, v = (x.transpose(1, 2).reshape(tokens, -1, self.head_dim) for x in (query, key, value))
        self.keys[layer] = torch.cat([self.keys.get(layer, k[:0]), k])
        self.values[layer] = torch.cat([self.values.get(layer, v[:0]), v])
        k, v = self.keys[layer], self.values[layer]
        groups = self.heads // self.kv_heads
        k, v = (t.repeat_interleave(groups, dim=1).transpose(0, 1) for t in (k, v))  # heads, keys, d
        scale = scaling if scaling is not None else self.head_dim**-0.5
        scores = torch.einsum("qhd,hkd->hqk", q.float(), k.float()) * scale
        positions = torch.arange(k.shape[1] - tokens, k.shape[1])[:, None]  # this call's tokens, after the cached ones
        keys_at = torch.arange(k.shape[1])[None, :]
        allowed = keys_at <= positions
        if self.windows[layer]:
            allowed &= positions - keys_at < self.windows[layer]
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        out = torch.einsum("hqk,hkd->qhd", probs, v.float()).to(query.dtype)
        return out.reshape(tokens, -1), None  # (tokens, heads * head_dim), as vLLM's and SGLang's functions return


def engine_attention(module, query, key, value, attention_mask, scaling=None, attention_instances=None, **kwargs):
    # like vllm_flash_attention_forward: the engine's objects arrive through the model's kwargs
    return attention_instances.attend(module, query, key, value, scaling)


AttentionInterface.register(ENGINE, engine_attention)


def serve(folder, lm_head, prompt):
    """Prefill, then STEPS greedy steps of one token each, as an engine runs the model: AutoModel, use_cache
    False, explicit position_ids. Returns the logits of every position and the tokens."""
    model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    assert type(model).is_backend_compatible(), "_supports_attention_backend"
    model.set_attn_implementation(ENGINE)
    engine = PagedEngine(model.config)
    tokens, logits = prompt, []
    new = prompt
    with torch.no_grad():
        for _ in range(STEPS + 1):
            engine.calls.clear()
            start = tokens.shape[0] - new.shape[0]
            hidden = model(input_ids=new[None], position_ids=torch.arange(start, tokens.shape[0])[None],
                           use_cache=False, attention_instances=engine).last_hidden_state
            assert engine.calls == Counter(range(model.config.num_hidden_layers)), "one call per layer"
            logits.append(lm_head(hidden)[0])
            new = logits[-1][-1:].argmax(-1)
            tokens = torch.cat([tokens, new])
    return torch.cat(logits), tokens, engine


@pytest.mark.parametrize("family,preset,layers", CASES, ids=lambda v: str(v))
def test_engine_like_attention_gives_the_exported_models_logits_and_tokens(tmp_path, family, preset, layers):
    positive = {"positive_r": 8, "positive_alpha": 16} if difflora.PRESETS[preset].get("positive_r") else {}
    config = DiffLoRAConfig.from_preset(preset, r=8, lora_alpha=16, layers_to_transform=layers, **positive)
    base = tiny_model(family, vocab_size=256, **FAMILY_SHAPES[family])
    base_kv = base.config.num_key_value_heads
    peft_model = get_peft_model(base, config).eval()
    randomize(peft_model, seed=len(CASES) + CASES.index((family, preset, layers)))
    folder = export_standalone(peft_model, tmp_path / "out")
    written = json.loads((folder / "config.json").read_text())
    assert written["auto_map"]["AutoModel"].startswith("modeling_difflora.DiffLoRA")

    transformers_model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True,
                                                              dtype=torch.float32).eval()
    transformers_model.generation_config.eos_token_id = None  # greedy for all the steps, as the engine runs
    prompt = torch.randint(3, 256, (PROMPT,), generator=torch.Generator().manual_seed(7))
    logits, tokens, engine = serve(folder, transformers_model.lm_head, prompt)

    # the engine's cache: the base's kv heads with shared keys, twice them with own keys
    own_keys = config.negative_keys == "own"
    assert engine.kv_heads == (2 if own_keys else 1) * base_kv
    assert all(k.shape == (PROMPT + STEPS, engine.kv_heads, engine.head_dim) for k in engine.keys.values())
    with torch.no_grad():
        reference = transformers_model(input_ids=tokens[None, :-1]).logits[0]  # the exported model's own, sdpa
        err = (logits - reference).abs().max().item()
        assert err <= TOLERANCE, f"engine-served logits differ from the model's own by {err:.2e}"
        for backend in ("sdpa", "eager"):  # transformers' own backends and DynamicCache
            transformers_model.set_attn_implementation(backend)
            generated = transformers_model.generate(input_ids=prompt[None], max_new_tokens=STEPS + 1, do_sample=False,
                                                    pad_token_id=0)[0]
            assert torch.equal(generated, tokens), f"{backend}: greedy tokens differ from the engine's"
