"""Adapters for the evaluation tests: a DiffLoRA and a LoRA adapter on the tiny base, saved to disk."""

import pytest


@pytest.fixture(scope="session")
def adapters(tiny_base_dir, tmp_path_factory):
    """{"base", "difflora", "lora"}: --model specs; plus "difflora_dir", "lora_dir"."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from difflora import DiffLoRAConfig

    root = tmp_path_factory.mktemp("adapters")
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    config = DiffLoRAConfig.from_preset("difflora-32", r=8, positive_r=8)
    get_peft_model(base, config).save_pretrained(root / "difflora")
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(root / "lora")
    return {"base": str(tiny_base_dir), "difflora": f"{tiny_base_dir}::{root / 'difflora'}",
            "lora": f"{tiny_base_dir}::{root / 'lora'}", "difflora_dir": str(root / "difflora"),
            "lora_dir": str(root / "lora")}


@pytest.fixture(scope="session")
def loaded(adapters):
    """{label: (model, tokenizer)} for the Python API tests."""
    from difflora.loading import load_model

    return {name: load_model(adapters[name]) for name in ("base", "lora", "difflora")}
