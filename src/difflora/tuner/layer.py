"""DiffLoRAAttention: the tuner layer that wraps one pretrained attention module.

It keeps the pretrained module untouched as `base_layer` (W_Q, W_K, W_V, W_O frozen and never
saved with the adapter) and adds, per adapter name:
  difflora_q2 / difflora_k2   negative low-rank projections (always)
  difflora_q1 / difflora_k1   positive LoRA on Q1/K1 (when positive_r > 0)
  difflora_lambda             learned lambda (when lambda_mode == "learned")
  difflora_norm               per-head RMSNorm (when group_norm)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .. import compat
from ..core.attention import HeadRMSNorm, differential_attention
from ..core.lambda_param import LearnedLambda, resolve_lambda_init
from ..core.lowrank import LowRank
from .config import DiffLoRAConfig


@dataclass(frozen=True)
class LayerSettings:
    """The per-adapter constants of one layer (derived from the config, never saved as tensors)."""

    lambda_mode: str
    lambda_init: float
    negative_base: str
    group_norm: bool
    rescale: bool
    has_positive: bool


class DiffLoRAAttention(nn.Module, BaseTunerLayer):
    adapter_layer_names = (
        "difflora_q1", "difflora_k1", "difflora_q2", "difflora_k2", "difflora_lambda", "difflora_norm",
    )
    other_param_names = ("settings", "difflora_dropout")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: DiffLoRAConfig, family: compat.Family):
        super().__init__()
        self.base_layer = base_layer
        self.family = family
        self.rotary = compat.rotary_function(family)
        self.layer_idx = compat.layer_index(base_layer)
        self.difflora_q1 = nn.ModuleDict()
        self.difflora_k1 = nn.ModuleDict()
        self.difflora_q2 = nn.ModuleDict()
        self.difflora_k2 = nn.ModuleDict()
        self.difflora_lambda = nn.ModuleDict()
        self.difflora_norm = nn.ModuleDict()
        self.difflora_dropout = nn.ModuleDict()
        self.settings: dict[str, LayerSettings] = {}
        self.merged_positive: set[str] = set()
        self.merged_adapters = []
        self._disable_adapters = False
        self._active_adapter = adapter_name
        self.capture_maps = False  # set by difflora.attention_maps for one forward
        self.captured: dict | None = None
        self.update_layer(adapter_name, config)

    # ----------------------------------------------------------------------------------------
    # construction
    def update_layer(self, adapter_name: str, config: DiffLoRAConfig) -> None:
        base = self.base_layer
        hidden, q_out, kv_out = base.q_proj.in_features, base.q_proj.out_features, base.k_proj.out_features
        lambda_init = resolve_lambda_init(config.lambda_init, self.layer_idx)
        if (config.rescale or config.group_norm) and abs(1.0 - lambda_init) < 1e-6:
            raise ValueError(f"layer {self.layer_idx}: lambda_init = 1 leaves nothing to rescale by")
        self.settings[adapter_name] = LayerSettings(
            lambda_mode=config.lambda_mode,
            lambda_init=lambda_init,
            negative_base=config.negative_base,
            group_norm=config.group_norm,
            rescale=config.rescale,
            has_positive=config.positive_r > 0,
        )
        # Shared-base negatives start at the pretrained map (B = 0); paper-mode negatives need
        # both factors random or they can never leave zero.
        neg_init = "lora" if config.negative_base == "shared" else "paper"
        self.difflora_q2[adapter_name] = LowRank(hidden, q_out, config.r, config.lora_alpha, neg_init)
        self.difflora_k2[adapter_name] = LowRank(hidden, kv_out, config.r, config.lora_alpha, neg_init)
        if config.positive_r > 0:
            self.difflora_q1[adapter_name] = LowRank(hidden, q_out, config.positive_r, config.positive_alpha, "lora")
            self.difflora_k1[adapter_name] = LowRank(hidden, kv_out, config.positive_r, config.positive_alpha, "lora")
        if config.lambda_mode == "learned":
            self.difflora_lambda[adapter_name] = LearnedLambda(base.head_dim, lambda_init)
        if config.group_norm:
            self.difflora_norm[adapter_name] = HeadRMSNorm(base.head_dim)
        self.difflora_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    def _move_adapter_to_device_of_base_layer(self, adapter_name: str, device=None) -> None:
        # Adapters live on the base weights' device but keep float32 (PEFT's autocast convention).
        device = device or base_weight_device(self.base_layer)
        if device.type == "meta":
            return
        for name in self.adapter_layer_names:
            modules = getattr(self, name)
            if adapter_name in modules and not any(p.is_meta for p in modules[adapter_name].parameters()):
                modules[adapter_name].to(device)  # meta (low_cpu_mem_usage) adapters are filled by the loader

    # ----------------------------------------------------------------------------------------
    # lambda
    def current_lambda(self, adapter_name: str) -> torch.Tensor:
        settings = self.settings[adapter_name]
        if settings.lambda_mode == "learned":
            return self.difflora_lambda[adapter_name]()
        return torch.tensor(settings.lambda_init, dtype=torch.float32)

    def _active(self) -> str | None:
        active = [a for a in self.active_adapters if a in self.settings]
        if len(active) > 1:
            raise ValueError(
                f"DiffLoRA cannot combine several active adapters in one attention layer ({active}): "
                "activate one with set_adapter(name)."
            )
        return active[0] if active else None

    # ----------------------------------------------------------------------------------------
    # positive-adapter folding (the one merge that keeps a plain model shape)
    def merge_positive(self, adapter_name: str) -> None:
        if adapter_name in self.merged_positive or adapter_name not in self.difflora_q1:
            return
        self._add_positive_to_base(adapter_name, sign=1.0)
        self.merged_positive.add(adapter_name)

    def unmerge_positive(self, adapter_name: str) -> None:
        if adapter_name not in self.merged_positive:
            return
        self._add_positive_to_base(adapter_name, sign=-1.0)
        self.merged_positive.discard(adapter_name)

    def _add_positive_to_base(self, adapter_name: str, sign: float) -> None:
        base = self.base_layer
        pairs = ((base.q_proj, self.difflora_q1[adapter_name]), (base.k_proj, self.difflora_k1[adapter_name]))
        with torch.no_grad():
            for proj, lowrank in pairs:
                proj.weight += sign * lowrank.delta_weight().to(device=proj.weight.device, dtype=proj.weight.dtype)

    # ----------------------------------------------------------------------------------------
    # forward
    def _adapter(self, modules: nn.ModuleDict, name: str, x: torch.Tensor) -> torch.Tensor:
        lowrank = modules[name]
        out = lowrank(self._cast_input_dtype(x, lowrank.A.weight.dtype))
        return out

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None, **kwargs):
        adapter = None if self.disable_adapters else self._active()
        if adapter is None:
            return self.base_layer(hidden_states, position_embeddings=position_embeddings,
                                   attention_mask=attention_mask, past_key_values=past_key_values, **kwargs)
        base, settings = self.base_layer, self.settings[adapter]
        dtype = hidden_states.dtype
        head_shape = (*hidden_states.shape[:-1], -1, base.head_dim)
        x_adapter = self.difflora_dropout[adapter](hidden_states)

        q_base, k_base, v = base.q_proj(hidden_states), base.k_proj(hidden_states), base.v_proj(hidden_states)
        q1, k1 = q_base, k_base
        if settings.has_positive and adapter not in self.merged_positive:
            q1 = q1 + self._adapter(self.difflora_q1, adapter, x_adapter).to(dtype)
            k1 = k1 + self._adapter(self.difflora_k1, adapter, x_adapter).to(dtype)
        q2 = self._adapter(self.difflora_q2, adapter, x_adapter).to(dtype)
        k2 = self._adapter(self.difflora_k2, adapter, x_adapter).to(dtype)
        if settings.negative_base == "shared":
            q2, k2 = q_base + q2, k_base + k2

        q_norm, k_norm = compat.qk_norms(base, self.family)
        q1, q2 = (q_norm(t.view(head_shape)).transpose(1, 2) for t in (q1, q2))
        k1, k2 = (k_norm(t.view(head_shape)).transpose(1, 2) for t in (k1, k2))
        v = v.view(head_shape).transpose(1, 2)

        cos, sin = position_embeddings
        q1, k1 = self.rotary(q1, k1, cos, sin)
        q2, k2 = self.rotary(q2, k2, cos, sin)

        if past_key_values is not None:
            # K2 is cached beside K1 in the key slot (transformers 5 caches allow keys wider than values).
            keys, v = past_key_values.update(torch.cat([k1, k2], dim=-1), v, base.layer_idx)
            k1, k2 = keys.split(base.head_dim, dim=-1)

        lam = self.current_lambda(adapter).to(hidden_states.device)
        out, maps = differential_attention(
            compat.attention_backend(base), base, (q1, k1), (q2, k2), v, attention_mask, lam,
            dropout=0.0 if not self.training else base.attention_dropout,
            scaling=base.scaling,
            **compat.sliding_window_kwargs(base, self.family),
            **kwargs,
        )
        if self.capture_maps:
            self.captured = {"positive": maps[0], "negative": maps[1], "lambda": lam.detach().float().cpu()}
        if settings.group_norm:
            out = self.difflora_norm[adapter](out) * (1.0 - settings.lambda_init)
        elif settings.rescale:
            out = out / (1.0 - settings.lambda_init)
        out = out.reshape(*hidden_states.shape[:-1], -1).contiguous()
        return base.o_proj(out), None

    def __repr__(self) -> str:
        return "difflora." + super().__repr__()


def base_weight_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
