"""End-to-end training runs: every method, output folders, generate, kill -9 + resume, divergence."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from difflora.cli.main import main as cli
from difflora.train import run_training
from difflora.train.trainer import TrainingDivergedError


@pytest.mark.parametrize("method", [
    {"type": "difflora", "preset": "difflora-64-fixed", "r": 8, "lora_alpha": 16},
    {"type": "lora"},
    {"type": "full"},
])
def test_each_method_trains_and_its_output_loads(train_cfg, method, tiny_base_dir):
    cfg = train_cfg(**method)
    result = run_training(cfg, quiet=True)
    assert len(result.losses) == 4 and all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses)
    out = result.output_dir
    assert os.path.isfile(os.path.join(out, "tokenizer_config.json"))
    if method["type"] == "full":
        model = AutoModelForCausalLM.from_pretrained(out)
    else:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base_dir), out)
        saved = load_file(os.path.join(out, "adapter_model.safetensors"))
        assert not any("base_layer" in k for k in saved)
    assert model is not None
    again = run_training(cfg, quiet=True)
    assert again.already_complete and again.losses == result.losses


def test_lambdas_are_logged(train_cfg):
    result = run_training(train_cfg(type="difflora", preset="difflora-64", r=8), quiet=True)
    logged = [h for h in result.log_history if "loss" in h]
    assert all(f"lambda/{i:02d}" in h for h in logged for i in range(2))


def test_generate_cli_chats_with_the_output(train_cfg, capsys):
    result = run_training(train_cfg(), quiet=True)
    assert cli(["generate", result.output_dir, "--prompt", "What is 2 plus 3?", "--max-new-tokens", "5"]) == 0
    assert "assistant:" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli(["train", str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err


class _PoisonLambda(TrainerCallback):
    """Simulates a diverging run: after step 5 a lambda parameter becomes NaN."""

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step == 5:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if "lambda_q1" in n:
                        p.fill_(float("nan"))


def test_non_finite_lambda_stops_and_keeps_the_last_good_checkpoint(train_cfg):
    cfg = train_cfg(type="difflora", preset="difflora-64", r=8)
    with pytest.raises(TrainingDivergedError, match=r"(loss became nan|lambda became non-finite).*checkpoint-4"):
        run_training(cfg, quiet=True, callbacks=[_PoisonLambda()])
    assert os.path.isfile(os.path.join(cfg["output_dir"], "checkpoint-4", "adapter_model.safetensors"))
    assert not os.path.exists(os.path.join(cfg["output_dir"], "training_complete.json"))


def _train_subprocess(cfg_path, *extra):
    return subprocess.Popen([sys.executable, "-m", "difflora.cli.main", "train", str(cfg_path), "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_9_then_resume_finishes_with_the_same_adapter(train_cfg, tmp_path):
    cfg = train_cfg(type="difflora", preset="difflora-32", r=8, positive_r=8)
    cfg["training"].update(max_steps=30, save_steps=3, logging_steps=3)
    reference = dict(cfg, output_dir=str(tmp_path / "uninterrupted"))
    run_training(reference, quiet=True)

    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = _train_subprocess(cfg_path)
    deadline = time.time() + 240
    while not os.path.exists(os.path.join(cfg["output_dir"], "checkpoint-9")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # at whatever point it is in, possibly mid-save
    proc.wait()
    assert not os.path.exists(os.path.join(cfg["output_dir"], "training_complete.json"))
    resumed = _train_subprocess(cfg_path, "--resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]

    a = load_file(os.path.join(reference["output_dir"], "adapter_model.safetensors"))
    b = load_file(os.path.join(cfg["output_dir"], "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    ref_losses = [h["loss"] for h in json.load(open(os.path.join(reference["output_dir"], "log_history.json"))) if "loss" in h]
    new_losses = [h["loss"] for h in json.load(open(os.path.join(cfg["output_dir"], "log_history.json"))) if "loss" in h]
    assert new_losses == pytest.approx(ref_losses, rel=1e-4)


def test_restart_without_resume_is_refused(train_cfg, tmp_path):
    cfg = train_cfg()
    cfg["training"]["max_steps"] = 4
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    os.makedirs(os.path.join(cfg["output_dir"], "checkpoint-4"))
    for name in ("trainer_state.json", "adapter_config.json", "optimizer.pt", "scheduler.pt"):
        open(os.path.join(cfg["output_dir"], "checkpoint-4", name), "w").write("{}")
    assert cli(["train", str(path)]) == 1


def test_two_process_ddp_gives_the_same_loss_curve_as_one_process(train_cfg, tmp_path):
    """torchrun, 2 CPU processes on gloo, per-device batch 2 = one process with batch 4."""
    curves = {}
    for name, procs, batch in (("one", 1, 4), ("two", 2, 2)):
        cfg = train_cfg()
        cfg["output_dir"] = str(tmp_path / name)
        cfg["training"].update(max_steps=6, per_device_train_batch_size=batch, logging_steps=1, save_steps=100)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                    "--master_port", str(29500 + os.getpid() % 1000)] if procs > 1 else [sys.executable]
        proc = subprocess.run([*launcher, "-m", "difflora.cli.main", "train", str(path), "--quiet"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        history = json.load(open(tmp_path / name / "log_history.json"))
        curves[name] = [h["loss"] for h in history if "loss" in h]
    assert len(curves["one"]) == 6
    assert curves["two"] == pytest.approx(curves["one"], rel=1e-4)
