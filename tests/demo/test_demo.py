"""`difflora demo --quick` end to end: interrupted after a fine-tune, resumed to the end; the report
has every section and plot; the base model cache is reused and rebuilt when its recipe changes."""

import dataclasses
import json
import os
import re

import pytest

from difflora.cli.main import main as cli
from difflora.demo.base import QUICK_RECIPE, ensure_base
from difflora.demo.base.store import base_dir, is_built
from difflora.demo.plan import DEMO_MODELS

STOP = "train:difflora-64"  # interrupt after the second fine-tune


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DIFFLORA_CACHE")
    os.environ["DIFFLORA_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DIFFLORA_CACHE", None)
    else:
        os.environ["DIFFLORA_CACHE"] = old


def _demo(out) -> int:
    return cli(["demo", "--quick", "--out", str(out), "--threads", "1"])


@pytest.fixture(scope="module")
def runs(cache, tmp_path_factory):
    """A quick demo stopped after a fine-tune, then the same command again to the end."""
    out = tmp_path_factory.mktemp("demo")
    os.environ["DIFFLORA_DEMO_STOP_AFTER"] = STOP
    try:
        assert _demo(out) == 3
    finally:
        del os.environ["DIFFLORA_DEMO_STOP_AFTER"]
    first = json.loads((out / "state.json").read_text())
    first_base = json.loads((out / "base.json").read_text())
    markers = {m: (out / "adapters" / m / "training_complete.json") for m in ("lora-8", "difflora-64")}
    mtimes = {m: p.stat().st_mtime_ns for m, p in markers.items()}
    assert not (out / "report.md").exists()
    assert _demo(out) == 0
    return dict(out=out, first=first, first_base=first_base, mtimes=mtimes, markers=markers)


def test_interrupted_run_stops_after_the_named_stage(runs):
    stages = runs["first"]["stages"]
    assert all(stages[s]["done"] for s in ("base", "data", "train:lora-8", STOP))
    assert "train:difflora-64-fixed" not in stages and not any(s.startswith("eval:") for s in stages)
    assert runs["first_base"]["built_now"] is True


def test_resumed_run_does_not_redo_finished_stages(runs):
    for model, marker in runs["markers"].items():
        assert marker.stat().st_mtime_ns == runs["mtimes"][model], f"{model} was fine-tuned again"
    stages = json.loads((runs["out"] / "state.json").read_text())["stages"]
    for stage in ("base", "data", "train:lora-8", STOP):
        assert stages[stage] == runs["first"]["stages"][stage], stage
    expected = {f"train:{m}" for m in DEMO_MODELS} | {f"eval:{m}" for m in ("base", *DEMO_MODELS)} | {"report"}
    assert expected <= {s for s, entry in stages.items() if entry["done"]}


def test_second_invocation_reuses_the_cached_base(runs):
    base = json.loads((runs["out"] / "base.json").read_text())
    assert base["built_now"] is False and base["path"] == runs["first_base"]["path"]
    assert base["path"] == base_dir(QUICK_RECIPE) and is_built(base["path"])


def test_report_has_every_section_plot_and_model(runs):
    out = runs["out"]
    md = (out / "report.md").read_text()
    for heading in ("## Verdicts against the paper's findings", "## Base model quality", "## Models x metrics",
                    "## The paper's findings beside the demo's", "## Needle in a haystack",
                    "## Many-shot in-context learning", "## Attention mass per segment", "## Degenerate generation",
                    "## Held-out loss", "## DiffoRA selections", "## Training", "## How this was run"):
        assert heading in md, heading
    assert "At the shortest context (256 tokens) the base model retrieves" in md
    assert f"Command: `difflora demo --quick --out {out} --threads 1`" in md  # as typed (args.argv)
    for model in ("base", *DEMO_MODELS):
        assert f"| {model} |" in md, model
    for figure in ("nih_mk2", "nih_mk3", "nih_mv", "icl", "attention_mass", "degeneration", "heldout_loss",
                   "loss_curves", "lambda_per_layer"):
        path = f"figures/{figure}.png"
        assert f"]({path})" in md and (out / path).stat().st_size > 5000, figure
    for finding in ("NIH MK-2", "NIH MV", "Many-shot ICL", "Attention mass", "GroupNorm",
                    "DiffoRA-selected LoRA", "DAM-selected DiffLoRA layers"):
        assert f"| {finding}" in md, finding
    for name in ("diffora-lora", "diffora-difflora"):
        assert f"](select/{name}/dam.png)" in md and (out / "select" / name / "dam.png").stat().st_size > 5000
    page = (out / "report.html").read_text()
    assert page.count("<img") >= 10 and "The paper&#x27;s findings" in page


def test_report_leads_with_the_verdicts_and_ends_with_how_it_was_run(runs):
    """Results first: the verdict grid (a picture beside the report and a table) right under the title,
    the logistics (command, stage times, versions) last; disagreement explained once; the seed count."""
    from difflora.demo.compare import DIFFLORA

    out = runs["out"]
    md = (out / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Verdicts against the paper's findings" and headings[-1] == "## How this was run"
    verdicts, rest = md.split("## Base model quality")
    assert "](verdicts.png)" in verdicts and (out / "verdicts.png").stat().st_size > 5000
    assert "| finding | " + " | ".join(DIFFLORA) in verdicts  # the grid as a table, variants as columns
    assert re.search(r"\| NIH MK-2( \| (agrees|disagrees|cannot tell)){4} \|", verdicts)
    assert "what each verdict compares" in verdicts
    assert "1 fine-tuning seed (seed 0) per model; intervals are over evaluation samples only" in verdicts
    assert md.count("need not behave like a 1B model") == 1 and "### Why a verdict can disagree" in verdicts
    how = md.split("## How this was run")[1]
    for logistics in ("Command: `difflora demo --quick", "Base model: the project's default", "| stage | seconds |",
                      "Versions: difflora ", "Reproduce: `difflora demo"):
        assert logistics in how and logistics not in md.split("## How this was run")[0], logistics
    page = (out / "report.html").read_text()
    assert page.index("Verdicts against the paper") < page.index("<img") < page.index("Base model quality")
    assert page.index("How this was run") > page.index("Held-out loss")


def test_every_accuracy_has_a_bootstrap_interval(runs):
    for label in ("base", *DEMO_MODELS):
        nih = json.loads((runs["out"] / "eval" / label / "nih.json").read_text())["summary"]
        for task in ("mk2", "mk3", "mv"):
            assert set(nih[task]) == {"256", "320", "384"}
            for estimate in nih[task].values():
                assert estimate["ci_low"] <= estimate["mean"] <= estimate["ci_high"] and estimate["n"] == 2


def test_base_is_rebuilt_when_its_recipe_changes(runs):
    path, built = ensure_base(QUICK_RECIPE)
    assert not built and path == base_dir(QUICK_RECIPE)
    changed = dataclasses.replace(QUICK_RECIPE, steps=QUICK_RECIPE.steps + 1)
    assert base_dir(changed) != base_dir(QUICK_RECIPE)
    new_path, built = ensure_base(changed)
    assert built and new_path == base_dir(changed)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(new_path).config.hidden_size == QUICK_RECIPE.hidden_size
    assert AutoTokenizer.from_pretrained(new_path).chat_template
    assert json.loads((runs["out"] / "base.json").read_text())["path"] != new_path


def test_rebuild_base_forces_pretraining(runs, tmp_path):
    from difflora.demo.base import ensure_base as ensure

    path, built = ensure(QUICK_RECIPE, rebuild=True, log=lambda *_: None)
    assert built and is_built(path)


def test_config_runs_the_same_pipeline_on_a_given_base_and_data(tmp_path):
    """--config takes the base model, data and training settings of a training config (the GPU path),
    with no embedded base and the presets' ranks as they are."""
    import yaml

    from difflora.train.tiny import make_tiny_setup

    base, data = make_tiny_setup(str(tmp_path / "tiny"), examples=16)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": base, "output_dir": str(tmp_path / "ignored"),
        "method": {"type": "difflora", "preset": "difflora-64-fixed"},
        "data": {"train": data, "max_length": 96},
        "training": {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "save_steps": 2}}))
    out = tmp_path / "demo"
    assert cli(["demo", "--config", str(config), "--out", str(out), "--models", "lora-8", "difflora-64-fixed",
                "--tasks", "loss", "--threads", "1"]) == 0
    md = (out / "report.md").read_text()
    assert f"Base model: {base}" in md and "capped" not in md
    assert "No finding of the paper can be checked with these models and tasks" in md  # loss alone decides none
    adapter = json.loads((out / "adapters" / "difflora-64-fixed" / "adapter_config.json").read_text())
    assert adapter["r"] == 64
    stages = json.loads((out / "state.json").read_text())["stages"]
    assert "base" not in stages and stages["train:lora-8"]["done"] and stages["eval:difflora-64-fixed"]["done"]


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    assert cli(["demo", "--quick", "--out", str(tmp_path), "--models", "lora-9"]) != 0
    err = capsys.readouterr().err
    assert "unknown demo model 'lora-9'" in err and "Traceback" not in err
    assert cli(["demo", "--quick", "--out", str(tmp_path), "--lengths", "16"]) != 0
    assert "at least 64 tokens" in capsys.readouterr().err


def test_diffora_models_train_the_selection_from_its_search_weights(runs):
    """diffora-lora keeps modules within LoRA-8's parameter count; diffora-difflora half the layers;
    both train exactly the kept modules, starting from the adapter the search exported."""
    import yaml

    from difflora.demo.report import _count_parameters

    out = runs["out"]
    for name in ("diffora-lora", "diffora-difflora"):
        dam = json.loads((out / "select" / name / "dam.json").read_text())
        run = yaml.safe_load((out / "adapters" / name / "run_config.yaml").read_text())
        assert run["init_from"] == str(out / "select" / name / "adapter")
        if name == "diffora-lora":
            assert run["method"]["target_modules"] == dam["kept"] and run["method"]["r"] == 16
            assert (0 < _count_parameters(str(out / "adapters" / name))
                    <= _count_parameters(str(out / "adapters" / "lora-8")))
        else:
            assert len(run["method"]["layers_to_transform"]) == 1  # half of the quick base's 2 layers


def test_default_plan_measures_each_needle_cell_on_100_samples():
    """The default demo scores 100 samples per (model, needle task, length): enough for the paired
    bootstrap to resolve a 0.1 difference; the real-model plan and the smoke run keep all three tasks."""
    from difflora.demo.plan import NIH_TASKS, DemoPlan, quick_plan

    plan = DemoPlan()
    assert plan.nih_samples >= 100 and plan.nih_tasks == ("mk2",) and plan.nih_lengths == (256, 512, 1024)
    assert quick_plan().nih_tasks == NIH_TASKS
