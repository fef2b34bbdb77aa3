"""`difflora export`: a DiffLoRA adapter as a self-contained transformers model folder.

    difflora.export_standalone("runs/difflora-64", "exported/")      # or a PeftModel
    AutoModelForCausalLM.from_pretrained("exported/", trust_remote_code=True)   # no difflora, no peft

source.py reads the adapter folder, weights.py turns the PeftModel into plain weights (what is folded
and why is explained there), standalone/ holds the modeling and configuration files shipped beside the
weights, writer.py writes the folder and card.py its README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .. import compat
from ..introspection import difflora_layers
from .card import model_card
from .source import read_adapter, tokenizer_folder
from .weights import standalone_weights
from .writer import check_out_dir, standalone_model, write_folder


def export_standalone(source: str | os.PathLike | nn.Module, out_dir: str | os.PathLike, *, base: str | None = None,
                      dtype: str = "auto", tokenizer=None, device: str | None = None) -> Path:
    """Write the model `source` (a DiffLoRA adapter folder, or a PeftModel with an active DiffLoRA
    adapter) to the new or empty folder `out_dir`; returns its path.

    base: the base model for an adapter folder (default: the one its adapter_config.json names).
    dtype: the dtype the base is loaded in for an adapter folder ("auto": the checkpoint's own).
    tokenizer: a tokenizer (object or folder) to ship; default: the adapter folder's, else the base's.
    device: where an adapter folder's model is loaded to fold the weights (default: the CPU).
    """
    from .. import __version__
    from ..loading import load_model

    out = check_out_dir(out_dir)
    if isinstance(source, (str, os.PathLike)):
        spec, _ = read_adapter(source, base)
        model, loaded_tokenizer = load_model(spec, dtype=dtype, device=device)
        tokenizer = tokenizer or tokenizer_folder(spec) or loaded_tokenizer
        base_name, source_name = spec.base, spec.adapter
    else:
        model = source
        base_name = getattr(compat.pretrained_model(model), "name_or_path", "") or "(in-memory model)"
        source_name = "(in-memory PeftModel)"
        if tokenizer is None and os.path.isdir(base_name):
            tokenizer = tokenizer_folder(_spec(base_name))
    weights = standalone_weights(model)
    standalone = standalone_model(compat.pretrained_model(model), weights)
    card = model_card(base=base_name, source=source_name, config=model.peft_config[weights.adapter_name],
                      section=weights.section, lambdas=_lambda_summary(model, weights.adapter_name),
                      difflora_version=__version__, class_name=type(standalone).__name__)
    write_folder(out, standalone, card, tokenizer)
    return out


def _spec(base: str):
    from ..loading import ModelSpec

    return ModelSpec(base)


def _lambda_summary(model: nn.Module, adapter: str) -> list[str]:
    out = []
    for layer in difflora_layers(model):
        if adapter not in layer.settings:
            continue
        if layer.settings[adapter].lambda_mode == "token":
            out.append("per token: sigmoid(w_h . x + b_h)")
        else:
            with torch.no_grad():
                out.append(f"{float(layer.current_lambda(adapter)):.4f}")
    return out


__all__ = ["export_standalone"]
