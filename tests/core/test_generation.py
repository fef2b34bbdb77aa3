"""Cached decoding (K2 cached beside K1) gives exactly the tokens of recomputing without a cache."""

import pytest
import torch
from peft import get_peft_model

from difflora import DiffLoRAConfig
from difflora.testing import tiny_model

from .test_reference import randomize

FAMILIES = {
    "llama": {},
    "mistral": {"sliding_window": 8},  # generation runs past the window
    "qwen2": {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1},
    "qwen3": {},
}


def make(family, preset="difflora-32", **cfg):
    base = tiny_model(family, eos_token_id=None, **FAMILIES[family])
    model = get_peft_model(base, DiffLoRAConfig.from_preset(preset, r=8, lora_alpha=16, **cfg)).eval()
    randomize(model, std=0.3)
    return model


def prompts(left_pad=True):
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    if left_pad:
        ids[1, :3], mask[1, :3] = 0, 0
    return ids, mask


def generate(model, use_cache, **kw):
    ids, mask = prompts()
    torch.manual_seed(11)
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=14, use_cache=use_cache,
                              pad_token_id=0, **kw)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("mode", ["greedy", "sample", "beam"])
def test_dynamic_cache_equals_recompute(family, mode):
    model = make(family)
    kw = {"greedy": dict(do_sample=False), "sample": dict(do_sample=True, top_k=0, temperature=1.0),
          "beam": dict(do_sample=False, num_beams=3)}[mode]
    assert torch.equal(generate(model, True, **kw), generate(model, False, **kw))


@pytest.mark.parametrize("family", ["llama", "qwen3", "mistral"])
def test_static_cache_equals_recompute(family):
    model = make(family, "difflora-64")
    cached = generate(model, True, do_sample=False, cache_implementation="static")
    assert torch.equal(cached, generate(model, False, do_sample=False))


def test_left_padded_batch_equals_single_prompts():
    model = make("llama")
    ids, mask = prompts()
    with torch.no_grad():
        batch = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
        alone = model.generate(input_ids=ids[1:, 3:], attention_mask=mask[1:, 3:], max_new_tokens=10, do_sample=False,
                               pad_token_id=0)
    assert torch.equal(batch[1, 3:], alone[0])


def test_cache_holds_k2_beside_k1():
    model = make("llama")
    ids, mask = prompts()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
    layer0 = out.past_key_values.layers[0]
    head_dim = model.base_model.model.config.head_dim
    assert layer0.keys.shape[-1] == 2 * head_dim and layer0.values.shape[-1] == head_dim
