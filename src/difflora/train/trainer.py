"""The Trainer used for every method: transformers.Trainer plus lambda logging and a guard that
stops on a non-finite loss or lambda."""

from __future__ import annotations

import math

import torch
from transformers import Trainer

from ..errors import UserError
from ..inspect import lambdas


class TrainingDivergedError(UserError):
    """The loss or a lambda became NaN/inf; the last good checkpoint is kept."""


class DiffLoRATrainer(Trainer):
    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            self._diverged(f"the loss became {loss.item()}")
        return loss

    def log(self, logs: dict, start_time=None) -> None:
        values = lambdas(self.model)
        for i, value in enumerate(values):
            logs[f"lambda/{i:02d}"] = round(value, 5)
        if values and not all(math.isfinite(v) for v in values):
            self._diverged(f"a lambda became non-finite ({values})")
        super().log(logs, start_time)

    def _diverged(self, what: str) -> None:
        from .checkpoints import latest_complete_checkpoint

        last = latest_complete_checkpoint(self.args.output_dir)
        keep = f"the last good checkpoint is {last}" if last else "no checkpoint had been saved yet"
        raise TrainingDivergedError(
            f"training stopped at step {self.state.global_step}: {what}; {keep}. "
            "Lower training.learning_rate or use a fixed lambda (method.lambda_mode: fixed)."
        )
