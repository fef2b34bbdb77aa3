"""The families beyond Llama/Mistral/Qwen: Gemma 2 (soft-capping, query_pre_attn_scalar, alternating
sliding windows), Gemma 3 (per-head q/k norms with (1 + w), local and global rotary), Phi-3 (one fused
qkv_proj), OLMo 2 (q/k norms over the whole projection) and the mixture-of-experts models whose
attention is the Llama/Qwen one. Each is checked against the independent float64 reference, cached
decoding against recompute, save/load, the function-preserving start and the parameter count."""

import pytest
import torch
from peft import PeftModel, get_peft_model

import difflora
from difflora import DiffLoRAConfig, compat
from difflora.testing import TINY_SHAPES, tiny_model

from .test_reference import check_all_layers, padded_batch, randomize

# The tiny shapes (difflora.testing.TINY_SHAPES) give every windowed family a window shorter than the
# 24-token batch and the generation, so the windows are exercised.
NEW_FAMILIES = [family for family in TINY_SHAPES if family not in ("llama", "mistral", "qwen2", "qwen3")]
PRESET_RANKS = {
    "difflora-64": dict(r=8, lora_alpha=16, positive_r=0),
    "difflora-32": dict(r=8, lora_alpha=16, positive_r=8, positive_alpha=16),
    "difflora-32-gn": dict(r=8, lora_alpha=16, positive_r=8, positive_alpha=16),
    "shared-diff": dict(r=8, lora_alpha=16, positive_r=8, positive_alpha=16),
}


def make(family, preset, **model_kw):
    base = tiny_model(family, **model_kw)
    model = get_peft_model(base, DiffLoRAConfig.from_preset(preset, **PRESET_RANKS[preset])).eval()
    randomize(model, std=0.3)
    return model


def test_every_family_is_wrapped_by_its_own_attention_class():
    for family in NEW_FAMILIES:
        model = get_peft_model(tiny_model(family), DiffLoRAConfig(r=4))
        layers = difflora.difflora_layers(model)
        assert len(layers) == 2
        assert all(type(layer.base_layer) is compat.attention_class(compat.family_of(family)) for layer in layers)


@pytest.mark.parametrize("family", NEW_FAMILIES)
@pytest.mark.parametrize("preset", list(PRESET_RANKS))
def test_layer_matches_float64_reference(family, preset):
    model = make(family, preset)
    for side in ("left", "right"):
        ids, mask = padded_batch(side)
        check_all_layers(model, ids, mask, tol=2e-5)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_cached_greedy_and_beam_decoding_equal_recompute(family):
    model = make(family, "difflora-32", eos_token_id=None)
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = 0, 0
    for kw in (dict(do_sample=False), dict(do_sample=False, num_beams=3)):
        with torch.no_grad():
            cached = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, use_cache=True,
                                    pad_token_id=0, **kw)
            recomputed = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, use_cache=False,
                                        pad_token_id=0, **kw)
        assert torch.equal(cached, recomputed), f"{family} {kw}"


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_shared_form_with_rescale_starts_at_the_base_model(family):
    base = tiny_model(family)
    ids = torch.randint(3, 128, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = base(input_ids=ids).logits
        model = get_peft_model(base, DiffLoRAConfig.from_preset("shared-diff", r=4, positive_r=4)).eval()
        assert (model(input_ids=ids).logits - expected).abs().max() < 1e-5


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_save_and_load_round_trip(family, tmp_path):
    model = make(family, "difflora-32-gn")
    ids, mask = padded_batch("left")
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_model(family), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask).logits, expected)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_parameter_count_follows_the_projection_widths(family):
    base = tiny_model(family)
    cfg = base.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    q_out, kv_out, hidden = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim, cfg.hidden_size
    model = get_peft_model(base, DiffLoRAConfig.from_preset("difflora-32", r=8, positive_r=4))
    per_layer = 8 * (2 * hidden + q_out + kv_out) + 4 * (2 * hidden + q_out + kv_out) + 4 * head_dim  # + lambda
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == cfg.num_hidden_layers * per_layer


def test_positive_folding_into_phi3s_fused_qkv_is_exact():
    model = make("phi3", "difflora-32")
    ids, mask = padded_batch("left")
    qkv_before = model.base_model.model.model.layers[0].self_attn.base_layer.qkv_proj.weight.clone()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        difflora.merge_positive_adapters(model)
        merged = model(input_ids=ids, attention_mask=mask).logits
    qkv = model.base_model.model.model.layers[0].self_attn.base_layer.qkv_proj.weight
    v_rows = slice(qkv.shape[0] - model.base_model.model.config.num_key_value_heads * 16, None)
    assert torch.equal(qkv[v_rows], qkv_before[v_rows]), "folding must leave W_V untouched"
    assert (merged - expected).abs().max() < 1e-5
    difflora.unmerge_positive_adapters(model)
    assert torch.allclose(model.base_model.model.model.layers[0].self_attn.base_layer.qkv_proj.weight, qkv_before,
                          atol=1e-6)


def test_an_unsupported_family_is_refused_naming_the_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(difflora.UnsupportedModelError, match="gemma2.*olmo2.*phi3.*qwen3_moe"):
        get_peft_model(GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50)), DiffLoRAConfig())
