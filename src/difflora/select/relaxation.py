"""Continuous relaxation of the DAM: every candidate's adapter output is scaled by a learned
architecture weight a_i = sigmoid(logit_i) (DARTS with two operations per candidate, "adapter" and
"nothing": their two-way softmax is a sigmoid).

LoRA: the LoRA delta of module i becomes a_i * B A x * scaling (a forward hook on lora_B, whose
output the PEFT layer adds to the frozen result).
DiffLoRA: layer l's output becomes base + a_l * (difflora - base), where base is the plain
attention (module.base_layer called with the same arguments) and difflora the DiffLoRAAttention's
own output (a forward hook on that module; the tuner itself is not changed).

The hooks live outside the model's state, so save_pretrained / PEFT state dicts never see them;
remove() takes them off.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from peft import get_peft_model
from torch import nn

from .. import compat
from ..devices import device_of
from ..errors import UserError
from ..train.method_spec import MethodSpec
from .candidates import LORA_KINDS, Candidate, candidate_module, enumerate_candidates, lora_target_names

# method keys that describe the search space; the exported config replaces them with the selection
SEARCH_SPACE_KEYS = ("target_modules", "layers_to_transform", "layers_pattern")


class ArchitectureWeights(nn.Module):
    """The relaxed DAM: one logit per candidate, weight = sigmoid(logit) in (0, 1)."""

    def __init__(self, n_candidates: int, init_logit: float = 0.0):
        super().__init__()
        self.logits = nn.Parameter(torch.full((n_candidates,), float(init_logit)))
        self._fixed: torch.Tensor | None = None

    def forward(self) -> torch.Tensor:
        return self._fixed if self._fixed is not None else torch.sigmoid(self.logits)

    @contextlib.contextmanager
    def fixed(self, values):
        """Run forwards with the weights set to `values` (e.g. 0 for dropped candidates)."""
        self._fixed = torch.as_tensor(values, dtype=self.logits.dtype, device=self.logits.device)
        try:
            yield self
        finally:
            self._fixed = None


@dataclass
class SearchModel:
    model: nn.Module                 # PeftModel with an adapter on every candidate
    method: MethodSpec               # the method the search ran (search-space keys removed)
    candidates: list[Candidate]
    arch: ArchitectureWeights
    handles: list = field(default_factory=list)

    def remove_gates(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def build_search_model(base_model: nn.Module, method: MethodSpec, init_logit: float = 0.0) -> SearchModel:
    """Wrap every candidate of base_model (modified in place) with an adapter and a gate."""
    kind = method.type
    if kind == "lora":
        model, search_method = _lora_model(base_model, method)
    elif kind == "difflora":
        model, search_method = _difflora_model(base_model, method)
    else:
        raise UserError(f"DiffoRA selects modules for method.type lora or difflora, not '{kind}'")
    candidates = enumerate_candidates(model)
    arch = ArchitectureWeights(len(candidates), init_logit).to(device_of(model))
    attach = _attach_lora_gate if kind == "lora" else _attach_difflora_gate
    handles = [attach(candidate_module(model, c), c.index, arch) for c in candidates]
    return SearchModel(model, search_method, candidates, arch, handles)


# ------------------------------------------------------------------------------------------------
# building the all-candidates model


def _lora_model(base_model, method: MethodSpec):
    # the lora-8 defaults written out, so the exported config says what it trains
    fields = method.lora_fields()
    kinds = fields.get("target_modules") or LORA_KINDS
    if isinstance(kinds, str):
        raise UserError("for DiffoRA give method.target_modules as a list of module kinds (e.g. [q_proj, v_proj]), "
                        "not a regular expression")
    layers = _layer_list(fields.get("layers_to_transform"))
    search_method = MethodSpec("lora", None, {k: v for k, v in fields.items() if k not in SEARCH_SPACE_KEYS})
    names = lora_target_names(base_model, tuple(kinds), layers)
    with compat.quiet_peft_deprecations():
        model = get_peft_model(base_model, search_method.replace(target_modules=names).peft_config())
    return model, search_method


def _difflora_model(base_model, method: MethodSpec):
    search_method = method.replace(drop=SEARCH_SPACE_KEYS)
    layers = _layer_list(method.options.get("layers_to_transform"))
    config_method = search_method.replace(layers_to_transform=layers) if layers else search_method
    with compat.quiet_peft_deprecations():
        model = get_peft_model(base_model, config_method.peft_config())
    return model, search_method


def _layer_list(layers):
    if layers is None:
        return None
    return [layers] if isinstance(layers, int) else list(layers)


# ------------------------------------------------------------------------------------------------
# gates


def _attach_lora_gate(layer: nn.Module, index: int, arch: ArchitectureWeights):
    if getattr(layer, "lora_variant", None):
        raise UserError("DiffoRA relaxes plain LoRA: remove use_dora (and other LoRA variants) from method")
    adapter = layer.active_adapters[0]

    def scale_delta(_module, _inputs, output):
        # the gate lives on the first device; a model spread by a device_map computes this layer elsewhere
        return output * arch()[index].to(device=output.device, dtype=output.dtype)

    # The PEFT layer computes result + lora_B(lora_A(x)) * scaling: scaling lora_B's output scales the delta.
    return layer.lora_B[adapter].register_forward_hook(scale_delta)


def _attach_difflora_gate(layer: nn.Module, index: int, arch: ArchitectureWeights):
    def mix_with_base(module, args, kwargs, output):
        if module.disable_adapters or module._active() is None:
            return output
        if any(kwargs.get(name) is not None for name in compat.CACHE_KWARGS):
            raise RuntimeError("the DiffoRA relaxation recomputes the plain attention and cannot share a KV cache: "
                               "run the search model with use_cache=False")
        base = module.base_layer(*args, **kwargs)[0]
        weight = arch()[index].to(device=base.device, dtype=base.dtype)
        return (base + weight * (output[0] - base), *output[1:])

    return layer.register_forward_hook(mix_with_base, with_kwargs=True)

