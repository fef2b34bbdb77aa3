"""Every command end to end on a tiny model with a DiffLoRA and a LoRA adapter, and bad inputs."""

import json
import os
import subprocess
import sys

import pytest

from difflora.cli.main import main as cli


def models(adapters, names=("base", "lora", "difflora")):
    return [arg for name in names for arg in ("--model", f"{name}={adapters[name]}")]


def read(path):
    with open(path) as f:
        return json.load(f)


def test_every_command_and_the_report(adapters, tmp_path):
    out = str(tmp_path / "eval")
    assert cli(["eval", "nih", *models(adapters), "--tasks", "mk2", "mv", "--lengths", "400", "700",
                "--samples", "2", "--max-new-tokens", "12", "--out", out, "--quiet"]) == 0
    summary = read(os.path.join(out, "nih_summary.json"))
    assert set(summary) == {"base", "lora", "difflora"}
    assert all(set(summary[m]) == {"mk2", "mv"} and set(summary[m]["mv"]) == {"400", "700"} for m in summary)
    rows = [json.loads(line) for line in open(os.path.join(out, "nih_samples.jsonl"))]
    assert len(rows) == 3 * 2 * 2 * 2 and {"gold", "output", "score", "depth", "haystack"} <= set(rows[0])

    # an adapter folder alone names its base
    assert cli(["eval", "icl", "--model", adapters["base"], "--model", adapters["difflora_dir"], "--shots", "3", "6",
                "--samples", "3", "--out", out, "--quiet"]) == 0
    icl = read(os.path.join(out, "icl_summary.json"))
    assert set(icl) == {os.path.basename(adapters["base"]), "difflora"} and set(icl["difflora"]) == {"3", "6"}
    assert icl["difflora"]["6"]["prompt_tokens"] > icl["difflora"]["3"]["prompt_tokens"]

    assert cli(["eval", "degeneration", *models(adapters), "--max-new-tokens", "8", "--out", out, "--quiet"]) == 0
    deg = read(os.path.join(out, "degeneration_summary.json"))
    assert set(deg["lora"]) >= {"rate", "empty", "ngram_loop", "char_pattern", "distinct_2", "worst"}

    assert cli(["analyze", "attention", *models(adapters), "--length", "300", "--prompts", "1", "--out", out,
                "--quiet"]) == 0
    mass = read(os.path.join(out, "attention_mass.json"))
    assert "negative" in mass["difflora"]["mean"] and "negative" not in mass["lora"]["mean"]

    for png in ("nih_mk2.png", "nih_mv.png", "icl.png", "degeneration.png", "attention_mass.png",
                "attention_mass_layers.png"):
        assert os.path.getsize(os.path.join(out, png)) > 5000, png
    for name in ("nih", "icl", "degeneration"):
        assert os.path.isfile(os.path.join(out, f"{name}_settings.json"))

    assert cli(["report", out]) == 0
    md = open(os.path.join(out, "report.md")).read()
    for section in ("Overview: models side by side", "Needle in a haystack", "Many-shot in-context learning",
                    "Attention mass per segment", "Degenerate generation", "Paper: LoRA far ahead at MK-2",
                    "](figures/nih_mk2.png)", "](figures/attention_mass_layers.png)", "| lora |", "| difflora |"):
        assert section in md, section
    page = open(os.path.join(out, "report.html")).read()
    assert page.count('<img src="data:image/png;base64,') == 6 and "<table>" in page


def test_report_merges_runs_and_takes_results_and_extra_sections(tmp_path):
    from difflora.evaluation.report import Section, gather, write_report

    est = {"mean": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 4}
    run = tmp_path / "run"
    run.mkdir()
    (run / "nih_summary.json").write_text(json.dumps({"base": {"mk2": {"256": est}}}))
    lm = {"difflora": {"humaneval": {"pass@1,create_test": 0.5, "pass@1_stderr,create_test": 0.1,
                                     "alias": "humaneval"}}}
    merged = gather([str(run), {"nih": {"base": {"mk2": {256: est}}}, "lm_eval": lm}])
    assert set(merged["nih"]) == {"base", "base (results 2)"}, "same label from two sources is kept apart"
    md, html = write_report([str(run), {"lm_eval": lm}], str(tmp_path / "rep"),
                            extra_sections=[Section("Training", ["loss went down"], (["a", "b"], [[1, 2]])),
                                            lambda report: report.text("from a callable")])
    text = open(md).read()
    assert "Paper (humaneval, Llama-3.2-1B-Instruct): base 0.64, LoRA 0.53, DiffLoRA-64 0.64, DiffLoRA-32 0.61" in text
    assert "| difflora | 0.500 +- 0.100 |" in text and "## Training" in text and "from a callable" in text
    assert os.path.getsize(tmp_path / "rep" / "figures" / "lm_eval.png") > 5000


def _tiny_task(tmp_path):
    rows = [{"question": f"What is {a} plus {b}?", "choices": [str(a + b), str(a + b + 1)], "answer": 0}
            for a, b in [(1, 2), (3, 4), (5, 6)]]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_qa.yaml").write_text(
        "task: tiny_qa\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'qa.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n")
    return str(tmp_path / "tasks")


def test_lm_eval_command_registered_model_type_and_hf_peft(adapters, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from difflora.evaluation.lm_eval_model import MODEL_NAME

    tasks = _tiny_task(tmp_path)
    out = str(tmp_path / "lm")
    assert cli(["eval", "lm-eval", *models(adapters, ("base", "difflora")), "--tasks", "tiny_qa",
                "--include-path", tasks, "--out", out, "--quiet"]) == 0
    summary = read(os.path.join(out, "lm_eval_summary.json"))
    assert set(summary) == {"base", "difflora"} and 0.0 <= summary["difflora"]["tiny_qa"]["acc,none"] <= 1.0
    assert len(open(os.path.join(out, "lm_eval_samples.jsonl")).readlines()) == 6
    assert os.path.getsize(os.path.join(out, "lm_eval.png")) > 5000

    manager = TaskManager(include_path=tasks, include_defaults=False)
    by_type = simple_evaluate(model=MODEL_NAME, model_args=f"pretrained={adapters['difflora_dir']}", tasks=["tiny_qa"],
                              task_manager=manager, device="cpu", log_samples=False)
    by_hf = simple_evaluate(model="hf", model_args=f"pretrained={adapters['base']},peft={adapters['difflora_dir']}",
                            tasks=["tiny_qa"], task_manager=manager, device="cpu", log_samples=False)
    # the three routes load the same adapter, so they score the same
    acc = summary["difflora"]["tiny_qa"]["acc,none"]
    assert by_type["results"]["tiny_qa"]["acc,none"] == by_hf["results"]["tiny_qa"]["acc,none"] == acc


def _lm_eval_cli(command: list[str], tasks: str, out) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    done = subprocess.run([*command, "--tasks", "tiny_qa", "--include_path", tasks, "--device", "cpu",
                           "--output_path", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = [os.path.join(d, f) for d, _, files in os.walk(out) for f in files if f.startswith("results")]
    return read(results[0])["results"]["tiny_qa"]


@pytest.mark.slow
def test_lm_eval_command_line_with_the_model_type_registered(adapters, tmp_path):
    """lm-eval's own command line through `python -m difflora.evaluation.lm_eval_model`: the
    "difflora" type with an adapter folder alone, and `hf` with peft=."""
    tasks = _tiny_task(tmp_path)
    module = [sys.executable, "-m", "difflora.evaluation.lm_eval_model"]
    by_type = _lm_eval_cli([*module, "--model", "difflora", "--model_args", f"pretrained={adapters['difflora_dir']}"],
                           tasks, tmp_path / "difflora")
    by_hf = _lm_eval_cli([*module, "--model", "hf", "--model_args",
                          f"pretrained={adapters['base']},peft={adapters['difflora_dir']}"], tasks, tmp_path / "hf")
    assert by_type["acc,none"] == by_hf["acc,none"]
    # an unknown task is looked up in lm-eval's whole catalogue before it is refused
    assert cli(["eval", "lm-eval", "--model", adapters["base"], "--tasks", "no_such_task", "--include-path", tasks,
                "--out", str(tmp_path / "x"), "--quiet"]) == 1


def _autoload_installed() -> bool:
    import site

    return any(os.path.exists(os.path.join(d, "difflora-autoload.pth")) for d in site.getsitepackages())


@pytest.mark.slow
@pytest.mark.skipif(not _autoload_installed(), reason="difflora-autoload.pth comes with `pip install .`, not -e")
def test_plain_lm_eval_command_line_with_hf_peft(adapters, tmp_path):
    """`lm_eval --model hf --model_args pretrained=BASE,peft=ADAPTER` with no difflora import anywhere."""
    lm_eval = os.path.join(os.path.dirname(sys.executable), "lm_eval")
    model_args = f"pretrained={adapters['base']},peft={adapters['difflora_dir']}"
    _lm_eval_cli([lm_eval, "--model", "hf", "--model_args", model_args], _tiny_task(tmp_path), tmp_path / "plain")


def test_bad_inputs_are_one_line_errors(adapters, tmp_path, capsys, tiny_model_factory, tiny_tokenizer):
    difflora_dir, lora_dir = adapters["difflora_dir"], adapters["lora_dir"]
    other = tmp_path / "other-base"
    tiny_model_factory("llama", vocab_size=len(tiny_tokenizer), hidden_size=96).save_pretrained(other)
    tiny_tokenizer.save_pretrained(other)
    no_tokenizer = tmp_path / "no-tokenizer"
    tiny_model_factory("llama", vocab_size=384).save_pretrained(no_tokenizer)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    base = adapters["base"]
    cases = [
        (["eval", "nih", "--model", f"{base}::{tmp_path / 'nope'}"], "no adapter at"),
        (["eval", "nih", "--model", f"{other}::{difflora_dir}"], "made for another base model"),
        (["eval", "nih", "--model", f"{other}::{lora_dir}"], "it was made for another base model"),
        (["eval", "nih", "--model", base, "--model", adapters["difflora"], "--lengths", "512", "5000"],
         "5000 prompt tokens + 160 new tokens exceed"),
        (["eval", "nih", "--model", base, "--lengths", "20", "--tasks", "mk2"], "too short"),
        (["eval", "nih", "--model", str(no_tokenizer)], "no usable tokenizer"),
        (["eval", "icl", "--model", base, "--data", str(empty)], "is empty"),
        (["eval", "icl", "--model", base, "--data", str(tmp_path / "missing.jsonl")], "does not exist"),
        (["eval", "icl", "--model", base, "--shots", "4000", "--samples", "1"], "max_position_embeddings"),
        (["eval", "degeneration", "--model", base, "--prompts", str(empty)], "is empty"),
        (["analyze", "attention", "--model", base, "--prompts-file", str(empty)], "is empty"),
        (["eval", "lm-eval", "--model", base, "--tasks", "x", "--include-path", str(tmp_path / "none")],
         "is not a folder of lm-eval task YAMLs"),
        (["report", str(tmp_path / "nothing-here")], "does not exist"),
        (["report", str(tmp_path)], "no evaluation results"),
    ]
    capsys.readouterr()
    for argv, message in cases:
        out = tmp_path / "x"
        assert cli([*argv, "--out", str(out)] + (["--quiet"] if argv[0] != "report" else [])) == 1, argv
        last = capsys.readouterr().err.strip().splitlines()[-1]  # loading messages may come before it
        assert last.startswith(f"difflora {argv[0]}: error: ") and message in last, (argv, last)
        assert not (out / "nih_summary.json").exists(), "nothing is written before a bad input is refused"


def test_report_pairs_models_sample_by_sample(tmp_path, capsys):
    """--pair SELECTED=UNIFORM: the difference on the samples both were scored on, with an interval;
    the pair's order is the sign; an unknown label or a malformed pair is a one-line error."""
    from difflora.cli.main import main

    est = {"mean": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 4}
    run = tmp_path / "run"
    run.mkdir()
    (run / "nih_summary.json").write_text(json.dumps({m: {"mk2": {"256": est}} for m in ("sel", "uni")}))
    rows = [{"model": m, "task": "mk2", "length": 256, "index": i, "score": float(m == "sel" or i < 2)}
            for m in ("sel", "uni") for i in range(8)]
    rows.append({"model": "sel", "task": "mk2", "length": 256, "index": 99, "score": 1.0})  # unpaired: ignored
    (run / "nih_samples.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["report", str(run), "--out", str(tmp_path / "rep"), "--pair", "sel=uni"]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Paired comparisons" in text
    row = next(line for line in text.splitlines() if line.startswith("| sel - uni |"))
    assert "| nih | 8 | +0.750 [" in row  # 6 of 8 paired samples differ by +1
    assert main(["report", str(run), "--pair", "sel=nobody"]) == 1
    assert "--pair names model 'nobody'" in capsys.readouterr().err
    assert main(["report", str(run), "--pair", "sel"]) == 1
    assert "--pair expects MODEL=REFERENCE" in capsys.readouterr().err


def test_report_pair_names_a_bad_per_sample_row(tmp_path, capsys):
    from difflora.cli.main import main

    run = tmp_path / "run"
    run.mkdir()
    estimate = {"mean": 1.0, "ci_low": 1, "ci_high": 1, "n": 1}
    (run / "nih_summary.json").write_text(json.dumps({"a": {"mk2": {"256": estimate}}}))
    (run / "nih_samples.jsonl").write_text('{"model": "a", "task": "mk2", "length": 256, "index": 0, "score": 1}\n'
                                           '{"model": "a"\n')
    assert main(["report", str(run), "--pair", "a=a"]) == 1
    assert f"{run / 'nih_samples.jsonl'}:2 is not a per-sample result row" in capsys.readouterr().err


def test_report_takes_task_results_in_memory(tmp_path):
    """A TaskResult is a report source like a run folder: its summary is reported and its rows pair
    models by sample id; saved to disk and read back, it reports the same."""
    from difflora.evaluation import TaskResult, write_report
    from difflora.evaluation.results import save_result
    from difflora.evaluation.tasks import needles

    est = {"mean": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 8}
    rows = [{"model": m, "task": "mk2", "length": 256, "index": i, "score": float(m == "sel" or i < 2)}
            for m in ("sel", "uni") for i in range(8)]
    result = TaskResult("nih", {m: {"mk2": {256: est}} for m in ("sel", "uni")}, rows[::-1], {}, needles.SAMPLE_ID)
    assert result.scores("uni") == {("mk2", 256, i): float(i < 2) for i in range(8)}
    texts = []
    save_result(result, str(tmp_path / "run"))
    for source, out in ((result, tmp_path / "memory"), (str(tmp_path / "run"), tmp_path / "disk")):
        md, _ = write_report([source], str(out), pairs=[("sel", "uni")])
        texts.append(open(md).read().split("\n", 3)[3])  # past the "Sources: ..." line, which names the source
        assert "| sel - uni | nih | 8 | +0.750 [" in texts[-1] and "| MK2 \\ context | 256 |" in texts[-1]
    assert texts[0] == texts[1]
