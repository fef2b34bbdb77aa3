"""Bad input gets a clear error naming the problem, and never leaves a half-converted model."""

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import PeftModel, get_peft_model

import difflora
from difflora import DiffLoRAConfig
from difflora.testing import tiny_model


@pytest.mark.parametrize("kwargs,match", [
    (dict(r=0), "r must be a positive integer"),
    (dict(r=-4), "r must be a positive integer"),
    (dict(r=8.5), "r must be a positive integer"),
    (dict(positive_r=-1), "positive_r"),
    (dict(lora_alpha=0), "lora_alpha"),
    (dict(lora_dropout=1.0), "lora_dropout"),
    (dict(negative_base="both"), "negative_base must be one of"),
    (dict(lambda_mode="adaptive"), "lambda_mode must be one of"),
    (dict(lambda_init=float("nan")), "lambda_init must be a finite number"),
    (dict(rescale=True, group_norm=True), "cannot be combined"),
    (dict(rescale=True, lambda_init=1.0), "lambda_init = 1"),
    (dict(layers_to_transform=[0, -1]), "layers_to_transform"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffLoRAConfig(**kwargs)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="difflora-64, difflora-64-fixed, difflora-32, difflora-32-gn"):
        DiffLoRAConfig.from_preset("difflora-128")


def test_unsupported_architecture_names_model_type_and_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(difflora.UnsupportedModelError, match=r"model type 'gpt2'.*llama, mistral.*qwen2.*qwen3"):
        get_peft_model(GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50)), DiffLoRAConfig())


def test_layer_index_out_of_range():
    with pytest.raises(ValueError, match="names a layer the model does not have"):
        get_peft_model(tiny_model("llama", layers=2), DiffLoRAConfig(layers_to_transform=[5]))


def _assert_untouched(base, ref):
    assert not difflora.difflora_layers(base), "the base model was left with injected DiffLoRA layers"
    with torch.no_grad():
        assert torch.equal(base(input_ids=torch.arange(3, 11)[None]).logits, ref)


def _logits(model):
    with torch.no_grad():
        return model(input_ids=torch.arange(3, 11)[None]).logits


def test_adapter_for_another_base_shape(tmp_path):
    get_peft_model(tiny_model("llama", hidden_size=64), DiffLoRAConfig(r=4)).save_pretrained(tmp_path)
    other = tiny_model("llama", hidden_size=96, heads=4, kv_heads=2)
    ref = _logits(other)
    with pytest.raises(ValueError, match=r"made for another base model: hidden_size adapter=64 base=96"):
        PeftModel.from_pretrained(other, tmp_path)
    _assert_untouched(other, ref)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_adapter_file(tmp_path, damage):
    get_peft_model(tiny_model("llama"), DiffLoRAConfig(r=4)).save_pretrained(tmp_path)
    f = tmp_path / "adapter_model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x10\x00" + os.urandom(200))
    base = tiny_model("llama")
    ref = _logits(base)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        PeftModel.from_pretrained(base, tmp_path)
    _assert_untouched(base, ref)


def _load_in_fresh_process(tmp_path, env):
    get_peft_model(tiny_model("llama"), DiffLoRAConfig(r=4)).save_pretrained(tmp_path)
    tiny_model("llama").save_pretrained(tmp_path / "base")
    code = (
        "from transformers import AutoModelForCausalLM\n"
        "from peft import PeftModel\n"
        f"base = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'base')!r})\n"
        f"m = PeftModel.from_pretrained(base, {str(tmp_path)!r})\n"
        "print(type(m.base_model).__name__)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_loading_without_importing_difflora_says_what_to_do(tmp_path):
    proc = _load_in_fresh_process(tmp_path, {"DIFFLORA_NO_AUTOLOAD": "1"})
    assert proc.returncode != 0 and "DIFFLORA" in proc.stderr
    assert "import difflora" in (tmp_path / "README.md").read_text(), "the model card says how to load it"
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "DIFFLORA"


def test_installed_package_registers_itself_when_peft_is_imported(tmp_path):
    import site

    if not any(os.path.exists(os.path.join(d, "difflora-autoload.pth")) for d in site.getsitepackages()):
        pytest.skip("difflora-autoload.pth is installed by `pip install .` (not by an editable install)")
    proc = _load_in_fresh_process(tmp_path, {"DIFFLORA_NO_AUTOLOAD": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("DiffLoRAModel")
    # transformers probes with find_spec("peft") before importing it; that must not use the hook up
    probe = ("import importlib.util, sys; importlib.util.find_spec('peft'); import peft; "
             "print('difflora' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "DIFFLORA_NO_AUTOLOAD": ""})
    assert out.stdout.strip() == "True", out.stderr[-2000:]
