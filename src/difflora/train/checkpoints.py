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


def is_complete(path: str) -> bool:
    """trainer_state.json is the last file Trainer writes into a checkpoint (after the adapter or
    model, optimizer, scheduler and RNG state, whatever their names under DDP/FSDP/DeepSpeed): a
    checkpoint is complete when it is there, parses, and names the folder's step."""
    step = int(_CHECKPOINT.match(os.path.basename(path)).group(1))
    try:
        with open(os.path.join(path, "trainer_state.json")) as f:
            return json.load(f).get("global_step") == step
    except (OSError, ValueError, AttributeError):
        return False


def latest_complete_checkpoint(output_dir: str, set_aside: bool = True) -> str | None:
    """The newest complete checkpoint-N folder, or None. With set_aside, newer incomplete ones are
    renamed checkpoint-N.incomplete so that Trainer never picks them up."""
    if not os.path.isdir(output_dir):
        return None
    found = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.match(name))),
        reverse=True,
    )
    for _, name in found:
        path = os.path.join(output_dir, name)
        if is_complete(path):
            return path
        if set_aside:
            _set_aside(path)
    return None


def _set_aside(path: str) -> None:
    target = path + ".incomplete"
    if os.path.exists(target):  # an earlier interrupted attempt at the same step
        import shutil

        shutil.rmtree(target)
    try:
        os.replace(path, target)
    except FileNotFoundError:  # another process of the same run set it aside first
        pass
