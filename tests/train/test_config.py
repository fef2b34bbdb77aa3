"""Config loading and --set overrides: every unknown key or value is a one-line error."""

import os

import pytest

from difflora.errors import UserError
from difflora.train import load_train_config

BASE = {"model": "m", "output_dir": "o", "data": {"train": "t.jsonl"}}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\noutput_dir: o\nmethod: {type: difflora, preset: difflora-32}\ndata: {train: t.jsonl}\n"
                    "training: {learning_rate: 1.0e-4}\n")
    cfg = load_train_config(path, ["training.learning_rate=3e-4", "method.r=16", "data.packing=true"])
    assert cfg.training["learning_rate"] == 3e-4 and cfg.method.options["r"] == 16 and cfg.data.packing is True


@pytest.mark.parametrize("raw,match", [
    ({**BASE, "optimizer": "adam"}, r"unknown config key\(s\) \['optimizer'\]"),
    ({**BASE, "method": {"type": "difflora", "preset": "difflora-128"}}, "unknown DiffLoRA preset 'difflora-128'"),
    ({**BASE, "method": {"type": "difflora", "rank": 8}}, r"unknown method key\(s\) \['rank'\]"),
    ({**BASE, "method": {"type": "prefix"}}, "method.type must be one of"),
    ({**BASE, "training": {"learning_rat": 1}}, r"unknown training key\(s\) \['learning_rat'\]"),
    ({**BASE, "data": {"trian": "x"}}, r"unknown data key\(s\) \['trian'\]"),
    ({"output_dir": "o"}, "'model' is required"),
    ({**BASE, "method": {"type": "difflora", "preset": "difflora-64", "r": -1}},
     "invalid method settings: .*r must be"),
    ({**BASE, "method": {"type": "difflora", "lambda_mode": "sometimes"}}, "lambda_mode must be one of"),
    ({**BASE, "method": {"type": "lora", "lora_alphaa": 8}}, r"unknown method key\(s\) \['lora_alphaa'\]"),
    ({**BASE, "data": {}}, "data.train is required"),
    ({**BASE, "method": "difflora-64"}, "'method' must be a mapping"),
    ({**BASE, "data": {"train": "t.jsonl", "max_length": "long"}}, "data.max_length must be an integer"),
    ({**BASE, "data": {"train": "t.jsonl", "eval_fraction": 1.5}}, r"data.eval_fraction must be in \[0, 1\)"),
])
def test_bad_config(raw, match):
    with pytest.raises(UserError, match=match):
        load_train_config(raw)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_train_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_train_config(bad)
    with pytest.raises(UserError, match="--set expects key=value"):
        load_train_config(BASE, ["training.learning_rate"])


def test_numbers_stay_strings_outside_method_and_training():
    cfg = load_train_config({"model": "1e5", "output_dir": "2024", "data": {"train": "1.5"},
                             "training": {"learning_rate": "1e-4"}})
    assert (cfg.model, cfg.output_dir, cfg.data.train) == ("1e5", "2024", "1.5")
    assert cfg.training["learning_rate"] == 1e-4


FIGURE_1_ROWS = {"lora-8", "difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn"}


def test_paper_configs_hold_the_paper_recipe():
    import glob
    import os

    paths = sorted(glob.glob(os.path.join(ROOT, "configs/paper/*.yaml")))
    assert {os.path.basename(p)[:-5] for p in paths} == FIGURE_1_ROWS
    for path in paths:
        cfg = load_train_config(path)
        name = os.path.basename(path)[:-5]
        assert cfg.model == "meta-llama/Llama-3.2-1B-Instruct" and cfg.data.train == "allenai/tulu-v2-sft-mixture"
        assert cfg.training["learning_rate"] == 1e-4 and cfg.data.max_length == 4096
        assert cfg.training["num_train_epochs"] == 1 and cfg.training["bf16"] and cfg.training["gradient_checkpointing"]
        assert cfg.training["per_device_train_batch_size"] * cfg.training["gradient_accumulation_steps"] == 64
        # the authors' released config (config_lora.yaml): lora_dropout 0.1, linear schedule, 3% warm-up, no decay
        assert cfg.method.as_dict() == ({"type": "lora", "preset": "lora-8", "lora_dropout": 0.1} if name == "lora-8"
                              else {"type": "difflora", "preset": name, "lora_dropout": 0.1})
        assert cfg.training["lr_scheduler_type"] == "linear" and cfg.training["warmup_steps"] == 0.03
        assert cfg.training["weight_decay"] == 0.0


def test_qlora_configs_are_the_figure_1_rows_on_a_4bit_8b_base():
    import glob
    import os

    paths = sorted(glob.glob(os.path.join(ROOT, "configs/paper/qlora-llama-3.1-8b/*.yaml")))
    assert {os.path.basename(p)[:-5] for p in paths} == FIGURE_1_ROWS
    for path in paths:
        cfg = load_train_config(path)
        bf16 = load_train_config(os.path.join(ROOT, "configs/paper", os.path.basename(path)))
        assert cfg.model == "meta-llama/Llama-3.1-8B-Instruct"
        # QLoRA's base: NF4, double quantization, bf16 compute
        assert cfg.quantization == {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"}
        assert (cfg.method, cfg.data, cfg.training) == (bf16.method, bf16.data, bf16.training)


def test_init_from_must_be_an_adapter_folder(tmp_path):
    with pytest.raises(UserError, match="is not a PEFT adapter folder"):
        load_train_config({**BASE, "init_from": str(tmp_path)})
    (tmp_path / "adapter_config.json").write_text("{}")
    assert load_train_config({**BASE, "init_from": str(tmp_path)}).init_from == str(tmp_path)
    with pytest.raises(UserError, match="full fine-tuning has no adapters"):
        load_train_config({**BASE, "method": {"type": "full"}, "init_from": str(tmp_path)})


@pytest.mark.parametrize("installed,cuda,training,dtype,expected", [
    (True, True, {"bf16": True}, "auto", "flash_attention_2"),   # bf16 weights on a GPU with flash_attn
    (True, True, {}, "float16", "flash_attention_2"),
    (False, True, {"bf16": True}, "auto", None),                 # not installed: transformers' default (sdpa)
    (True, False, {"bf16": True}, "auto", None),                 # no GPU
    (True, True, {"bf16": True, "use_cpu": True}, "auto", None),  # --device cpu on a GPU machine
    (True, True, {}, "auto", None),                              # float32 weights: flash kernels take 16-bit only
])
def test_flash_attention_where_it_runs(monkeypatch, installed, cuda, training, dtype, expected):
    import torch

    from difflora.train import config

    monkeypatch.setattr(config, "flash_attn_installed", lambda: installed)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg = load_train_config({**BASE, "training": training, "dtype": dtype})
    assert cfg.device == ("cuda" if cuda and not training.get("use_cpu") else "cpu")
    assert cfg.attention_backend == expected
    chosen = load_train_config({**BASE, "training": training, "dtype": dtype, "attn_implementation": "eager"})
    assert chosen.attention_backend == "eager", "a config's own choice stands"


def test_bf16_loads_the_base_in_bf16():
    assert load_train_config({**BASE, "training": {"bf16": True}}).weights_dtype == "bfloat16"
    assert load_train_config(BASE).weights_dtype == "float32"
    assert load_train_config({**BASE, "training": {"bf16": True}, "dtype": "float32"}).weights_dtype == "float32"


def test_the_settings_table_is_the_one_list_of_top_level_keys():
    """A top-level setting is a line of train/settings.TOP_LEVEL and a field of TrainConfig; the keys the
    config knows and the TrainConfig it builds follow from the table."""
    import dataclasses

    from difflora.train.config import SECTIONS, TOP_LEVEL_KEYS, TrainConfig
    from difflora.train.settings import TOP_LEVEL

    assert set(TOP_LEVEL) | set(SECTIONS) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(TOP_LEVEL_KEYS) == set(TOP_LEVEL) | set(SECTIONS)
    with pytest.raises(UserError, match="config: quantization: unknown quantization 'nf3'"):
        load_train_config({**BASE, "quantization": "nf3"})
    cfg = load_train_config({**BASE, "quantization": "nf4", "dtype": None})
    assert (cfg.quantization, cfg.dtype, cfg.tokenizer) == ("nf4", "auto", None)
