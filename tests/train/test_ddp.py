"""Multi-process: two CPU processes on gloo (DDP through Accelerate inside Trainer) with the same
global batch give the same loss curve and adapter as one process."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from difflora.train import run_training


def test_two_process_ddp_gives_the_same_loss_curve_as_one_process(train_cfg, tmp_path):
    """torchrun, 2 CPU processes with per-device batch 2 = this process with batch 4. (On CPU,
    `accelerate launch --cpu` starts a single process; torchrun is the launcher for a gloo group.)"""
    curves, adapters = {}, {}
    for name, procs, batch in (("one", 1, 4), ("two", 2, 2)):
        cfg = train_cfg()
        cfg["output_dir"] = str(tmp_path / name)
        cfg["training"].update(max_steps=6, per_device_train_batch_size=batch, logging_steps=1, save_steps=3)
        if procs == 1:
            run_training(cfg, quiet=True)
        else:
            path = tmp_path / f"{name}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                        "--master_port", str(29500 + os.getpid() % 1000)]
            proc = subprocess.run([*launcher, "-m", "difflora.cli.main", "train", str(path), "--quiet"],
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
        with open(tmp_path / name / "log_history.json") as f:
            curves[name] = [h["loss"] for h in json.load(f) if "loss" in h]
        adapters[name] = load_file(str(tmp_path / name / "adapter_model.safetensors"))
    assert len(curves["one"]) == 6
    assert curves["two"] == pytest.approx(curves["one"], rel=1e-4)
    for key, value in adapters["one"].items():
        torch.testing.assert_close(adapters["two"][key], value, atol=1e-5, rtol=1e-4, msg=key)
