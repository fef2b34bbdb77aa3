"""Every evaluation command end to end on a tiny model, with a DiffLoRA and a LoRA adapter."""

import json
import os

import pytest
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from difflora import DiffLoRAConfig
from difflora.cli.main import main as cli


@pytest.fixture(scope="module")
def adapters(tiny_base_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    dl = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base_dir), DiffLoRAConfig.from_preset("difflora-32", r=8, positive_r=8))
    dl.save_pretrained(root / "difflora")
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(root / "lora")
    return {"difflora": f"{tiny_base_dir}::{root / 'difflora'}", "lora": f"{tiny_base_dir}::{root / 'lora'}",
            "base": str(tiny_base_dir)}


def models(adapters):
    return [arg for m in ("base", "lora", "difflora") for arg in ("--model", adapters[m])]


def test_nih_icl_attention_degeneration_and_report(adapters, tmp_path):
    out = str(tmp_path / "eval")
    assert cli(["eval", "nih", *models(adapters), "--tasks", "mk2", "mv", "--lengths", "600", "900",
                "--samples", "3", "--out", out, "--quiet"]) == 0
    summary = json.load(open(os.path.join(out, "nih_summary.json")))
    assert set(summary) == {os.path.basename(str(tiny_base_dir_of(adapters))), "lora", "difflora"}
    assert all(set(summary[m]["mv"]) == {"600", "900"} for m in summary)
    assert cli(["eval", "icl", *models(adapters), "--shots", "6", "12", "--samples", "3", "--out", out, "--quiet"]) == 0
    assert cli(["eval", "degeneration", *models(adapters), "--max-new-tokens", "8", "--out", out, "--quiet"]) == 0
    assert cli(["analyze", "attention", *models(adapters), "--length", "600", "--prompts", "1", "--out", out]) == 0
    mass = json.load(open(os.path.join(out, "attention_mass.json")))
    assert "negative" in mass["difflora"]["mean"] and "negative" not in mass["lora"]["mean"]
    for png in ("nih_mk2.png", "nih_mv.png", "icl.png", "attention_mass.png"):
        assert os.path.getsize(os.path.join(out, png)) > 5000
    assert cli(["report", out]) == 0
    md = open(os.path.join(out, "report.md")).read()
    for section in ("Needle in a haystack", "Many-shot in-context learning", "Attention mass per segment",
                    "Degenerate generation", "Paper:", "nih_mk2.png"):
        assert section in md
    assert "<table>" in open(os.path.join(out, "report.html")).read()


def tiny_base_dir_of(adapters):
    return adapters["base"]


def test_lm_eval_runs_a_local_task_on_a_difflora_adapter(adapters, tmp_path):
    rows = [{"question": f"What is {a} plus {b}?", "choices": [str(a + b), str(a + b + 1)], "answer": 0}
            for a, b in [(1, 2), (3, 4), (5, 6)]]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_qa.yaml").write_text(
        "task: tiny_qa\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'qa.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n")
    out = str(tmp_path / "lm")
    assert cli(["eval", "lm-eval", "--model", adapters["difflora"], "--tasks", "tiny_qa",
                "--include-path", str(tmp_path / "tasks"), "--out", out]) == 0
    result = json.load(open(os.path.join(out, "lm_eval_summary.json")))["difflora"]["tiny_qa"]
    assert 0.0 <= result["acc,none"] <= 1.0


def test_bad_inputs_are_one_line_errors(adapters, tmp_path, capsys, tiny_model_factory, tiny_tokenizer):
    cases = [
        (["eval", "nih", "--model", f"{adapters['base']}::{tmp_path / 'nope'}"], "no adapter at"),
        (["eval", "nih", "--model", adapters["difflora"], "--lengths", "5000", "--tasks", "mk2"], "exceeds the model's max_position_embeddings"),
        (["eval", "nih", "--model", adapters["base"], "--lengths", "20", "--tasks", "mk2"], "too short"),
    ]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases.append((["eval", "icl", "--model", adapters["base"], "--data", str(empty)], "is empty"))
    other = tmp_path / "other-base"
    tiny_model_factory("llama", vocab_size=384, hidden_size=96).save_pretrained(other)
    tiny_tokenizer.save_pretrained(other)
    no_tokenizer = tmp_path / "no-tokenizer"
    tiny_model_factory("llama", vocab_size=384).save_pretrained(no_tokenizer)
    cases.append((["eval", "nih", "--model", str(no_tokenizer)], "no usable tokenizer"))
    cases.append((["eval", "nih", "--model", f"{other}::{adapters['difflora'].split('::')[1]}"], "made for another base model"))
    capsys.readouterr()
    for argv, message in cases:
        assert cli([*argv, "--out", str(tmp_path / "x"), "--quiet"]) == 1, argv
        last = capsys.readouterr().err.strip().splitlines()[-1]  # loading bars may come before it
        assert last.startswith("difflora eval: error: ") and message in last, last
