"""The settings every evaluation task shares: one frozen object, built once (by the CLI from its
common options, or by the caller) and handed to each task's run() beside the task's own options."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalSettings:
    seed: int = 0                # seed of the generated samples (and lm-eval's seeds)
    batch_size: int = 8          # prompts per forward pass
    chat: bool | None = None     # wrap prompts in the chat template: None = when the tokenizer has one
    show_progress: bool = True   # a progress bar on stderr
    out_dir: str | None = None   # where results and plots go (None: results stay in memory only)
    device: str | None = None    # where models are loaded (None: cuda when available); tasks take loaded models
    dtype: str = "auto"          # the weights' dtype when loading ("auto": as saved)
