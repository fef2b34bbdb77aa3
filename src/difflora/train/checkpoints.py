"""Finding the checkpoint to resume from.

Trainer writes a checkpoint's files one after another and trainer_state.json last, so a process
killed mid-save leaves a folder without a readable trainer_state.json. Such folders are set aside
(renamed *.incomplete) and the run resumes from the newest complete one: nothing already
completed is lost, and a half-written checkpoint is never loaded.
"""

from __future__ import annotations

import json
import os
import re

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
REQUIRED = ("trainer_state.json", "adapter_config.json", "optimizer.pt", "scheduler.pt")


def is_complete(path: str, full_model: bool = False) -> bool:
    required = [r for r in REQUIRED if not (full_model and r == "adapter_config.json")]
    if not all(os.path.isfile(os.path.join(path, r)) for r in required):
        return False
    try:
        with open(os.path.join(path, "trainer_state.json")) as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return True


def latest_complete_checkpoint(output_dir: str, full_model: bool = False) -> str | None:
    if not os.path.isdir(output_dir):
        return None
    found = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.match(name))),
        reverse=True,
    )
    for _, name in found:
        path = os.path.join(output_dir, name)
        if is_complete(path, full_model):
            return path
        os.replace(path, path + ".incomplete")
    return None
