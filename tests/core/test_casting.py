"""Casting a wrapped model, and loading an adapter onto a half-precision base, for every preset.

PEFT's conventions: a whole-model cast (`model.to(dtype)`, `.half()`, `.bfloat16()`) casts the
adapters with everything else; loading an adapter onto a bf16/fp16 base keeps it in float32
(`autocast_adapter_dtype=True`, the default) or in the base's dtype (`autocast_adapter_dtype=False`).
Each case must run forward and cached generation, and stay within the dtype's rounding of the
float64 reference computed from the same (cast) weights.
"""

import pytest
import torch
from peft import PeftModel, get_peft_model

from difflora import DiffLoRAConfig
from difflora.testing import tiny_model
from difflora.tuner.config import PRESETS

from .test_reference import check_all_layers, padded_batch, randomize

TOLERANCE = {torch.bfloat16: 4e-2, torch.float16: 8e-3, torch.float32: 2e-5}
# name: (cast, dtype after it, tolerance against the reference). The round trip through bfloat16 also
# rounds the base's rotary frequencies (a transformers buffer the reference recomputes exactly), so it is
# held to bfloat16's tolerance although it computes in float32.
CASTS = {
    "to(bfloat16)": (lambda m: m.to(torch.bfloat16), torch.bfloat16, TOLERANCE[torch.bfloat16]),
    "to(float16)": (lambda m: m.to(torch.float16), torch.float16, TOLERANCE[torch.float16]),
    "to(bfloat16).to(float32)": (lambda m: m.to(torch.bfloat16).to(torch.float32), torch.float32,
                                 TOLERANCE[torch.bfloat16]),
    "half()": (lambda m: m.half(), torch.float16, TOLERANCE[torch.float16]),
    "bfloat16()": (lambda m: m.bfloat16(), torch.bfloat16, TOLERANCE[torch.bfloat16]),
}


def adapter_dtypes(model) -> set[torch.dtype]:
    return {p.dtype for n, p in model.named_parameters() if "difflora_" in n}


def runs_and_matches_reference(model, dtype, tol):
    ids, mask = padded_batch("left")
    logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert generated.shape == (ids.shape[0], ids.shape[1] + 3)
    check_all_layers(model, ids, mask, tol=tol)


@pytest.mark.parametrize("cast", list(CASTS))
@pytest.mark.parametrize("preset", list(PRESETS))
def test_cast_wrapped_model(preset, cast):
    model = get_peft_model(tiny_model("llama"), DiffLoRAConfig.from_preset(preset, r=8, lora_alpha=16)).eval()
    randomize(model)
    apply, dtype, tol = CASTS[cast]
    apply(model)
    assert adapter_dtypes(model) == {dtype}, "a whole-model cast casts the adapters too, as it does PEFT's LoRA"
    runs_and_matches_reference(model, dtype, tol)


@pytest.mark.parametrize("autocast", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_load_adapter_onto_half_precision_base(preset, dtype, autocast, tmp_path):
    model = get_peft_model(tiny_model("llama"), DiffLoRAConfig.from_preset(preset, r=8, lora_alpha=16))
    randomize(model)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_model("llama").to(dtype), tmp_path, autocast_adapter_dtype=autocast).eval()
    assert adapter_dtypes(loaded) == {torch.float32 if autocast else dtype}
    runs_and_matches_reference(loaded, dtype, TOLERANCE[dtype])
