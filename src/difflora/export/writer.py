"""Writing the exported folder: config.json with auto_map, the standalone source files, weights
(safetensors), tokenizer files and the model card. Written to a hidden sibling folder and renamed
into place at the end, so an interrupted export never leaves a half-written OUT."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .standalone import modeling_difflora
from .standalone.configuration_difflora import call_heads
from .weights import StandaloneWeights

SOURCE_FILES = ("configuration_difflora.py", "modeling_difflora.py")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "chat_template.jinja",
                   "chat_template.json")
# Base config entries that describe the base class, not the exported one.
BASE_ONLY_CONFIG_KEYS = ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path")


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """OUT must be a new or empty folder (checked before any model is loaded)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"'{out}' is a file: give a new or empty folder for the exported model")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"'{out}' is not empty: give a new or empty folder for the exported model")
    if not out.parent.is_dir():
        raise UserError(f"'{out.parent}' does not exist: create it, or give OUT inside an existing folder")
    return out


def standalone_model(hf_model: nn.Module, weights: StandaloneWeights) -> nn.Module:
    """The exported class with the exported weights, sharing the tensors that need no change (no copy
    of the base weights: it is built on the meta device and given the tensors)."""
    cls = modeling_difflora.CAUSAL_LM_CLASSES.get(weights.family)
    if cls is None:
        raise UserError(f"difflora export cannot write model type '{weights.family}' yet: it writes "
                        f"{', '.join(sorted(modeling_difflora.CAUSAL_LM_CLASSES))}")
    base_config = {k: v for k, v in hf_model.config.to_dict().items() if k not in BASE_ONLY_CONFIG_KEYS}
    # The head counts of the one attention call per layer (serving engines size their cache by them);
    # the base's stay in the difflora entry.
    heads, kv_heads = call_heads(weights.section)
    config = cls.config_class.from_dict({**base_config, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                                         "head_dim": weights.head_dim, "difflora": weights.section})
    config.auto_map = {  # AutoModel: what vLLM's and SGLang's transformers backends instantiate
        "AutoConfig": f"configuration_difflora.{cls.config_class.__name__}",
        "AutoModel": f"modeling_difflora.{cls.model_class.__name__}",
        "AutoModelForCausalLM": f"modeling_difflora.{cls.__name__}",
    }
    with torch.device("meta"):
        model = cls(config)
    model.load_state_dict(weights.state_dict, strict=True, assign=True)
    model.generation_config = copy.deepcopy(hf_model.generation_config)
    return model


def write_folder(out: Path, model: nn.Module, card: str, tokenizer_source) -> None:
    """tokenizer_source: a local folder whose tokenizer files are copied, a tokenizer object to
    save, or None."""
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(partial)
        here = Path(modeling_difflora.__file__).parent
        for name in SOURCE_FILES:
            shutil.copyfile(here / name, partial / name)
        _write_tokenizer(partial, tokenizer_source)
        (partial / "README.md").write_text(card)
        if out.is_dir():
            out.rmdir()  # empty (check_out_dir)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _write_tokenizer(folder: Path, source) -> None:
    if source is None:
        return
    if isinstance(source, (str, os.PathLike)):
        for name in TOKENIZER_FILES:
            if (Path(source) / name).is_file():
                shutil.copyfile(Path(source) / name, folder / name)
    else:
        source.save_pretrained(folder)
