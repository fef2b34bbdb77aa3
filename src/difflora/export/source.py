"""Reading what `difflora export` is given: a DiffLoRA adapter folder (and its base model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError
from ..models import ModelSpec


def read_adapter(adapter_dir: str | os.PathLike, base: str | None = None) -> tuple[ModelSpec, dict]:
    """The base+adapter spec to load and the adapter's config, or a one-line error when the folder
    is not a DiffLoRA adapter."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise UserError(f"'{path}' is not a folder: give a DiffLoRA adapter folder (from save_pretrained or "
                        "difflora train)")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"'{path}' is not a DiffLoRA adapter folder: it has no adapter_config.json")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"'{config_file}' is not valid JSON ({exc}): re-save the adapter") from exc
    peft_type = config.get("peft_type") if isinstance(config, dict) else None
    if peft_type != "DIFFLORA":
        raise UserError(f"'{path}' holds a {peft_type or 'non-PEFT'} adapter, not a DiffLoRA one: export writes "
                        "DiffLoRA models (a LoRA adapter merges into a plain model with peft's merge_and_unload)")
    base = base or config.get("base_model_name_or_path")
    if not base:
        raise UserError(f"'{config_file}' does not name its base model: pass it with --base")
    return ModelSpec(str(base), str(path)), config


def tokenizer_folder(spec: ModelSpec) -> Path | None:
    """The local folder whose tokenizer files the export copies: the adapter's (difflora train saves
    one there, with its chat template), else the base's, else None (then the loaded tokenizer is saved)."""
    for folder in (spec.adapter, spec.base):
        if folder and os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
            return Path(folder)
    return None
