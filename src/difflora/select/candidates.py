"""The candidate modules a DiffoRA search chooses among, and what each one costs.

LoRA: every decoder layer x {q, k, v, o, gate, up, down}_proj (a candidate is one LoRA-wrapped Linear).
DiffLoRA: every decoder layer's self-attention (a candidate is one DiffLoRAAttention).
A candidate's cost is the number of adapter parameters it adds, counted on the built model, so
ranks, GQA shapes, positive adapters and learned lambdas are all counted as they really are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from peft.tuners.lora import LoraLayer
from torch import nn

from ..errors import UserError
from ..tuner.layer import DiffLoRAAttention

LORA_KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DIFFLORA_KIND = "attn"
_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class Candidate:
    index: int          # position in the DAM's flat vector
    layer: int          # decoder layer index
    kind: str           # q_proj ... down_proj, or "attn" (DiffLoRA)
    module_name: str    # path of the adapted module inside the base model (model.layers.3.self_attn.q_proj)
    params: int         # adapter parameters this candidate adds

    @property
    def label(self) -> str:
        return f"L{self.layer}.{self.kind}"


def layer_of(module_name: str) -> int | None:
    match = _LAYER_INDEX.search(module_name + ".")
    return int(match.group(1)) if match else None


def lora_target_names(base_model: nn.Module, kinds=LORA_KINDS, layers=None) -> list[str]:
    """Exact names of the Linear modules of the decoder layers that LoRA candidates wrap."""
    unknown = set(kinds) - set(LORA_KINDS)
    if unknown:
        raise UserError(f"DiffoRA LoRA candidates are {', '.join(LORA_KINDS)}; target_modules names {sorted(unknown)}")
    names = []
    for name, module in base_model.named_modules():
        layer = layer_of(name)
        if layer is None or name.rsplit(".", 1)[-1] not in kinds or not isinstance(module, nn.Linear):
            continue
        if layers is None or layer in layers:
            names.append(name)
    if not names:
        raise UserError("no candidate modules found: the model has no decoder layers with "
                        f"{', '.join(kinds)} Linear modules (DiffoRA supports Llama-family models)")
    return names


def enumerate_candidates(peft_model: nn.Module, adapter_name: str = "default") -> list[Candidate]:
    """Every adapted module of a search model (LoRA layers or DiffLoRA attentions), in layer order
    and, within a layer, in LORA_KINDS order."""
    found = []
    for name, module in _base(peft_model).named_modules():
        if isinstance(module, (LoraLayer, DiffLoRAAttention)):
            kind = DIFFLORA_KIND if isinstance(module, DiffLoRAAttention) else name.rsplit(".", 1)[-1]
            found.append((layer_of(name), _kind_order(kind), kind, name, adapter_param_count(module, adapter_name)))
    found.sort()
    return [Candidate(i, layer, kind, name, params) for i, (layer, _, kind, name, params) in enumerate(found)]


def candidate_module(peft_model: nn.Module, candidate: Candidate) -> nn.Module:
    return _base(peft_model).get_submodule(candidate.module_name)


def adapter_submodules(module: nn.Module, adapter_name: str = "default") -> dict[str, nn.Module]:
    """The adapter's own submodules on one tuner layer (lora_A/lora_B, or difflora_q2/k2/...)."""
    out = {}
    for attr in module.adapter_layer_names:
        container = getattr(module, attr)
        if isinstance(container, nn.ModuleDict) and adapter_name in container:
            out[attr] = container[adapter_name]
    return out


def adapter_param_count(module: nn.Module, adapter_name: str = "default") -> int:
    return sum(p.numel() for sub in adapter_submodules(module, adapter_name).values() for p in sub.parameters())


def _kind_order(kind: str) -> int:
    return LORA_KINDS.index(kind) if kind in LORA_KINDS else len(LORA_KINDS)


def _base(peft_model: nn.Module) -> nn.Module:
    """The transformers model inside a PeftModel (module names as the base model has them)."""
    return peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
