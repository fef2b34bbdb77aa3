"""MethodSpec: parsed once from `method:`, one default, the PEFT config built once and handed out as
copies."""

import copy

import pytest
from peft import LoraConfig, get_peft_model

from difflora import DiffLoRAConfig
from difflora.errors import UserError
from difflora.testing import tiny_model
from difflora.train import load_train_config
from difflora.train.method_spec import LORA_8, MethodSpec


def test_a_config_without_a_method_gets_the_one_default():
    cfg = load_train_config({"model": "m", "output_dir": "o", "data": {"train": "t.jsonl"}})
    assert cfg.method == MethodSpec.default() == MethodSpec.parse(None)
    assert cfg.method.as_dict() == {"type": "difflora", "preset": "difflora-64-fixed"}
    assert cfg.to_dict()["method"] == {"type": "difflora", "preset": "difflora-64-fixed"}


def test_type_defaults_to_difflora_and_the_section_round_trips():
    spec = MethodSpec.parse({"preset": "difflora-32", "r": 8, "lora_alpha": 16})
    assert (spec.type, spec.preset) == ("difflora", "difflora-32")
    assert dict(spec.options) == {"r": 8, "lora_alpha": 16}
    assert MethodSpec.parse(spec.as_dict()) == spec
    assert spec.label == "difflora-32"
    assert MethodSpec.parse({"type": "lora"}).label == "lora-8"
    assert MethodSpec.parse({"type": "full"}).label == "full"


def test_peft_config_carries_the_preset_and_overrides_and_is_a_fresh_copy():
    spec = MethodSpec.parse({"preset": "difflora-32", "r": 8})
    config = spec.peft_config()
    assert isinstance(config, DiffLoRAConfig)
    assert (config.r, config.positive_r, config.lambda_mode) == (8, 32, "learned")
    config.r = 99  # get_peft_model writes into its config: the spec's own must not change
    assert spec.peft_config().r == 8 and spec.peft_config() is not spec.peft_config()
    lora = MethodSpec.parse({"type": "lora", "lora_dropout": 0.1}).peft_config()
    assert isinstance(lora, LoraConfig) and lora.r == LORA_8["r"] and lora.lora_dropout == 0.1
    assert set(lora.target_modules) == set(LORA_8["target_modules"])
    assert MethodSpec.parse({"type": "full"}).peft_config() is None


def test_the_config_is_built_once(monkeypatch):
    built = []
    original = DiffLoRAConfig.from_preset.__func__

    def counting(cls, name, **kw):
        built.append(name)
        return original(cls, name, **kw)

    monkeypatch.setattr(DiffLoRAConfig, "from_preset", classmethod(counting))
    spec = MethodSpec.parse({"preset": "difflora-64", "r": 4, "lora_alpha": 8})
    model = get_peft_model(tiny_model("llama", layers=1), spec.peft_config())
    copy.deepcopy(spec).peft_config()
    assert built == ["difflora-64"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0


def test_replace_checks_the_new_spec():
    spec = MethodSpec.parse({"type": "difflora", "preset": "difflora-64", "layers_to_transform": [0, 1]})
    narrowed = spec.replace(drop=("layers_to_transform",), r=4)
    assert narrowed.as_dict() == {"type": "difflora", "preset": "difflora-64", "r": 4}
    assert spec.options["layers_to_transform"] == [0, 1]  # the original is untouched
    with pytest.raises(UserError, match="invalid method settings"):
        spec.replace(r=-1)


@pytest.mark.parametrize("section,message", [
    ({"type": "prefix"}, r"cfg.yaml: method.type must be one of difflora, lora, full, got 'prefix'"),
    ({"preset": "difflora-128"}, r"cfg.yaml: unknown DiffLoRA preset 'difflora-128'"),
    ({"type": "lora", "preset": "lora-16"}, r"cfg.yaml: the only LoRA preset is 'lora-8'"),
    ({"type": "lora", "rank": 8}, r"cfg.yaml: unknown method key\(s\) \['rank'\] for method type 'lora'"),
    ({"type": "full", "r": 8}, r"unknown method key\(s\) \['r'\] for method type 'full'"),
    ({"lambda_mode": "sometimes"}, r"cfg.yaml: invalid method settings: .*lambda_mode"),
    ("difflora-64", r"cfg.yaml: 'method' must be a mapping"),
])
def test_bad_sections_are_one_line_errors_naming_the_key(section, message):
    with pytest.raises(UserError, match=message) as info:
        MethodSpec.parse(section, "cfg.yaml")
    assert "\n" not in str(info.value)


def test_a_run_saved_without_type_is_the_same_run():
    from difflora.train.runner import _comparable

    saved = {"model": "m", "method": {"preset": "difflora-64"}}
    now = {"model": "m", "method": {"type": "difflora", "preset": "difflora-64"}}
    assert _comparable(saved) == _comparable(now)
    assert _comparable({"model": "m", "method": {"preset": "difflora-32"}}) != _comparable(now)


def test_a_dict_config_may_carry_a_spec_and_still_take_method_overrides():
    spec = MethodSpec.parse({"preset": "difflora-64", "r": 8})
    base = {"model": "m", "output_dir": "o", "data": {"train": "t.jsonl"}, "method": spec}
    assert load_train_config(base).method == spec
    overridden = load_train_config(base, ["method.r=4", "method.lambda_mode=fixed"]).method
    assert overridden.as_dict() == {"type": "difflora", "preset": "difflora-64", "r": 4, "lambda_mode": "fixed"}
    assert spec.options["r"] == 8
