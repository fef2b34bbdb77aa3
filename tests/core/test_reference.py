"""The layer against the independent float64 reference, across families, presets, padding sides,
dtypes and attention backends."""

import pytest
import torch
from peft import get_peft_model

import difflora
from difflora import DiffLoRAConfig
from difflora.testing import tiny_model

from .reference import capture_layer_io, reference_layer

FAMILY_SHAPES = {
    "llama": {},
    "mistral": {"sliding_window": 16},  # T=24 > window: the window is exercised
    "qwen2": {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1},
    "qwen3": {},
}
T = 24


def randomize(model, std=0.15, seed=7):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if p.dim() == 1 and p.numel() > 16 else 0.0))


def padded_batch(side):
    ids = torch.randint(3, 128, (3, T), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(3, T, dtype=torch.long)
    if side == "left":
        mask[1, :7], mask[2, :2] = 0, 0
    elif side == "right":
        mask[1, -7:], mask[2, -2:] = 0, 0
    return ids, mask


def check_all_layers(model, ids, mask, tol):
    layers = difflora.difflora_layers(model)
    assert layers
    for layer in layers:
        x, y = capture_layer_io(model, layer, input_ids=ids, attention_mask=mask)
        ref = reference_layer(layer, x, mask)
        rows = mask.bool() if mask is not None else torch.ones(ids.shape, dtype=torch.bool)
        err = (y.double() - ref).abs()[rows].max().item()
        scale = ref.abs()[rows].max().item()
        assert err <= tol * max(scale, 1.0), f"layer {layer.layer_idx}: max abs err {err:.2e} (scale {scale:.2e})"


@pytest.mark.parametrize("family", list(FAMILY_SHAPES))
@pytest.mark.parametrize("preset", ["difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn", "shared-diff"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_layer_matches_float64_reference(family, preset, side):
    base = tiny_model(family, **FAMILY_SHAPES[family])
    positive_r = 0 if preset.startswith("difflora-64") else 8
    model = get_peft_model(base, DiffLoRAConfig.from_preset(preset, r=8, lora_alpha=16, positive_r=positive_r)).eval()
    randomize(model)
    ids, mask = padded_batch(side)
    check_all_layers(model, ids, mask, tol=2e-5)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "flex_attention"])
def test_backends_agree_with_reference(backend):
    model = get_peft_model(tiny_model("llama", attn_implementation=backend),
                           DiffLoRAConfig(r=8, lora_alpha=16, positive_r=4)).eval()
    randomize(model)
    ids, mask = padded_batch("left")
    check_all_layers(model, ids, mask, tol=2e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 4e-2), (torch.float16, 8e-3)])
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_half_precision_base_with_fp32_adapters(dtype, tol, family):
    base = tiny_model(family).to(dtype)
    model = get_peft_model(base, DiffLoRAConfig.from_preset("difflora-32", r=8, lora_alpha=16, positive_r=8)).eval()
    randomize(model)
    adapter_dtypes = {p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert adapter_dtypes == {torch.float32}, "PEFT keeps adapters in fp32 on a half-precision base"
    ids, mask = padded_batch("left")
    out = model(input_ids=ids, attention_mask=mask).logits
    assert out.dtype == dtype and torch.isfinite(out).all()
    check_all_layers(model, ids, mask, tol=tol)


def test_layers_to_transform_and_fixed_schedule():
    model = get_peft_model(tiny_model("llama", layers=4),
                           DiffLoRAConfig(r=4, lambda_mode="fixed", lambda_init=None, layers_to_transform=[1, 3]))
    layers = difflora.difflora_layers(model)
    assert [m.layer_idx for m in layers] == [1, 3]
    import math
    assert difflora.lambdas(model) == pytest.approx([0.8 - 0.6 * math.exp(-0.3 * i) for i in (1, 3)])
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lambda" in n)


def test_learned_lambda_is_float32_and_trainable():
    model = get_peft_model(tiny_model("llama").to(torch.bfloat16),
                           DiffLoRAConfig(r=4, lambda_mode="learned", lambda_init=0.5))
    params = {n: p for n, p in model.named_parameters() if "lambda_q1" in n}
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params.values())
    assert all(abs(x - 0.5) < 0.3 for x in difflora.lambdas(model))
