"""Writing a selection out: the kept adapters with the weights they learned during the search
(weight sharing) as a PEFT adapter folder, and the method as a training config `difflora train` runs.

Folding the architecture weights in (what "the exported adapter reproduces the search model" means):
the exported model computes exactly what the search model computes with every dropped candidate's
weight set to 0 and every kept candidate's weight set to `equivalent_gates(...)`:
  LoRA:      a_i, folded exactly as lora_B <- a_i * lora_B (the delta is linear in B).
  DiffLoRA:  the layer's change over the plain attention is -lambda * o_proj(softmax(Q2 K2) V) when it
             has no positive adapter, GroupNorm or rescale, so a_l folds exactly into lambda:
             lambda <- a_l * lambda. PEFT configs hold one fixed lambda for all layers, so this needs
             lambda_mode "learned" (each layer's lambda is a parameter). Otherwise nothing is folded
             and the kept layers' weights stand at 1 (DARTS' discretisation: the mixed operation is
             replaced by the chosen one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import yaml
from peft import get_peft_model
from torch import nn

from .. import compat
from ..train.method_spec import MethodSpec
from .candidates import Candidate, adapter_submodules, candidate_module
from .relaxation import SearchModel

ADAPTER = "default"


@dataclass
class Inherited:
    """What the kept candidates learned during the search, on the CPU (the search model can go)."""

    weights: dict[str, dict[str, dict[str, torch.Tensor]]]  # module name -> adapter part -> state dict
    gates: dict[str, float]                                  # module name -> final architecture weight


def inherit(search: SearchModel, kept: list[Candidate]) -> Inherited:
    gates = search.arch().detach().float().cpu()
    weights, kept_gates = {}, {}
    for candidate in kept:
        parts = adapter_submodules(candidate_module(search.model, candidate), ADAPTER)
        weights[candidate.module_name] = {
            name: {k: v.detach().cpu().clone() for k, v in part.state_dict().items()} for name, part in parts.items()
        }
        kept_gates[candidate.module_name] = float(gates[candidate.index])
    return Inherited(weights, kept_gates)


def export_method(search_method: MethodSpec, kept: list[Candidate]) -> MethodSpec:
    """The method of the selected configuration."""
    if search_method.type == "lora":
        return search_method.replace(target_modules=[c.module_name for c in kept])
    return search_method.replace(layers_to_transform=sorted({c.layer for c in kept}))


def build_exported_model(base_model: nn.Module, method: MethodSpec, kept: list[Candidate],
                         inherited: Inherited):
    """A PeftModel of the selected configuration on base_model (modified in place), holding the
    inherited weights with the architecture weights folded in where exact. Returns (model, folded)."""
    with compat.quiet_peft_deprecations():
        model = get_peft_model(base_model, method.peft_config())
    for candidate in kept:
        parts = adapter_submodules(candidate_module(model, candidate), ADAPTER)
        saved = inherited.weights[candidate.module_name]
        if set(parts) != set(saved):
            raise RuntimeError(f"{candidate.module_name}: the exported adapter has parts {sorted(parts)}, "
                               f"the search had {sorted(saved)}")
        for name, part in parts.items():
            part.load_state_dict(saved[name])
    folded = all(_fold(candidate_module(model, c), method.type, inherited.gates[c.module_name]) for c in kept)
    return model, folded


def equivalent_gates(candidates: list[Candidate], kept: list[Candidate], inherited: Inherited,
                     folded: bool) -> list[float]:
    """The architecture weights under which the search model equals the exported model."""
    kept_names = {c.module_name for c in kept}
    return [(inherited.gates[c.module_name] if folded else 1.0) if c.module_name in kept_names else 0.0
            for c in candidates]


def can_fold(module: nn.Module, method_type: str) -> bool:
    if method_type == "lora":
        return True
    settings = module.settings[ADAPTER]
    return (settings.lambda_mode == "learned" and not settings.has_positive
            and not settings.group_norm and not settings.rescale)


def _fold(module: nn.Module, method_type: str, gate: float) -> bool:
    if not can_fold(module, method_type):
        return False
    with torch.no_grad():
        if method_type == "lora":
            module.lora_B[ADAPTER].weight.mul_(gate)
        else:
            module.difflora_lambda[ADAPTER].rescale_(gate)
    return True


def save_adapter(model, tokenizer, path: str) -> str:
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)  # so the folder works as a model spec on its own
    return path


def write_train_config(train_config: dict, method: MethodSpec, out_dir: str, adapter_dir: str,
                       note: str) -> str:
    """The selected configuration as a `difflora train` config (output_dir: OUT/train)."""
    config = {**train_config, "method": method.as_dict(), "output_dir": os.path.join(out_dir, "train"),
              "init_from": adapter_dir}
    path = os.path.join(out_dir, "train_config.yaml")
    header = (f"# DiffoRA selection: {note}\n"
              f"# The adapters kept here start from the weights they learned during the search (init_from:\n"
              "# weight sharing); delete the init_from line to start them from their usual initialisation.\n")
    with open(path, "w") as f:
        f.write(header)
        yaml.safe_dump(config, f, sort_keys=False)
    return path
