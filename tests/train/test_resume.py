"""Resuming: a real training process killed with SIGKILL (twice) finishes with the same adapter and
loss curve as an uninterrupted run; half-written checkpoints are set aside; a checkpoint of another
run is refused."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from difflora.cli.main import main as cli
from difflora.errors import UserError
from difflora.train import run_training
from difflora.train.checkpoints import latest_complete_checkpoint


def _train_subprocess(cfg_path, *extra):
    return subprocess.Popen([sys.executable, "-m", "difflora.cli.main", "train", str(cfg_path), "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc, path, timeout=240):
    """SIGKILL the process as soon as `path` exists: whatever it is doing, possibly mid-save."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _losses(output_dir):
    with open(os.path.join(output_dir, "log_history.json")) as f:
        return [h["loss"] for h in json.load(f) if "loss" in h]


def test_kill_9_twice_then_resume_finishes_with_the_same_adapter(train_cfg, tmp_path):
    cfg = train_cfg(type="difflora", preset="difflora-32", r=8, positive_r=8, lora_dropout=0.1)  # dropout: RNG state
    cfg["training"].update(max_steps=30, save_steps=3, logging_steps=3)
    reference = dict(cfg, output_dir=str(tmp_path / "uninterrupted"))
    run_training(reference, quiet=True)

    out = cfg["output_dir"]
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    _kill_when(_train_subprocess(cfg_path), os.path.join(out, "checkpoint-9"))  # as the folder appears
    _kill_when(_train_subprocess(cfg_path, "--resume"),  # as the adapter is written, before optimizer/state
               os.path.join(out, "checkpoint-21", "adapter_model.safetensors"))
    assert not os.path.exists(os.path.join(out, "training_complete.json"))
    resumed = _train_subprocess(cfg_path, "--resume")
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log[-3000:]

    a = load_file(os.path.join(reference["output_dir"], "adapter_model.safetensors"))
    b = load_file(os.path.join(out, "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    assert _losses(out) == pytest.approx(_losses(reference["output_dir"]), rel=1e-4)
    assert len(_losses(out)) == 10


def test_half_written_checkpoints_are_set_aside(train_cfg, tmp_path):
    cfg = train_cfg()
    result = run_training(cfg, quiet=True)  # leaves checkpoint-4 and checkpoint-8
    out = result.output_dir
    half = os.path.join(out, "checkpoint-12")
    shutil.copytree(os.path.join(out, "checkpoint-8"), half)
    with open(os.path.join(half, "trainer_state.json"), "w") as f:
        f.write('{"global_step": 1')  # killed while writing the last file
    missing = os.path.join(out, "checkpoint-16")
    shutil.copytree(os.path.join(out, "checkpoint-8"), missing)
    os.remove(os.path.join(missing, "trainer_state.json"))  # killed before writing it
    assert latest_complete_checkpoint(out, set_aside=False) == os.path.join(out, "checkpoint-8")
    assert latest_complete_checkpoint(out) == os.path.join(out, "checkpoint-8")
    assert os.path.isdir(half + ".incomplete") and os.path.isdir(missing + ".incomplete")
    assert not os.path.exists(half) and not os.path.exists(missing)


def test_checkpoints_of_another_run_are_not_resumed(train_cfg, tmp_path):
    cfg = train_cfg()
    cfg["training"]["max_steps"] = 4
    killed = cfg["output_dir"]
    run_training(cfg, quiet=True)
    os.remove(os.path.join(killed, "training_complete.json"))  # as if killed after its last checkpoint
    other = train_cfg(type="lora")
    with pytest.raises(UserError, match="different model, method or data"):
        run_training(other, quiet=True)
    more = dict(cfg, training={**cfg["training"], "max_steps": 8})  # same run, longer: resumes
    result = run_training(more, quiet=True)
    assert result.resumed_from == os.path.join(killed, "checkpoint-4") and len(result.losses) == 4


def test_cli_refuses_to_restart_over_checkpoints_and_skips_finished_runs(train_cfg, tmp_path, capsys):
    cfg = train_cfg()
    cfg["training"]["max_steps"] = 4
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_training(cfg, quiet=True)
    assert cli(["train", str(path)]) == 0
    assert "already holds this finished run" in capsys.readouterr().err
    os.remove(os.path.join(cfg["output_dir"], "training_complete.json"))
    assert cli(["train", str(path)]) == 1
    assert "pass --resume" in capsys.readouterr().err
