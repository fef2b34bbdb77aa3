"""The base recipe's ICL finishing phase: its parts continue the pretrained model one after the
other, resume, run after pretraining exactly once, and are the same training as the probe's plain loop
that made the shipped base (one run per part, each with a fresh optimizer)."""

import dataclasses
import json
import os
import shutil

import pytest
import torch

from difflora.demo import default_base_path
from difflora.demo.base import BaseRecipe, build
from difflora.demo.base.copy_supervision import supervised_loss
from difflora.demo.base.icl_finish import (
    IclFinish,
    finish_icl,
    finishing_documents,
    icl_collator,
    optimizer_and_schedule,
)
from difflora.demo.base.training import tokenize_document

TINY = IclFinish(steps=2, batch_size=2)
SECOND = IclFinish(steps=1, batch_size=2, icl_share=0.3, seed=5)


@pytest.fixture(scope="module")
def shipped():
    return default_base_path()


def _recipe(*parts):
    return dataclasses.replace(BaseRecipe(), icl_finish=parts or (TINY,))


def _weights(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_a_shorter_phase_is_the_start_of_a_longer_one():
    mix = BaseRecipe().mix
    long = finishing_documents(mix, dataclasses.replace(TINY, steps=5))
    assert finishing_documents(mix, TINY) == long[:4] and len(long) == 10
    icl = [d for d in long if "label:" in d["messages"][-1]["content"]]
    assert 0 < len(icl) < len(long)  # ICL and retrieval conversations
    model = torch.nn.Linear(2, 2)
    optimizer, schedule = optimizer_and_schedule(model, IclFinish(learning_rate=1e-3, warmup_steps=4))
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4] + [1e-3] * 5)  # warm-up, then constant


def test_finishing_continues_the_pretrained_model_and_appends_its_log(shipped, tmp_path):
    out = finish_icl(_recipe(IclFinish(), TINY), shipped, str(tmp_path))  # a part of 0 steps is skipped
    assert out == str(tmp_path / "model") and not os.path.exists(tmp_path / "finished-0")
    before, after = _weights(shipped), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with open(os.path.join(shipped, "pretraining_log.json")) as f:
        pretraining = json.load(f)
    with open(os.path.join(out, "pretraining_log.json")) as f:
        history = json.load(f)
    assert history[:len(pretraining)] == pretraining
    added = history[len(pretraining):]
    assert added and all(e["phase"] == "icl_finish" and e["step"] > BaseRecipe().steps for e in added)
    assert os.path.isdir(tmp_path / "trainer-icl-0" / "checkpoint-2")


def test_the_parts_equal_the_probes_plain_loop_run_once_per_part(shipped, tmp_path):
    """benchmarks/icl_supervision_probe.py's loop made the shipped finish, one run per part, each from
    the last one's model; the recipe runs the parts through a Trainer (checkpoints, resumption). Same
    documents, collator, optimizer and loss: same weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    out = finish_icl(_recipe(TINY, SECOND), shipped, str(tmp_path))
    assert out == str(tmp_path / "model") and os.path.isdir(tmp_path / "finished-0")
    ours = _weights(out)
    tokenizer = AutoTokenizer.from_pretrained(shipped)
    model = AutoModelForCausalLM.from_pretrained(shipped, dtype=torch.float32, attn_implementation="eager")
    model.train()
    for part in (TINY, SECOND):
        rows = [tokenize_document(d, tokenizer, 4096, "values") for d in finishing_documents(BaseRecipe().mix, part)]
        collate = icl_collator(tokenizer, part.gather_heads)
        optimizer, schedule = optimizer_and_schedule(model, part)  # fresh for each part
        for step in range(part.steps):
            total, *_ = supervised_loss(model, collate(rows[step * 2:(step + 1) * 2]), 1.0, None, 1.0)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    theirs = model.state_dict()
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-6
    with open(os.path.join(shipped, "pretraining_log.json")) as f:
        before = len(json.load(f))
    with open(os.path.join(out, "pretraining_log.json")) as f:
        steps = [e["step"] for e in json.load(f)[before:] if "loss" in e]
    assert steps == [BaseRecipe().steps + s for s in (1, 2, 3)]  # counted on across the parts


def test_build_pretrains_once_then_finishes_and_resumes_the_finish(shipped, tmp_path, monkeypatch):
    calls = []

    def fake_pretrain(recipe, work_dir, out, log=print, callbacks=None):  # the shipped model stands in
        calls.append(out)
        shutil.copytree(shipped, out)
        return out

    monkeypatch.setattr(build, "pretrain", fake_pretrain)
    work = str(tmp_path / "build")
    recipe = _recipe(TINY, SECOND)
    out = build.build_base(recipe, work, log=lambda *_: None)
    assert calls == [os.path.join(work, "pretrained")] and os.path.isfile(os.path.join(out, "model.safetensors"))
    finished = _weights(out)
    first_part = os.path.join(work, "finished-0", "model.safetensors")
    written = os.stat(first_part).st_mtime_ns
    shutil.rmtree(out)  # interrupted after the last checkpoint: pretraining and the first part are not redone
    messages = []
    out = build.build_base(recipe, work, log=messages.append)
    assert len(calls) == 1 and os.stat(first_part).st_mtime_ns == written
    assert [m for m in messages if "part" in m] == [m for m in messages if "part 2 of 2" in m] != []
    again = _weights(out)
    assert all(torch.equal(finished[k], again[k]) for k in finished)


def test_the_report_names_the_finishing_parts_only_when_the_recipe_has_them():
    from difflora.demo.report import _finish

    assert _finish({}) == "" and _finish({"icl_finish": []}) == ""
    assert _finish({"icl_finish": dataclasses.asdict(IclFinish())}) == ""
    one = ", then 600 steps of 16 conversations (60% many-shot in-context classification) with attention supervision"
    assert _finish({"icl_finish": dataclasses.asdict(IclFinish(steps=600))}) == one  # recipes before version 10
    shipped = json.loads(json.dumps(BaseRecipe().to_dict()))  # as recipe.json holds it
    assert _finish(shipped) == one + (", then 200 steps of 16 conversations (30% many-shot in-context "
                                      "classification) with attention supervision")


def test_the_base_loss_plot_draws_each_loss_apart_and_marks_the_finishing_phase(shipped, tmp_path):
    """The logged `loss` sums the language-model and supervision losses, and the finishing phase adds
    ICL's supervision to it: the plot draws the two losses as their own curves and shades the phase."""
    from difflora.demo.report import base_training_curves, plot_losses

    history = [{"loss": 3.0, "step": 1}, {"loss": 9.0, "lm_loss": 2.0, "copy_loss": 7.0, "step": 2},
               {"train_loss": 5.0, "step": 2}, {"loss": 4.0, "lm_loss": 1.0, "copy_loss": 3.0, "step": 3,
                                                "phase": "icl_finish"}]
    assert base_training_curves(history) == {"language model": [(1, 3.0), (2, 2.0), (3, 1.0)],
                                             "attention supervision": [(2, 7.0), (3, 3.0)]}
    path = plot_losses(shipped, {}, str(tmp_path / "loss.png"))
    assert os.path.getsize(path) > 10_000
