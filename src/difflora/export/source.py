"""Reading what `difflora export` is given: a DiffLoRA adapter folder (and its base model)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from ..loading import ModelSpec, adapter_base, read_adapter_config


def read_adapter(adapter_dir: str | os.PathLike, base: str | None = None) -> tuple[ModelSpec, dict]:
    """The base+adapter spec to load and the adapter's config, or a one-line error when the folder
    is not a DiffLoRA adapter."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise UserError(f"'{path}' is not a folder: give a DiffLoRA adapter folder (from save_pretrained or "
                        "difflora train)")
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"'{path}' is not a DiffLoRA adapter folder: it has no adapter_config.json")
    config = read_adapter_config(str(path))
    peft_type = config.get("peft_type")
    if peft_type != "DIFFLORA":
        raise UserError(f"'{path}' holds a {peft_type or 'non-PEFT'} adapter, not a DiffLoRA one: export writes "
                        "DiffLoRA models (a LoRA adapter merges into a plain model with peft's merge_and_unload)")
    base = base or adapter_base(str(path), "pass it with --base")
    return ModelSpec(str(base), str(path)), config


def tokenizer_folder(spec: ModelSpec) -> Path | None:
    """The local folder whose tokenizer files the export copies: the adapter's (difflora train saves
    one there, with its chat template), else the base's, else None (then the loaded tokenizer is saved)."""
    for folder in (spec.adapter, spec.base):
        if folder and os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
            return Path(folder)
    return None
