"""The Trainer used for every method: transformers.Trainer plus lambda logging and a guard that
stops on a non-finite loss, lambda or parameter before a bad checkpoint can be written."""

from __future__ import annotations

import math

import torch
from transformers import Trainer

from ..errors import UserError
from ..introspection import difflora_layers, lambdas
from . import fsdp

# The log entry of one transformed layer's lambda, beside each training loss: "lambda/07" for layer 7.
LAMBDA_LOG_PREFIX = "lambda/"


def lambda_log_key(layer_idx: int) -> str:
    return f"{LAMBDA_LOG_PREFIX}{layer_idx:02d}"


def lambda_series(log_history: list[dict]) -> dict[int, list[tuple[int, float]]]:
    """layer index -> [(step, lambda)] at every logged training loss of a Trainer log history (as
    log_history.json holds it); empty for LoRA and full fine-tuning."""
    series: dict[int, list[tuple[int, float]]] = {}
    for entry in log_history:
        if "loss" in entry:
            for key, value in entry.items():
                if key.startswith(LAMBDA_LOG_PREFIX):
                    series.setdefault(int(key[len(LAMBDA_LOG_PREFIX):]), []).append((entry["step"], value))
    return series


class TrainingDivergedError(UserError):
    """The loss, a lambda or a trainable parameter became NaN/inf; the last good checkpoint is kept."""


class DiffLoRATrainer(Trainer):
    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        fsdp.promote_cpu_fsdp(self)  # CPU processes: Accelerate would silently drop FSDP (train/fsdp.py)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not getattr(self, "_sharding_checked", False):  # once, on the model Accelerate prepared
            self._sharding_checked = True
            if fsdp.fsdp_requested(self.args):
                fsdp.check_sharded(model)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            self._diverged(f"the loss became {loss.item()}", step=self.state.global_step + 1)  # the step in progress
        return loss

    def log(self, logs: dict, start_time=None) -> None:
        values = lambdas(self.model)
        if not all(math.isfinite(v) for v in values):
            self._diverged(f"a lambda became non-finite ({values})")
        if "loss" in logs:
            # One scalar per transformed layer beside each training loss, keyed by the layer index:
            # the console, TensorBoard and log_history.json get them through Trainer's own log path.
            for layer, value in zip(difflora_layers(self.model), values):
                logs[lambda_log_key(layer.layer_idx)] = round(value, 5)
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        # The optimizer step that produced a NaN runs after the step's loss was checked, so look at
        # the weights themselves: a checkpoint is only ever written from finite trainable parameters.
        bad = next((n for n, p in self.model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()),
                   None)
        if bad is not None:
            self._diverged(f"parameter {bad} became non-finite")
        super()._save_checkpoint(model, trial)

    def _diverged(self, what: str, step: int | None = None) -> None:
        from .checkpoints import latest_complete_checkpoint

        last = latest_complete_checkpoint(self.args.output_dir, set_aside=False)
        keep = f"the last good checkpoint is {last}" if last else "no checkpoint had been saved yet"
        raise TrainingDivergedError(
            f"training stopped at step {step or self.state.global_step}: {what}; {keep}. "
            "Lower training.learning_rate or use a fixed lambda (method.lambda_mode: fixed)."
        )
