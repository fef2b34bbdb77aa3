"""The quick demo end to end: report sections and plots, base cache reuse and rebuild, resume."""

import json
import os

import pytest

from difflora.cli.main import main as cli
from difflora.demo.base_model import QUICK_RECIPE, base_dir, ensure_base


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DIFFLORA_CACHE")
    os.environ["DIFFLORA_CACHE"] = str(path)
    yield path
    if old is None:
        del os.environ["DIFFLORA_CACHE"]
    else:
        os.environ["DIFFLORA_CACHE"] = old


@pytest.fixture(scope="module")
def interrupted_then_resumed(cache, tmp_path_factory):
    """A quick demo stopped after fine-tuning, then run again to completion."""
    out = tmp_path_factory.mktemp("demo")
    os.environ["DIFFLORA_DEMO_STOP_AFTER"] = "train"
    try:
        assert cli(["demo", "--quick", "--out", str(out), "--threads", "1"]) == 3
    finally:
        del os.environ["DIFFLORA_DEMO_STOP_AFTER"]
    marker = out / "adapters" / "difflora-32" / "training_complete.json"
    first_mtime = marker.stat().st_mtime
    assert not (out / "report.md").exists()
    assert cli(["demo", "--quick", "--out", str(out), "--threads", "1"]) == 0
    return out, first_mtime


def test_report_has_every_section_and_plot(interrupted_then_resumed):
    out, _ = interrupted_then_resumed
    md = (out / "report.md").read_text()
    for section in ("## What was run", "## Models x metrics", "## The paper's findings beside the demo's",
                    "## Needle in a haystack", "## Many-shot in-context learning", "## Attention mass per segment",
                    "## Degenerate generation", "## Training", "Base model quality: at 300 tokens it retrieves"):
        assert section in md, section
    for model in ("base", "lora-8", "difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn", "shared-diff"):
        assert f"| {model} |" in md
    for png in ("eval/nih_mk2.png", "eval/nih_mk3.png", "eval/nih_mv.png", "eval/icl.png", "eval/attention_mass.png",
                "loss_curves.png", "lambdas.png"):
        assert f"]({png})" in md and (out / png).stat().st_size > 5000, png
    assert "<img" in (out / "report.html").read_text()
    held_out = json.loads((out / "eval" / "demo_loss.json").read_text())
    assert set(held_out) == {"base", "lora-8", "difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn",
                             "shared-diff"}


def test_interrupted_run_resumes_without_redoing_finished_stages(interrupted_then_resumed):
    out, first_mtime = interrupted_then_resumed
    marker = out / "adapters" / "difflora-32" / "training_complete.json"
    assert marker.stat().st_mtime == first_mtime, "a finished fine-tune was redone"
    timings = json.loads((out / "timings.json").read_text())
    assert {"train", "evaluate"} <= set(timings)


def test_base_cache_is_reused_and_rebuilt_when_the_recipe_changes(interrupted_then_resumed, tmp_path):
    out, _ = interrupted_then_resumed
    assert json.loads((out / "base.json").read_text())["built_now"] is False  # the second invocation reused it
    path, built = ensure_base(QUICK_RECIPE)
    assert not built and path == base_dir(QUICK_RECIPE)
    import dataclasses

    changed = dataclasses.replace(QUICK_RECIPE, steps=QUICK_RECIPE.steps + 1)
    assert base_dir(changed) != base_dir(QUICK_RECIPE)
    new_path, built = ensure_base(changed)
    assert built and os.path.isfile(os.path.join(new_path, "config.json"))
    assert os.path.isfile(os.path.join(new_path, "tokenizer_config.json"))
