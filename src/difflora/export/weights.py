"""From a DiffLoRA PeftModel to the weights and the `difflora` config entry of the standalone model.

What is folded and what stays a weight:
  * positive adapters (Q1/K1 LoRA) are added into q_proj/k_proj: Q1 = (W_Q + s B1 A1) x is exactly a
    plain projection;
  * the negative projections stay LOW-RANK factors (q2_proj.A/B, k2_proj.A/B, the alpha/r scale put
    into B): r (in + out) numbers instead of in x out, and the same two small matmuls the adapter ran.
    In the Shared-DIFF form Q2 = W_Q x + s2 B2 A2 x uses the *pretrained* W_Q, so once q_proj holds
    W_Q + s1 B1 A1 the negative factors also carry -s1 B1 A1: A = [A2; A1], B = [s2 B2, -s1 B1]
    (rank r + positive_r), which keeps Q2 exact without a second dense copy of W_Q;
  * lambda: a fixed value goes into the config (per layer), learned lambda keeps its four vectors,
    a per-token lambda its w/b (a Linear); the GroupNorm weight is an ordinary weight.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from .. import compat
from ..errors import UserError
from ..introspection import difflora_layers
from ..tuner.layer import DiffLoRAAttention, LayerSettings
from .standalone.configuration_difflora import FORMAT

# LayerSettings fields this exporter reproduces; a new field means a new form it must learn first.
KNOWN_SETTINGS = {"lambda_mode", "lambda_init", "negative_base", "shared_keys", "group_norm", "rescale",
                  "has_positive"}


@dataclass
class StandaloneWeights:
    family: str  # the base model_type (a key of compat.FAMILIES)
    section: dict  # config.difflora of the exported model
    state_dict: dict[str, torch.Tensor]
    adapter_name: str
    head_dim: int  # the base's (config.json states it: serving engines size their cache by it)


def standalone_weights(peft_model: nn.Module) -> StandaloneWeights:
    hf_model = compat.pretrained_model(peft_model)
    family = compat.model_type_of(hf_model)
    compat.family_of(family)
    adapter = _active_adapter(peft_model)
    layers = [layer for layer in difflora_layers(peft_model) if adapter in layer.settings]
    settings = [layer.settings[adapter] for layer in layers]
    _check_settings(settings)
    names = {module: name for name, module in hf_model.named_modules()}
    state = _plain_state_dict(hf_model, adapter)
    for layer in layers:
        state.update(_layer_weights(layer, adapter, names[layer]))
    first = settings[0]
    heads = hf_model.config.num_attention_heads
    section = {
        "format": FORMAT,
        "layers": [layer.layer_idx for layer in layers],
        "attention_heads": heads,
        "key_value_heads": getattr(hf_model.config, "num_key_value_heads", None) or heads,
        "negative_base": first.negative_base,
        "negative_keys": "shared" if first.shared_keys else "own",
        "negative_rank": state[f"{names[layers[0]]}.q2_proj.A.weight"].shape[0],
        "lambda_mode": first.lambda_mode,
        "lambda_init": [s.lambda_init for s in settings],
        "group_norm": first.group_norm,
        "rescale": first.rescale,
    }
    return StandaloneWeights(family, section, state, adapter, layers[0].base_layer.head_dim)


def _active_adapter(peft_model: nn.Module) -> str:
    layers = difflora_layers(peft_model)
    if not layers:
        raise UserError("this model has no DiffLoRA layers: export takes a DiffLoRA adapter (peft_type DIFFLORA)")
    if any(layer.disable_adapters for layer in layers):
        raise UserError("the DiffLoRA adapter is disabled (disable_adapter()): export outside that block")
    active = {a for layer in layers for a in layer.active_adapters if a in layer.settings}
    if len(active) != 1:
        raise UserError(f"export needs exactly one active DiffLoRA adapter, found {sorted(active)}: "
                        "pick one with model.set_adapter(name)")
    return active.pop()


def _check_settings(settings: list[LayerSettings]) -> None:
    unknown = {f.name for f in dataclasses.fields(LayerSettings)} - KNOWN_SETTINGS
    if unknown:
        raise UserError(f"this difflora's layer has settings export does not know ({', '.join(sorted(unknown))}): "
                        "export would drop them; upgrade difflora's exporter")
    varying = {f for f in KNOWN_SETTINGS - {"lambda_init"} if len({getattr(s, f) for s in settings}) > 1}
    if varying:  # one DiffLoRAConfig gives every layer the same form; only lambda_init varies with depth
        raise UserError(f"the adapter's layers differ in {', '.join(sorted(varying))}: export needs one form for all")


def _plain_state_dict(hf_model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """The model's weights under the plain transformers names: adapters dropped (added per layer),
    the wrapped attention's base_layer unwrapped, modules_to_save resolved to the active copy."""
    state = {}
    for key, tensor in hf_model.state_dict().items():
        parts = key.split(".")
        if any(p.startswith("difflora_") for p in parts) or "original_module" in parts:
            continue
        if "modules_to_save" in parts:
            i = parts.index("modules_to_save")
            if parts[i + 1] != adapter:
                continue
            parts = parts[:i] + parts[i + 2:]
        state[".".join(p for p in parts if p != "base_layer")] = tensor.detach()
    return state


def _layer_weights(layer: DiffLoRAAttention, adapter: str, prefix: str) -> dict[str, torch.Tensor]:
    settings, base = layer.settings[adapter], layer.base_layer
    out = {}
    negatives = {"q": [_factors(layer.difflora_q2[adapter])]}
    if not settings.shared_keys:
        negatives["k"] = [_factors(layer.difflora_k2[adapter])]
    if settings.has_positive:
        folded = {}
        for side, weight in zip(("q", "k"), compat.query_key_weights(base, layer.family), strict=True):
            positive = getattr(layer, f"difflora_{side}1")[adapter]
            weight = weight.detach()
            if adapter not in layer.merged_positive:
                weight = (weight.float() + positive.delta_weight().detach().float().to(weight.device)).to(weight.dtype)
            folded[side] = weight
            if settings.negative_base == "shared" and side in negatives:
                # Q2 = W_Q x + ..., with the pretrained W_Q: take the folded positive back out.
                a, b = _factors(positive)
                negatives[side].append((a, -b))
        out.update(_folded_projection_weights(base, layer.family, prefix, folded))
    for side, factors in negatives.items():
        out[f"{prefix}.{side}2_proj.A.weight"] = torch.cat([a for a, _ in factors], dim=0).contiguous()
        out[f"{prefix}.{side}2_proj.B.weight"] = torch.cat([b for _, b in factors], dim=1).contiguous()
    if settings.lambda_mode in ("learned", "token"):
        for name, tensor in layer.difflora_lambda[adapter].state_dict().items():
            out[f"{prefix}.diff_lambda.{name}"] = tensor.detach()
    if settings.group_norm:
        out[f"{prefix}.diff_norm.weight"] = layer.difflora_norm[adapter].weight.detach()
    return out


def _folded_projection_weights(base, family, prefix: str, folded: dict) -> dict[str, torch.Tensor]:
    """The folded W_Q/W_K under the family's weight names (rows of Phi-3's fused qkv_proj)."""
    if not family.fused_qkv:
        return {f"{prefix}.{side}_proj.weight": weight for side, weight in folded.items()}
    qkv = base.qkv_proj.weight.detach().clone()
    q_out, kv_out = folded["q"].shape[0], folded["k"].shape[0]
    qkv[:q_out], qkv[q_out:q_out + kv_out] = folded["q"], folded["k"]
    return {f"{prefix}.qkv_proj.weight": qkv}


def _factors(lowrank) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, scale * B) of a LowRank, float32."""
    return lowrank.A.weight.detach().float(), (lowrank.B.weight.detach().float() * lowrank.scale)
