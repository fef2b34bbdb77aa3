"""Shared keys (K2 = K1, one attention call) and the per-token lambda: the layer against
the float64 reference, cached decoding, the cache's size, the function-preserving start, lambda's
reporting and the parameter counts."""

import math

import pytest
import torch
from peft import PeftModel, get_peft_model

import difflora
from difflora import DiffLoRAConfig
from difflora.core.attention import split_head_pairs, stack_head_pairs
from difflora.testing import tiny_model

from .reference import capture_layer_io, reference_layer
from .test_generation import FAMILIES as DECODE_FAMILIES
from .test_generation import generate
from .test_reference import FAMILY_SHAPES, check_all_layers, padded_batch, randomize

SHARED_PRESETS = ("difflora-shared-kv", "shared-diff-kv")


def shared_model(family, preset="difflora-shared-kv", shapes=FAMILY_SHAPES, attn="sdpa", std=0.15, **cfg):
    base = tiny_model(family, attn_implementation=attn, **shapes[family])
    cfg = {"r": 8, "lora_alpha": 16, **({"positive_r": 8} if preset == "shared-diff-kv" else {}), **cfg}
    model = get_peft_model(base, DiffLoRAConfig.from_preset(preset, **cfg)).eval()
    randomize(model, std=std)
    return model


def test_head_pairs_land_in_their_kv_group():
    # 6 query heads over 2 kv heads (3 per group): pair (i, i) must sit in kv group i // 3 of the 12.
    first, second = torch.arange(6.0), 100 + torch.arange(6.0)
    stacked = stack_head_pairs(first[None, :, None], second[None, :, None], kv_heads=2)[0, :, 0]
    assert stacked.tolist() == [0, 1, 2, 100, 101, 102, 3, 4, 5, 103, 104, 105]
    for i in range(6):  # under GQA, stacked head j uses kv head j // 6
        assert stacked.tolist().index(i) // 6 == stacked.tolist().index(100 + i) // 6 == i // 3
    back = split_head_pairs(stacked[None, :, None], kv_heads=2)
    assert torch.equal(back[0][0, :, 0], first) and torch.equal(back[1][0, :, 0], second)


@pytest.mark.parametrize("family", list(FAMILY_SHAPES))
@pytest.mark.parametrize("preset", SHARED_PRESETS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_layer_matches_float64_reference(family, preset, side):
    model = shared_model(family, preset)
    ids, mask = padded_batch(side)
    check_all_layers(model, ids, mask, tol=2e-5)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("backend", ["eager", "sdpa", "flex_attention"])
def test_gqa_groups_and_backends(kv_heads, backend):
    # kv_heads = 1 (MQA) .. H (no GQA), with a sliding window shorter than the sequence.
    shapes = {"mistral": {"sliding_window": 16, "kv_heads": kv_heads}}
    model = shared_model("mistral", shapes=shapes, attn=backend)
    ids, mask = padded_batch("left")
    check_all_layers(model, ids, mask, tol=2e-5)


@pytest.mark.parametrize("combo", [dict(negative_keys="shared", lambda_mode="learned", lambda_init=0.3),
                                   dict(negative_keys="shared", lambda_mode="fixed", group_norm=True),
                                   dict(negative_keys="own", lambda_mode="token", lambda_init=0.4),
                                   dict(negative_keys="own", lambda_mode="token", group_norm=True)])
def test_keys_and_lambda_modes_combine(combo):
    base = tiny_model("qwen3", heads=8, kv_heads=2)
    model = get_peft_model(base, DiffLoRAConfig(r=8, lora_alpha=16, positive_r=4, **combo)).eval()
    randomize(model)
    for side in ("left", "right"):
        check_all_layers(model, *padded_batch(side), tol=2e-5)


@pytest.mark.parametrize("family", list(FAMILY_SHAPES))
def test_function_preserving_variant_starts_at_the_base_model(family):
    base = tiny_model(family, **FAMILY_SHAPES[family])
    ids, mask = padded_batch("left")
    with torch.no_grad():
        expected = base(input_ids=ids, attention_mask=mask).logits
        model = get_peft_model(base, DiffLoRAConfig.from_preset("shared-diff-kv", r=8, lora_alpha=16, positive_r=8))
        got = model(input_ids=ids, attention_mask=mask).logits
    rows = mask.bool()
    torch.testing.assert_close(got[rows], expected[rows], rtol=1e-5, atol=1e-5)
    assert (got - expected).abs().max() < 1e-5


# -- decoding --------------------------------------------------------------------------------------

def decode_model(family, preset="difflora-shared-kv", **cfg):
    return shared_model(family, preset, shapes={f: {"eos_token_id": None, **s} for f, s in DECODE_FAMILIES.items()},
                        std=0.3, **cfg)


def prompts(side):
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    if side != "none":
        pad = slice(0, 3) if side == "left" else slice(6, 9)
        ids[1, pad], mask[1, pad] = 0, 0
    return ids, mask


@pytest.mark.parametrize("family", list(DECODE_FAMILIES))
@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_dynamic_cache_equals_recompute(family, mode):
    model = decode_model(family)
    kw = {"greedy": dict(do_sample=False), "beam": dict(do_sample=False, num_beams=3)}[mode]
    assert torch.equal(generate(model, True, **kw), generate(model, False, **kw))


@pytest.mark.parametrize("family", ["llama", "qwen3", "mistral"])
def test_static_cache_equals_recompute(family):
    model = decode_model(family, "shared-diff-kv")
    cached = generate(model, True, do_sample=False, cache_implementation="static")
    assert torch.equal(cached, generate(model, False, do_sample=False))


@pytest.mark.parametrize("family", list(DECODE_FAMILIES))
@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_steps_match_the_reference(family, side):
    """Prefill, then one token at a time through the cache: every step's layer output equals the
    float64 reference of the whole sequence at that position (mistral/qwen2 run past their window)."""
    check_cached_steps(decode_model(family), side)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize(("family", "side"), [("mistral", "left"), ("llama", "none")])
def test_decoding_steps_pack_query_heads_as_rows(family, side, backend, kv_heads, monkeypatch):
    """A one-token step takes the packed call (2H heads as rows of their kv head) on sdpa and eager,
    from MQA to no GQA, past a sliding window, with padding and with no mask at all (where sdpa
    would otherwise infer a causal triangle over the rows), and still equals the float64 reference."""
    import difflora.core.attention as attention

    packed_calls = []
    original = attention._single_query_rows
    monkeypatch.setattr(attention, "_single_query_rows", lambda *a, **k: packed_calls.append(1) or original(*a, **k))
    shapes = {family: {**DECODE_FAMILIES[family], "eos_token_id": None, "kv_heads": kv_heads}}
    model = shared_model(family, shapes=shapes, attn=backend, std=0.3)
    check_cached_steps(model, side)
    assert packed_calls, "no decoding step took the packed call"


def check_cached_steps(model, side):
    ids, mask = prompts(side)
    steps = torch.randint(3, 128, (2, 6), generator=torch.Generator().manual_seed(8))
    full_ids, full_mask = torch.cat([ids, steps], 1), torch.cat([mask, torch.ones_like(steps)], 1)
    layer = difflora.difflora_layers(model)[-1]
    x_full, _ = capture_layer_io(model, layer, input_ids=full_ids, attention_mask=full_mask)
    ref = reference_layer(layer, x_full, full_mask)
    with torch.no_grad():
        cache = model(input_ids=ids, attention_mask=mask, use_cache=True).past_key_values
    for i in range(steps.shape[1]):
        t = ids.shape[1] + i
        _, y = capture_layer_io(model, layer, input_ids=steps[:, i:i + 1], attention_mask=full_mask[:, :t + 1],
                                past_key_values=cache, use_cache=True)
        err = (y[:, 0].double() - ref[:, t]).abs().max().item()
        assert err <= 2e-5 * max(ref.abs().max().item(), 1.0), f"step {i}: max abs err {err:.2e}"


def cache_bytes(model, ids) -> int:
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_size_after_a_prompt(dtype):
    ids = torch.randint(3, 128, (2, 40))

    def size(preset=None):
        base = tiny_model("llama", heads=8, kv_heads=2).to(dtype)
        if preset is None:
            return cache_bytes(base, ids)
        return cache_bytes(get_peft_model(base, DiffLoRAConfig.from_preset(preset, r=8, lora_alpha=16)), ids)

    base = size()
    assert base == 2 * 2 * 2 * 40 * 2 * 8 * torch.finfo(dtype).bits // 8  # layers, K+V, batch, T, kv heads, head_dim
    assert size("difflora-shared-kv") == size("shared-diff-kv") == base
    for own_keys in ("difflora-64", "difflora-32", "shared-diff"):
        assert size(own_keys) * 2 == base * 3, own_keys


# -- the per-token lambda ----------------------------------------------------------------------------

def test_token_lambda_starts_at_lambda_init_and_learns():
    model = get_peft_model(tiny_model("llama", layers=3), DiffLoRAConfig.from_preset("difflora-shared-kv", r=4))
    ids = torch.randint(3, 128, (2, 10))
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    spreads = difflora.lambdas(model)
    for layer, spread in zip(difflora.difflora_layers(model), spreads):
        expected = 0.8 - 0.6 * math.exp(-0.3 * layer.layer_idx)
        assert isinstance(spread, float) and spread == pytest.approx(expected, abs=1e-6) and spread.std < 1e-6
        proj = layer.difflora_lambda["default"].proj
        assert proj.weight.dtype == torch.float32 and proj.weight.grad.abs().sum() > 0, "w gets gradient at init"
        assert proj.bias.grad.abs().sum() > 0


def test_lambdas_report_mean_and_spread_over_the_given_batch():
    model = shared_model("llama")
    ids, mask = padded_batch("right")
    spreads = difflora.lambdas(model, ids, mask)
    layer = difflora.difflora_layers(model)[0]
    x, _ = capture_layer_io(model, layer, input_ids=ids, attention_mask=mask)
    proj = layer.difflora_lambda["default"].proj
    expected = torch.sigmoid(x.double() @ proj.weight.double().T + proj.bias.double())[mask.bool()]  # tokens x H
    assert spreads[0] == pytest.approx(expected.mean().item(), abs=1e-6)
    assert spreads[0].std == pytest.approx(expected.std(correction=0).item(), abs=1e-6)
    assert spreads[0].std > 1e-3 and spreads[0].tokens == int(mask.sum())
    assert spreads[0].min == pytest.approx(expected.min().item(), abs=1e-6)
    assert list(spreads[0].per_head) == pytest.approx(expected.mean(0).tolist(), abs=1e-6)
    assert "LambdaSpread(mean=" in repr(spreads[0])
    # without a batch: the last forward, every position
    with torch.no_grad():
        model(input_ids=ids[:1])
    assert difflora.lambdas(model)[0].tokens == ids.shape[1]


def test_lambdas_needs_a_batch_before_any_forward():
    model = get_peft_model(tiny_model("llama"), DiffLoRAConfig.from_preset("difflora-shared-kv", r=4))
    with pytest.raises(ValueError, match=r"has run no forward yet: pass a batch"):
        difflora.lambdas(model)


def test_attention_maps_give_the_per_token_lambda():
    model = shared_model("llama")
    ids, mask = padded_batch("left")
    maps = difflora.attention_maps(model, ids, mask)
    for entry in maps:
        layer = difflora.difflora_layers(model)[entry["layer"]]
        x, y = capture_layer_io(model, layer, input_ids=ids, attention_mask=mask)
        assert entry["lambda"].shape == (3, 24, 4)
        assert entry["positive"].shape == entry["negative"].shape == (3, 4, 24, 24)
        # the net map rebuilt from the returned pieces gives the layer's attention output
        net = entry["positive"] - entry["lambda"].transpose(1, 2)[..., None] * entry["negative"]
        base = layer.base_layer
        v = base.v_proj(x).view(3, 24, 2, -1).transpose(1, 2).repeat_interleave(2, dim=1)
        out = base.o_proj((net @ v).transpose(1, 2).reshape(3, 24, -1))
        assert (out - y)[mask.bool()].abs().max() < 1e-5


def test_token_lambda_is_saved_and_loaded(tmp_path):
    model = shared_model("qwen2", "shared-diff-kv")
    ids, mask = padded_batch("left")
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("difflora_lambda" in k and k.endswith("proj.weight") for k in keys)
    assert not any("difflora_k2" in k for k in keys), "shared keys save no K2 adapter"
    fresh = PeftModel.from_pretrained(tiny_model("qwen2", **FAMILY_SHAPES["qwen2"]), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids, attention_mask=mask).logits, expected)


# -- configuration and parameter counts -------------------------------------------------------------

@pytest.mark.parametrize("fields,message", [
    (dict(negative_keys="mine"), "negative_keys must be one of"),
    (dict(lambda_mode="token", lambda_init=1.0), r"must lie in \(0, 1\)"),
    (dict(lambda_mode="token", lambda_init=0.0), r"must lie in \(0, 1\)"),
    (dict(lambda_mode="token", lambda_init=-0.5, rescale=True), r"must lie in \(0, 1\)"),
    (dict(lambda_mode="per-token"), "lambda_mode must be one of"),
])
def test_bad_combinations_are_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message) as err:
        DiffLoRAConfig(**fields)
    assert "\n" not in str(err.value)


# Llama-3.2-1B: hidden 2048, 16 layers, 32 query heads, 8 kv heads, head_dim 64.
LLAMA_1B_PER_LAYER = {
    "difflora-64": 64 * (2048 + 2048) + 64 * (2048 + 512) + 4 * 64,  # Q2 + K2 + learned lambda = 426,240
    "difflora-shared-kv": 64 * (2048 + 2048) + 32 * 2048 + 32,  # Q2 + token lambda (w, b) = 327,712
    "shared-diff-kv": 32 * (2048 + 2048) + 32 * (2048 + 512) + 32 * (2048 + 2048) + 32 * 2049,  # 409,632
}


@pytest.mark.parametrize("preset", list(LLAMA_1B_PER_LAYER))
def test_parameter_counts_on_the_llama_1b_shape(preset):
    import transformers

    config = transformers.LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                      num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256)
    with torch.device("meta"):
        base = transformers.LlamaForCausalLM(config)
    model = get_peft_model(base, DiffLoRAConfig.from_preset(preset))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 16 * LLAMA_1B_PER_LAYER[preset]
