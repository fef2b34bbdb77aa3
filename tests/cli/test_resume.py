"""Finished work is never thrown away: a damaged newest checkpoint is set aside with a
notice and the run resumes from the newest intact one, ending with the adapter of an uninterrupted
run; --resume without a checkpoint says it starts fresh; Ctrl-C says how to continue."""

import os
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from difflora.cli.main import main
from difflora.train import run_training
from difflora.train.checkpoints import damage, latest_complete_checkpoint

ADAPTER = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_base_dir):
    """An uninterrupted 8-step run keeping checkpoints 4, 6 and 8 (the reference)."""
    from train.conftest import chat_rows, write_jsonl

    root = tmp_path_factory.mktemp("finished")
    data = write_jsonl(root / "train.jsonl", chat_rows())
    cfg = {"model": str(tiny_base_dir), "output_dir": str(root / "reference"),
           "method": {"type": "difflora", "preset": "difflora-32", "r": 8, "positive_r": 8, "lora_dropout": 0.1},
           "data": {"train": str(data), "max_length": 64},
           "training": {"max_steps": 8, "per_device_train_batch_size": 4, "logging_steps": 2, "save_steps": 2,
                        "save_total_limit": 3, "learning_rate": 1e-3, "report_to": []}}
    run_training(cfg, quiet=True)
    return cfg


def _interrupted_copy(finished, tmp_path) -> tuple[str, str]:
    """The reference folder as a run killed during step 8 would have left it (checkpoints 4 and 6,
    no final adapter), and a config file for it."""
    out = str(tmp_path / "run")
    shutil.copytree(finished["output_dir"], out)
    for name in ("checkpoint-8", "training_complete.json", ADAPTER, "log_history.json"):
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**finished, "output_dir": out}))
    return out, str(config)


def _same_adapter(a_dir, b_dir):
    a, b = load_file(os.path.join(a_dir, ADAPTER)), load_file(os.path.join(b_dir, ADAPTER))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


def test_truncated_newest_adapter_is_set_aside_and_the_run_resumes(finished, tmp_path, capsys):
    out, config = _interrupted_copy(finished, tmp_path)
    newest = os.path.join(out, "checkpoint-6", ADAPTER)
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)  # a copy cut short
    result = run_training(config, resume=True, quiet=True)
    assert result.resumed_from == os.path.join(out, "checkpoint-4")
    err = capsys.readouterr().err
    notice = [line for line in err.splitlines() if "checkpoint-6" in line]
    assert notice == [f"difflora train: checkpoint-6 cannot be resumed ({ADAPTER} is truncated "
                      f"({os.path.getsize(os.path.join(out, 'checkpoint-6.incomplete', ADAPTER))} of "
                      f"{os.path.getsize(os.path.join(finished['output_dir'], 'checkpoint-6', ADAPTER))} bytes)): "
                      "set aside as checkpoint-6.incomplete"], err
    assert "Traceback" not in err
    _same_adapter(finished["output_dir"], out)


def test_corrupt_json_in_the_newest_checkpoint_is_set_aside_by_the_cli(finished, tmp_path, capsys):
    out, config = _interrupted_copy(finished, tmp_path)
    with open(os.path.join(out, "checkpoint-6", "adapter_config.json"), "w") as f:
        f.write('{"r": 8,\n "peft_type": "DIFF')
    assert main(["train", config, "--resume", "--quiet"]) == 0
    assert "checkpoint-6 cannot be resumed (adapter_config.json does not load" in capsys.readouterr().err
    _same_adapter(finished["output_dir"], out)
    assert os.path.isdir(os.path.join(out, "checkpoint-6.incomplete"))


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"])
def test_damage_names_the_file_that_does_not_load(finished, tmp_path, name):
    checkpoint = tmp_path / "checkpoint-6"
    shutil.copytree(os.path.join(finished["output_dir"], "checkpoint-6"), checkpoint)
    assert damage(str(checkpoint)) is None
    path = checkpoint / name
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 30)
    problem = damage(str(checkpoint))
    assert problem is not None and name in problem, problem
    assert latest_complete_checkpoint(str(tmp_path), set_aside=False) is None


def test_resume_without_a_checkpoint_says_it_starts_fresh(finished, tmp_path, capsys, monkeypatch):
    import difflora.train as train

    calls = []
    monkeypatch.setattr(train, "run_training", lambda cfg, **kw: calls.append(kw))
    config = tmp_path / "fresh.yaml"
    config.write_text(yaml.safe_dump({**finished, "output_dir": str(tmp_path / "fresh")}))
    assert main(["train", str(config), "--resume", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"no complete checkpoint in '{tmp_path / 'fresh'}' to resume from; starting fresh" in err
    assert calls == [{"resume": True, "quiet": True}]


def test_ctrl_c_says_how_to_continue(finished, tmp_path, capsys, monkeypatch):
    import difflora.train as train

    def interrupted(cfg, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run_training", interrupted)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**finished, "output_dir": str(tmp_path / "c")}))
    assert main(["train", str(config), "--set", "training.seed=1", "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"difflora train: interrupted; continue from the last checkpoint with: difflora train {config} "
                   "--set training.seed=1 --quiet --resume")


def test_ctrl_c_in_the_demo_says_to_run_it_again(tmp_path, capsys, monkeypatch):
    import difflora.demo.pipeline as pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_demo", interrupted)
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--threads", "1"]) == 130
    assert capsys.readouterr().err.strip() == (
        "difflora demo: interrupted; run the same command again to continue where it stopped")
