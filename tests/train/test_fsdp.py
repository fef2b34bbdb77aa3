"""Sharded training: `difflora train` with training.fsdp under torchrun (2 CPU processes, gloo, FSDP2)
gives the single-process loss at every step and the same adapter (gathered to rank 0 for saving),
and resumes from a sharded checkpoint; settings that would train unsharded are refused."""

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from difflora.errors import UserError
from difflora.testing import tiny_model
from difflora.train import run_training
from difflora.train.fsdp import check_fsdp_arguments, check_sharded

FSDP = {"fsdp": True, "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}}
TOLERANCE = 1e-5


def _losses(output_dir):
    with open(os.path.join(output_dir, "log_history.json")) as f:
        return [h["loss"] for h in json.load(f) if "loss" in h]


def _torchrun(cfg, tmp_path, *extra):
    path = tmp_path / "fsdp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(29500 + os.getpid() % 1000)]
    proc = subprocess.run([*launcher, "-m", "difflora.cli.main", "train", str(path), "--quiet", *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow  # 63 s measured on the shared 2-core machine (3 training runs, 2 of them torchrun x 2)
def test_two_process_fsdp_matches_one_process_and_resumes_from_a_sharded_checkpoint(train_cfg, tmp_path):
    # learned lambda, GroupNorm and positive adapters: every kind of DiffLoRA weight is sharded
    cfg = train_cfg(type="difflora", preset="difflora-32-gn", r=8, positive_r=8)
    cfg["training"].update(max_steps=4, save_steps=2, logging_steps=1)
    one = dict(cfg, output_dir=str(tmp_path / "one"), training=dict(cfg["training"], per_device_train_batch_size=4))
    run_training(one, quiet=True)
    two = dict(cfg, output_dir=str(tmp_path / "two"),
               training=dict(cfg["training"], per_device_train_batch_size=2, **FSDP))
    _torchrun(two, tmp_path)

    # the sharded code path ran: Accelerate's FSDP checkpoint format, not a plain model's
    assert os.path.isfile(tmp_path / "two" / "checkpoint-2" / "pytorch_model_fsdp.bin")
    reference, sharded = _losses(one["output_dir"]), _losses(two["output_dir"])
    assert len(reference) == 4
    assert max(abs(a - b) for a, b in zip(reference, sharded, strict=True)) <= TOLERANCE, (reference, sharded)
    expected = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    adapter = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert adapter.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(adapter[key], value, atol=TOLERANCE, rtol=0, msg=key)

    # interrupted after step 2: resume the sharded checkpoint-2 and end with the same adapter
    out = tmp_path / "two"
    shutil.rmtree(out / "checkpoint-4")
    for name in ("training_complete.json", "log_history.json", "adapter_model.safetensors"):
        os.remove(out / name)
    _torchrun(two, tmp_path, "--resume")
    assert max(abs(a - b) for a, b in zip(_losses(out)[-2:], reference[2:], strict=True)) <= TOLERANCE
    resumed = load_file(str(out / "adapter_model.safetensors"))
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, atol=TOLERANCE, rtol=0, msg=key)


def test_fsdp_in_a_single_process_is_refused(train_cfg):
    cfg = train_cfg()
    cfg["training"].update(FSDP)
    with pytest.raises(UserError, match="single process") as err:
        run_training(cfg, quiet=True)
    assert "\n" not in str(err.value)
    assert not os.path.exists(cfg["output_dir"]), "refused before anything was written"


def test_accelerate_fsdp_config_in_a_single_process_is_refused(train_cfg, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --config_file fsdp.yaml` sets
    with pytest.raises(UserError, match="single process"):
        run_training(train_cfg(), quiet=True)


def test_fsdp1_on_cpu_is_refused():
    args = SimpleNamespace(fsdp_plugin_args={"fsdp_version": 1}, world_size=2, device=torch.device("cpu"))
    with pytest.raises(UserError, match="version 1 does not run on CPU"):
        check_fsdp_arguments(args)
    with pytest.raises(UserError, match="must be 2"):
        check_fsdp_arguments(SimpleNamespace(fsdp_plugin_args={"fsdp_version": 3}, world_size=2,
                                             device=torch.device("cpu")))
    check_fsdp_arguments(SimpleNamespace(fsdp_plugin_args={"fsdp_version": 2}, world_size=2,
                                         device=torch.device("cpu")))


def test_an_unsharded_model_under_fsdp_is_refused():
    with pytest.raises(UserError, match="was not sharded"):
        check_sharded(tiny_model("llama"))
