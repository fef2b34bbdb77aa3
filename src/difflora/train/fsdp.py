"""Sharded training (FSDP) through transformers.Trainer and Accelerate, and the refusals that keep it
from silently training unsharded.

FSDP is asked for with `training.fsdp: true` (+ `training.fsdp_config`, FSDP2 by default), or by
`accelerate launch --config_file configs/accelerate/fsdp.yaml` (which sets ACCELERATE_USE_FSDP).
Measured with transformers 5.23/5.24 and accelerate 1.15:
  * one process: Accelerate drops the FSDP plugin and trains a plain model -> refused here;
  * several CPU processes (torchrun, gloo): Accelerate classifies the run as MULTI_CPU, which only
    knows DDP, and drops the plugin without a word. Its FSDP2 code (fully_shard over a CPU mesh,
    full-state-dict gathering for saving, sharded optimizer state) runs fine on CPU, so the state
    is promoted to FSDP before the model is prepared (promote_cpu_fsdp): the CPU run takes the very
    code path a GPU run takes;
  * FSDP1 on CPU needs device_id=cpu, which Accelerate's FSDP1 wrapper does not pass -> refused;
  * and whatever the route, the first training step checks that the trainable weights really are
    sharded (DTensors), so any other fallback stops the run instead of training unsharded.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import UserError


def fsdp_requested(args) -> bool:
    """training.fsdp in the config, or an `accelerate launch` FSDP config (ACCELERATE_USE_FSDP)."""
    return args.fsdp_plugin_args is not None or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_fsdp_arguments(args) -> None:
    """Refuse, before any model is loaded, an FSDP setting that would train unsharded or not at all."""
    if not fsdp_requested(args):
        return
    if args.world_size < 2:
        raise UserError(
            "training.fsdp shards the model across processes, but this is a single process (it would train "
            "unsharded): launch with `python -m torch.distributed.run --nproc_per_node N -m difflora.cli.main train "
            "CONFIG` (CPU or GPU) or `accelerate launch --config_file configs/accelerate/fsdp.yaml ...` (GPUs)")
    version = (args.fsdp_plugin_args or {}).get("fsdp_version", int(os.environ.get("FSDP_VERSION", "2")))
    if version not in (1, 2):
        raise UserError(f"training.fsdp_config.version must be 2 (FSDP2) or 1 (FSDP1, deprecated), got {version}")
    if args.device.type == "cpu" and version != 2:
        raise UserError(f"training.fsdp_config.version {version} does not run on CPU (FSDP1 needs a device_id "
                        "Accelerate does not pass there): use version 2 (FSDP2, the default)")


def promote_cpu_fsdp(trainer) -> None:
    """Make Accelerate's FSDP code path run for a multi-process CPU run it classified as MULTI_CPU
    (where it silently ignores the FSDP plugin). Called right after the Accelerator is created."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if not fsdp_requested(trainer.args) or state.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin_args = trainer.args.fsdp_plugin_args
    plugin = FullyShardedDataParallelPlugin(**plugin_args) if plugin_args else FullyShardedDataParallelPlugin()
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    # AcceleratorState copies PartialState's fields each time it is constructed (Accelerate does so
    # internally), so the distributed type has to change in both shared states.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    trainer.is_fsdp_enabled = True


def check_sharded(model: nn.Module) -> None:
    """After Accelerate prepared the model: FSDP was asked for, so the trainable weights must be
    sharded; anything else would be a silent fallback to unsharded training."""
    from torch.distributed.tensor import DTensor

    trainable = [p for p in model.parameters() if p.requires_grad]
    if trainable and not all(isinstance(p, DTensor) for p in trainable):
        import accelerate
        import transformers

        raise UserError(
            "FSDP was asked for but the model was not sharded (this transformers "
            f"{transformers.__version__} / accelerate {accelerate.__version__} / torch {torch.__version__} set-up "
            "fell back to unsharded training): drop training.fsdp, or use FSDP2 with several processes")
