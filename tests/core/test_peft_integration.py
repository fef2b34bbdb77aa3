"""DiffLoRA through PEFT's own entry points: save/load, several adapters, disable, unload, merging,
gradient checkpointing, Trainer checkpoints."""

import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

import difflora
from difflora import DiffLoRAConfig
from difflora.testing import tiny_model

from .test_reference import randomize

IDS = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(1))


def logits(model, **kw):
    with torch.no_grad():
        return model(input_ids=IDS, **kw).logits


def test_print_trainable_parameters(capsys):
    model = get_peft_model(tiny_model("llama", layers=3), DiffLoRAConfig.from_preset("difflora-64-fixed", r=8))
    model.print_trainable_parameters()
    # per layer: Q2 8*(64+64) + K2 8*(64+32)
    assert "trainable params: 5,376" in capsys.readouterr().out


def test_save_load_roundtrip_is_bit_exact_and_saves_only_adapters(tmp_path):
    model = get_peft_model(tiny_model("qwen3"), DiffLoRAConfig.from_preset("difflora-32-gn", r=8, positive_r=4)).eval()
    randomize(model)
    ref = logits(model)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(t.numel() for t in saved.values()) == sum(p.numel() for n, p in model.named_parameters()
                                                         if n in trainable)
    assert not any("base_layer" in k or "proj.weight" in k for k in saved), \
        "frozen base weights leaked into the adapter"
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "DIFFLORA" and config["group_norm"] is True
    assert config["base_shape"]["model_type"] == "qwen3"
    loaded = PeftModel.from_pretrained(tiny_model("qwen3"), tmp_path).eval()
    assert torch.equal(logits(loaded), ref)
    lazy = PeftModel.from_pretrained(tiny_model("qwen3"), tmp_path, low_cpu_mem_usage=True).eval()
    assert torch.equal(logits(lazy), ref) and not any(p.is_meta for p in lazy.parameters())
    resumed = PeftModel.from_pretrained(tiny_model("qwen3"), tmp_path, is_trainable=True)
    assert {n for n, p in resumed.named_parameters() if p.requires_grad} == trainable


def test_several_adapters_switch_and_disable(tmp_path):
    base_logits = logits(tiny_model("llama"))
    model = get_peft_model(tiny_model("llama"), DiffLoRAConfig.from_preset("difflora-64-fixed", r=8)).eval()
    randomize(model, seed=1)
    a = logits(model)
    model.add_adapter("second", DiffLoRAConfig.from_preset("difflora-32", r=4, positive_r=4))
    model.set_adapter("second")
    randomize(model, seed=2)  # only the active adapter is trainable, so only it changes
    b = logits(model)
    assert not torch.allclose(a, b)
    model.set_adapter("default")
    assert torch.equal(logits(model), a)
    with model.disable_adapter():
        assert torch.equal(logits(model), base_logits)
    model.save_pretrained(tmp_path)  # saves both adapters (second in a sub-folder)
    reloaded = PeftModel.from_pretrained(tiny_model("llama"), tmp_path).eval()
    reloaded.load_adapter(tmp_path / "second", adapter_name="second")
    assert torch.equal(logits(reloaded), a)
    reloaded.set_adapter("second")
    assert torch.equal(logits(reloaded), b)


def test_unload_restores_the_base_model():
    base = tiny_model("mistral", sliding_window=8)
    ref = logits(base)
    model = get_peft_model(base, DiffLoRAConfig.from_preset("difflora-64", r=8))
    randomize(model)
    plain = model.unload()
    assert not difflora.difflora_layers(plain)
    assert torch.equal(logits(plain), ref)


@pytest.mark.parametrize("preset", ["difflora-32", "shared-diff"])
def test_merge_and_unload_refuses_and_positive_folding_is_exact(preset):
    """Folding Q1/K1's LoRA into W_Q/W_K keeps the output, also where the negative term is built on
    the pretrained W_Q/W_K (Shared DIFF), which must not see the folded update."""
    model = get_peft_model(tiny_model("llama"), DiffLoRAConfig.from_preset(preset, r=8, positive_r=8)).eval()
    randomize(model)
    ref = logits(model)
    with pytest.raises(difflora.MergeNotSupportedError, match="negative attention map"):
        model.merge_and_unload()
    with pytest.raises(difflora.MergeNotSupportedError):
        model.merge_adapter()
    difflora.merge_positive_adapters(model)
    assert torch.allclose(logits(model), ref, atol=1e-5)
    difflora.unmerge_positive_adapters(model)
    assert torch.allclose(logits(model), ref, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = get_peft_model(tiny_model("llama"), DiffLoRAConfig.from_preset("difflora-32", r=8, positive_r=4))
        randomize(model)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        model(input_ids=IDS, labels=IDS).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_bf16_base_trains_with_fp32_adapters():
    model = get_peft_model(tiny_model("qwen2").to(torch.bfloat16), DiffLoRAConfig.from_preset("difflora-64", r=8))
    model.train()
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 and p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


def test_trainer_checkpoint_holds_only_the_adapter(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model = get_peft_model(tiny_model("llama"), DiffLoRAConfig.from_preset("difflora-64-fixed", r=8))
    data = Dataset.from_dict({"input_ids": IDS.tolist() * 4, "labels": IDS.tolist() * 4})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, save_steps=2, per_device_train_batch_size=2,
                             report_to=[], logging_steps=1, use_cpu=True)
    Trainer(model=model, args=args, train_dataset=data).train()
    ckpt = tmp_path / "checkpoint-2"
    assert (ckpt / "adapter_model.safetensors").exists() and not (ckpt / "model.safetensors").exists()
    loaded = PeftModel.from_pretrained(tiny_model("llama"), ckpt).eval()
    model.eval()
    assert torch.equal(logits(loaded), logits(model))


def test_every_negative_adapter_gets_gradient_at_step_zero():
    model = get_peft_model(tiny_model("qwen3", layers=3), DiffLoRAConfig.from_preset("difflora-64", r=8))
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    for n, p in model.named_parameters():
        if "difflora_q2" in n or "difflora_k2" in n:
            assert p.grad is not None and p.grad.abs().max() > 0, f"{n} gets no gradient at step 0"


def test_delete_adapter_removes_every_trace():
    model = get_peft_model(tiny_model("llama"), DiffLoRAConfig.from_preset("difflora-32-gn", r=4, positive_r=4))
    model.add_adapter("other", DiffLoRAConfig.from_preset("difflora-64", r=4))
    model.set_adapter("other")
    model.delete_adapter("default")
    layer = difflora.difflora_layers(model)[0]
    for name in (*layer.adapter_layer_names, *layer.other_param_names):
        assert "default" not in getattr(layer, name), name
    assert torch.isfinite(logits(model)).all()


def test_attention_maps_for_chosen_layers_only():
    model = get_peft_model(tiny_model("llama", layers=3), DiffLoRAConfig(r=4)).eval()
    every = difflora.attention_maps(model, IDS)
    one = difflora.attention_maps(model, IDS, layers=[2])
    assert [m["layer"] for m in every] == [0, 1, 2] and [m["layer"] for m in one] == [2]
    assert torch.equal(one[0]["positive"], every[2]["positive"])
    with pytest.raises(ValueError, match="not transformed"):
        difflora.attention_maps(model, IDS, layers=[7])


def test_each_adapter_projection_draws_its_own_dropout_mask():
    """As in the authors' layer (and PEFT's LoRA per module): Q1, K1, Q2 and K2 each see their own
    dropout of the input in training, and none in eval."""
    model = get_peft_model(tiny_model("llama", layers=1),
                           DiffLoRAConfig.from_preset("difflora-32", r=4, positive_r=4, lora_dropout=0.5))
    layer = difflora.difflora_layers(model)[0]
    seen = {}
    for projection in ("q1", "k1", "q2", "k2"):
        lowrank = getattr(layer, f"difflora_{projection}")["default"]
        lowrank.A.register_forward_hook(lambda _m, args, _out, p=projection: seen.__setitem__(p, args[0].clone()))
    ids = torch.arange(3, 19)[None]
    model.train()
    model(input_ids=ids)
    masks = {p: (x == 0) for p, x in seen.items()}
    assert all(0.3 < m.float().mean() < 0.7 for m in masks.values())
    names = list(masks)
    assert all(not torch.equal(masks[a], masks[b]) for i, a in enumerate(names) for b in names[i + 1:])
    model.eval()
    model(input_ids=ids)
    assert all(not (x == 0).any() for x in seen.values())
