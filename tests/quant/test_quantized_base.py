"""DiffLoRA on bitsandbytes 4-bit and 8-bit bases (QLoRA), built from config and quantized at load.

The reference for every gradient is the same model holding the dequantized weights in float32
(bitsandbytes.functional dequantizes each quantized weight): the adapters see the same function, so
their gradients must agree. Tolerance: max |g_quant - g_ref| <= 1e-5 * (largest |g_ref| entry over all
adapter tensors), for every adapter tensor. Measured: the 4-bit path is bit-exact; the 8-bit kernel
multiplies its row scales in another order than int8_vectorwise_dequant, ~4e-7 of each tensor's scale.
An inference pass (eval mode, no gradients, generate) must leave the gradients bit-identical.
"""

from __future__ import annotations

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")
from bitsandbytes import functional as F  # noqa: E402
from peft import PeftModel, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import difflora  # noqa: E402, F401
from difflora import DiffLoRAConfig  # noqa: E402
from difflora.errors import UserError  # noqa: E402
from difflora.loading import load_base, load_model  # noqa: E402
from difflora.quantization import parse_quantization, protect_quantized_base  # noqa: E402

REL_TOL = 1e-5
SETTINGS = {
    "nf4-double-quant": "nf4",
    "fp4-double-quant": "fp4",
    "nf4": {"bits": 4, "quant_type": "nf4", "double_quant": False},
    "int8": "int8",
}


def adapter_config():
    return DiffLoRAConfig.from_preset("difflora-32", r=4, lora_alpha=8, positive_r=4, positive_alpha=8,
                                      lora_dropout=0.0)


def quantized(path, setting):
    model, _ = load_base(str(path), dtype=torch.float32, quantization=setting)
    return model


def dequantized_copy(qmodel, path):
    """A float32 model of the same checkpoint whose every quantized weight is replaced by its dequantization."""
    ref = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    weights = {}
    for name, module in qmodel.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weights[name + ".weight"] = F.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
        elif isinstance(module, bnb.nn.Linear8bitLt):
            weights[name + ".weight"] = F.int8_vectorwise_dequant(module.weight.data, module.weight.SCB).float()
    assert len(weights) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    result = ref.load_state_dict(weights, strict=False)
    assert not result.unexpected_keys
    return ref


def wrapped_pair(path, setting):
    """(DiffLoRA on the quantized base, DiffLoRA on its dequantized float32 copy), same adapter weights."""
    qmodel = quantized(path, setting)
    reference = dequantized_copy(qmodel, path)
    torch.manual_seed(1)
    peft_q = get_peft_model(qmodel, adapter_config())
    peft_r = get_peft_model(reference, adapter_config())
    adapters = {k: v for k, v in peft_q.state_dict().items() if "difflora_" in k}
    assert adapters and not peft_r.load_state_dict(adapters, strict=False).unexpected_keys
    return peft_q, peft_r


def adapter_grads(model, ids):
    model.train()
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def assert_same_grads(got, want):
    assert set(got) == set(want) and len(want) == 2 * 12  # per layer: q1 k1 q2 k2 (A, B) + 4 lambda vectors
    scale = max(ref.abs().max().item() for ref in want.values())
    assert scale > 0
    for name, ref in want.items():
        err = (got[name] - ref).abs().max().item()
        assert err <= REL_TOL * scale, f"{name}: max abs error {err:.3g}, gradient scale {scale:.3g}"


def inference_pass(model, ids):
    """What evaluation and generation do: eval mode, no gradients (the 4-bit repack trap)."""
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
        model.generate(input_ids=ids[:1, :4], attention_mask=torch.ones(1, 4, dtype=torch.long),
                       max_new_tokens=4, do_sample=False)


def repacked(model) -> bool:
    return any(getattr(m.weight.quant_state, "packing_format_for_cpu", False)
               for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny Llama checkpoint whose every linear layer bitsandbytes can repack for CPU inference
    (widths multiples of 64), so that the trap shows as wrong gradients, not as a crash."""
    from difflora.testing import tiny_model

    path = tmp_path_factory.mktemp("quant-base")
    model = tiny_model("llama", vocab_size=len(tiny_tokenizer), hidden_size=64, layers=2, intermediate_size=128)
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def ids():
    return torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(SETTINGS))
def test_adapter_gradients_equal_the_dequantized_base(name, base_dir, ids):
    peft_q, peft_r = wrapped_pair(base_dir, SETTINGS[name])
    trainable = [p for p in peft_q.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    opt_q = torch.optim.AdamW([p for p in peft_q.parameters() if p.requires_grad], lr=1e-2)
    opt_r = torch.optim.AdamW([p for p in peft_r.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # cold, then after an optimizer step
        assert_same_grads(adapter_grads(peft_q, ids), adapter_grads(peft_r, ids))
        opt_q.step()
        opt_r.step()
    before = adapter_grads(peft_q, ids)
    inference_pass(peft_q, ids)
    inference_pass(peft_r, ids)
    after = adapter_grads(peft_q, ids)
    assert set(after) == set(before) and all(torch.equal(after[n], before[n]) for n in before)
    assert_same_grads(after, adapter_grads(peft_r, ids))
    assert not repacked(peft_q)


def test_protect_switches_off_the_cpu_repack(base_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), device_map="cpu", dtype=torch.float32,
                                                 quantization_config=_bnb_config("nf4"))
    protect_quantized_base(model)
    assert all(not m.support_avx512bf16_for_cpu for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    inference_pass(model, ids)
    assert not repacked(model)


def test_an_already_repacked_base_is_refused(base_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), device_map="cpu", dtype=torch.float32,
                                                 quantization_config=_bnb_config("nf4"))
    q_proj = model.model.layers[1].self_attn.q_proj
    with torch.no_grad():  # unprotected, eval mode: bitsandbytes repacks on CPUs with AVX512-BF16
        q_proj(torch.randn(1, 3, q_proj.in_features))
    if not repacked(model):
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here")
    with pytest.raises(UserError, match="reload the model and wrap it") as info:
        get_peft_model(model, adapter_config())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("double_quant", [True, False])
def test_the_cpu_repack_cannot_be_undone_exactly(double_quant):
    """Why a repacked base is refused rather than restored: bitsandbytes' own inverse of the repack
    (0.50.2) does not give back the weights (block scales rounded to bfloat16, or left repacked)."""
    torch.manual_seed(0)
    weight = torch.randn(64, 128)
    packed, state = F.quantize_4bit(weight, quant_type="nf4", compress_statistics=double_quant)
    want = F.dequantize_4bit(packed, state).clone()
    repacked_weight, repacked_state = F._convert_weight_packed_for_cpu(packed.clone(), state)
    restored, restored_state = F._convert_weight_packed_for_cpu_inverse(repacked_weight, repacked_state)
    got = F.dequantize_4bit(restored, restored_state)
    assert (got - want).abs().max() > 1e-4 * want.abs().max()  # measured: 1.9e-3 (double quant), 0.53 (none)


def test_save_and_load_round_trip_on_a_4bit_base(base_dir, tmp_path, ids):
    peft_q, _ = wrapped_pair(base_dir, "nf4")
    optimizer = torch.optim.AdamW([p for p in peft_q.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        adapter_grads(peft_q, ids)
        optimizer.step()
    peft_q.eval()
    with torch.no_grad():
        want = peft_q(input_ids=ids).logits
    peft_q.save_pretrained(tmp_path / "adapter")
    loaded, _ = load_model(f"{base_dir}::{tmp_path / 'adapter'}", dtype=torch.float32, quantization="nf4")
    assert isinstance(loaded, PeftModel) and loaded.base_model.model.is_loaded_in_4bit
    with torch.no_grad():
        got = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    prompt = ids[:1, :4]
    generated = loaded.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                do_sample=False)
    assert generated.shape == (1, 10)
    # the generated tokens are the greedy choices of the model itself (cached decoding == recompute)
    with torch.no_grad():
        logits = loaded(input_ids=generated).logits
    torch.testing.assert_close(logits[0, 3:-1].argmax(-1), generated[0, 4:])


def test_kbit_training_preparation_keeps_difflora_adapters_in_float32(base_dir, ids):
    from difflora.quantization import prepare_for_training

    model, _ = load_base(str(base_dir), dtype=torch.bfloat16, quantization="nf4")
    assert model.model.norm.weight.dtype == torch.bfloat16
    model = get_peft_model(prepare_for_training(model), adapter_config())
    assert model.base_model.model.model.norm.weight.dtype == torch.float32  # QLoRA casts norms/embeddings
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("difflora_" in n and p.dtype == torch.float32 for n, p in trainable.items())
    grads = adapter_grads(model, ids)
    assert set(grads) == set(trainable) and all(torch.isfinite(g).all() for g in grads.values())
    # every adapter tensor learns but the positive A factors, whose B factors start at zero (LoRA init)
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "1.default.A." not in n)


def _bnb_config(name):
    from difflora.quantization import bitsandbytes_config

    return bitsandbytes_config(parse_quantization(name), torch.float32)


def test_folding_positive_adapters_into_a_4bit_base_is_refused_in_one_line(base_dir, ids):
    peft_q = get_peft_model(quantized(base_dir, "nf4"), adapter_config()).eval()
    with torch.no_grad():
        before = peft_q(input_ids=ids).logits
    with pytest.raises(ValueError, match="cannot fold the positive adapters into a quantized") as err:
        difflora.merge_positive_adapters(peft_q)
    assert "\n" not in str(err.value)
    with torch.no_grad():
        assert torch.equal(peft_q(input_ids=ids).logits, before), "a refused fold changes nothing"


def test_eval_command_loads_the_base_quantized(base_dir, tmp_path):
    from difflora.cli.main import main

    out = tmp_path / "eval"
    assert main(["eval", "nih", "--model", f"q={base_dir}", "--quantization", "nf4", "--tasks", "mk2",
                 "--lengths", "256", "--samples", "2", "--out", str(out), "--quiet"]) == 0
    assert any(out.iterdir())
    assert main(["eval", "nih", "--model", f"q={base_dir}", "--quantization", "nf5", "--out", str(out)]) != 0
