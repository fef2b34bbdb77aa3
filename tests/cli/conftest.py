"""A tiny world of inputs for the catalogue of bad inputs: a base model, an adapter, a config, data
files good and bad. Read-only: every case runs in its own working folder."""

import shutil

import pytest
import yaml

from train.conftest import chat_file, chat_rows, train_cfg, write_jsonl  # noqa: F401  (the training tests' fixtures)

NOT_UTF8 = b'{"messages": [{"role": "user", "content": "caf\x8c"}]}\n'


@pytest.fixture(scope="session")
def world(tiny_base_dir, tmp_path_factory):
    """Paths (as strings) for the catalogue's placeholders: {base}, {adapter}, {bad_adapter},
    {cfg}, {bad_yaml}, {data}, {not_utf8}, {icl_not_utf8}, {prompts_not_utf8}, {bad_row},
    {empty_dir}, {lm_tasks_none}."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from difflora import DiffLoRAConfig

    root = tmp_path_factory.mktemp("world")
    adapter = root / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    get_peft_model(base, DiffLoRAConfig.from_preset("difflora-32", r=8, positive_r=8)).save_pretrained(adapter)
    bad_adapter = root / "bad-adapter"
    shutil.copytree(adapter, bad_adapter)
    (bad_adapter / "adapter_config.json").write_text('{\n  "peft_type": "DIFFLORA",\n  "r": "8\n}\n')

    data = write_jsonl(root / "train.jsonl", chat_rows(16))
    not_utf8 = root / "not-utf8.jsonl"
    not_utf8.write_bytes(open(data, "rb").read().split(b"\n", 2)[0] + b"\n" + b"\n" + NOT_UTF8)  # bad byte on line 3
    bad_row = write_jsonl(root / "bad-row.jsonl", ['{"messages": [{"role": "user", "content": "hi"}]}'])
    icl_not_utf8 = root / "icl.jsonl"
    icl_not_utf8.write_bytes(b'{"text": "good", "label": "a"}\n{"text": "caf\x8c", "label": "b"}\n')
    prompts_not_utf8 = root / "prompts.jsonl"
    prompts_not_utf8.write_bytes(b'{"prompt": "hello"}\n{"prompt": "caf\x8c"}\n')

    config = {"model": str(tiny_base_dir), "output_dir": "runs/train-out",
              "method": {"type": "difflora", "preset": "difflora-32", "r": 8, "positive_r": 8},
              "data": {"train": str(data), "max_length": 64},
              "training": {"max_steps": 2, "per_device_train_batch_size": 4, "report_to": []}}
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    bad_yaml = root / "bad.yaml"
    bad_yaml.write_text("model: m\noutput_dir: [unclosed\ndata: {train: t.jsonl}\n")
    empty_dir = root / "empty"
    empty_dir.mkdir()
    return {k: str(v) for k, v in dict(
        base=tiny_base_dir, adapter=adapter, bad_adapter=bad_adapter, cfg=cfg, bad_yaml=bad_yaml, data=data,
        not_utf8=not_utf8, bad_row=bad_row, icl_not_utf8=icl_not_utf8, prompts_not_utf8=prompts_not_utf8,
        empty_dir=empty_dir, root=root).items()}
