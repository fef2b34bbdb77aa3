"""Finding the checkpoint to resume from.

Trainer writes a checkpoint's files one after another and trainer_state.json last, so a process
killed mid-save leaves a folder without a readable trainer_state.json. A checkpoint can also be
damaged after it was written (a full disk, a copy cut short): a truncated safetensors or torch
file, a JSON file that does not parse. Both kinds are set aside (renamed *.incomplete, with a
one-line notice) and the run resumes from the newest checkpoint whose files all load: nothing
already completed is lost, and a damaged checkpoint is never loaded.
"""

from __future__ import annotations

import json
import os
import re
import zipfile

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def damage(path: str) -> str | None:
    """None for a checkpoint that can be resumed, else what is wrong with it, in a few words.

    trainer_state.json is the last file Trainer writes into a checkpoint (after the adapter or
    model, optimizer, scheduler and RNG state, whatever their names under DDP/FSDP/DeepSpeed): it
    must be there, parse, and name the folder's step. Every other file at the folder's top level
    is checked without loading its tensors: JSON parses, a safetensors file is as long as its
    header says, a torch zip archive has its central directory (which is written last)."""
    step = int(_CHECKPOINT.match(os.path.basename(path)).group(1))
    try:
        with open(os.path.join(path, "trainer_state.json")) as f:
            if json.load(f).get("global_step") != step:
                return "trainer_state.json names another step"
    except (OSError, ValueError, AttributeError):
        return "trainer_state.json is missing or incomplete (killed while saving)"
    for name in sorted(os.listdir(path)):
        file = os.path.join(path, name)
        if os.path.isfile(file) and (problem := _file_damage(file)):
            return f"{name} {problem}"
    return None


def _file_damage(path: str) -> str | None:
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                json.load(f)
        elif path.endswith(".safetensors"):
            return _safetensors_damage(path)
        elif path.endswith((".pt", ".pth", ".bin")):
            return _torch_zip_damage(path)
    except (OSError, ValueError) as exc:
        return f"does not load ({type(exc).__name__})"
    return None


def _safetensors_damage(path: str) -> str | None:
    """The format: 8-byte little-endian header length, a JSON header with each tensor's byte
    range, then the data; a truncated file is shorter than the largest range's end."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return "is truncated (no header)"
        n = int.from_bytes(prefix, "little")
        if n > size - 8:
            return f"is truncated ({size} bytes, header alone says {n + 8})"
        header = json.loads(f.read(n))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size < 8 + n + end:
        return f"is truncated ({size} of {8 + n + end} bytes)"
    return None


def _torch_zip_damage(path: str) -> str | None:
    """torch.save writes a zip archive whose directory comes last: a cut file has none. (Files
    of the older pickle format are not checked.)"""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return None
    try:
        with zipfile.ZipFile(path):
            return None
    except zipfile.BadZipFile:
        return "is truncated (its zip directory is missing)"


def latest_complete_checkpoint(output_dir: str, set_aside: bool = True, notify=None) -> str | None:
    """The newest checkpoint-N folder that can be resumed, or None. With set_aside, newer
    incomplete or damaged ones are renamed checkpoint-N.incomplete so that Trainer never picks
    them up, and notify (a callable taking one line) is told about each."""
    if not os.path.isdir(output_dir):
        return None
    found = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.match(name))),
        reverse=True,
    )
    for _, name in found:
        path = os.path.join(output_dir, name)
        problem = damage(path)
        if problem is None:
            return path
        if set_aside:
            _set_aside(path)
            if notify:
                notify(f"{name} cannot be resumed ({problem}): set aside as {name}.incomplete")
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
