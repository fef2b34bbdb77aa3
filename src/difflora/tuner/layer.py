"""DiffLoRAAttention: the tuner layer that wraps one pretrained attention module.

It keeps the pretrained module untouched as `base_layer` (W_Q, W_K, W_V, W_O frozen and never
saved with the adapter) and adds, per adapter name:
  difflora_q2 / difflora_k2   negative low-rank projections (q2 always; k2 unless negative_keys == "shared",
                              where K2 = K1 and both terms run as one attention call)
  difflora_q1 / difflora_k1   positive LoRA on Q1/K1 (when positive_r > 0)
  difflora_lambda             lambda, called as lam(hidden_states) (core/lambda_param.py: FixedLambda,
                              LearnedLambda or TokenLambda by lambda_mode)
  difflora_norm               per-head RMSNorm (when group_norm)
  difflora_dropout            one dropout per adapter projection (q1, k1, q2, k2), so each draws its
                              own mask, as in the authors' layer and PEFT's LoRA
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .. import compat
from ..core.attention import HeadRMSNorm, differential_attention, shared_key_attention, stack_head_pairs
from ..core.lambda_param import FixedLambda, LearnedLambda, TokenLambda, resolve_lambda_init
from ..core.lowrank import LowRank
from .config import DiffLoRAConfig
from .record import LayerRecord


@dataclass(frozen=True)
class LayerSettings:
    """The per-adapter constants of one layer (derived from the config, never saved as tensors)."""

    lambda_mode: str
    lambda_init: float
    negative_base: str
    shared_keys: bool
    group_norm: bool
    rescale: bool
    has_positive: bool


PROJECTIONS = ("q1", "k1", "q2", "k2")


class DiffLoRAAttention(nn.Module, BaseTunerLayer):
    adapter_layer_names = (
        "difflora_q1", "difflora_k1", "difflora_q2", "difflora_k2", "difflora_lambda", "difflora_norm",
    )
    other_param_names = ("settings", "difflora_dropout")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: DiffLoRAConfig, family: compat.Family):
        super().__init__()
        self.base_layer = base_layer
        self.family = family
        # Refuse an attention interface we do not reproduce before anything is built (no silent drift).
        self.cache_kwarg = compat.check_attention_module(base_layer, family)
        self.rotary = compat.rotary_function(family)
        self.eager = compat.eager_function(family)
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
        self.record = LayerRecord()  # what difflora.introspection reads back (lambdas, attention maps)
        self.update_layer(adapter_name, config)

    # ----------------------------------------------------------------------------------------
    # construction
    def update_layer(self, adapter_name: str, config: DiffLoRAConfig) -> None:
        base = self.base_layer
        hidden, q_out, kv_out = compat.projection_shapes(base, self.family)
        lambda_init = resolve_lambda_init(config.lambda_init, self.layer_idx)
        self.settings[adapter_name] = LayerSettings(
            lambda_mode=config.lambda_mode,
            lambda_init=lambda_init,
            negative_base=config.negative_base,
            shared_keys=config.negative_keys == "shared",
            group_norm=config.group_norm,
            rescale=config.rescale,
            has_positive=config.positive_r > 0,
        )
        # Shared-base negatives start at the pretrained map (B = 0); paper-mode negatives need
        # both factors random or they can never leave zero.
        neg_init = "lora" if config.negative_base == "shared" else "paper"
        self.difflora_q2[adapter_name] = LowRank(hidden, q_out, config.r, config.lora_alpha, neg_init)
        if config.negative_keys == "own":
            self.difflora_k2[adapter_name] = LowRank(hidden, kv_out, config.r, config.lora_alpha, neg_init)
        if config.positive_r > 0:
            self.difflora_q1[adapter_name] = LowRank(hidden, q_out, config.positive_r, config.positive_alpha, "lora")
            self.difflora_k1[adapter_name] = LowRank(hidden, kv_out, config.positive_r, config.positive_alpha, "lora")
        self.difflora_lambda[adapter_name] = {
            "fixed": lambda: FixedLambda(lambda_init),
            "learned": lambda: LearnedLambda(base.head_dim, lambda_init),
            "token": lambda: TokenLambda(hidden, q_out // base.head_dim, lambda_init),
        }[config.lambda_mode]()
        if config.group_norm:
            self.difflora_norm[adapter_name] = HeadRMSNorm(base.head_dim)
        self.difflora_dropout[adapter_name] = nn.ModuleDict({
            projection: nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
            for projection in PROJECTIONS
        })
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    def _move_adapter_to_device_of_base_layer(self, adapter_name: str, device=None) -> None:
        # PEFT's convention: adapters take the device and, for a float base, the dtype of the base weight;
        # PeftModel then upcasts half-precision adapters to float32 unless autocast_adapter_dtype=False.
        # A quantized base (integer storage) leaves the adapters in float32.
        weight = compat.query_key_weights(self.base_layer, self.family)[0]
        device = device or weight.device
        if device.type == "meta":
            return
        dtype = weight.dtype if weight.dtype.is_floating_point else None
        for name in self.adapter_layer_names:
            modules = getattr(self, name)
            if adapter_name in modules and not any(p.is_meta for p in modules[adapter_name].parameters()):
                # (meta adapters, from low_cpu_mem_usage, are filled by the loader)
                modules[adapter_name].to(device=device, dtype=dtype)

    # ----------------------------------------------------------------------------------------
    # lambda
    def current_lambda(self, adapter_name: str, hidden_states: torch.Tensor | None = None) -> torch.Tensor | float:
        """A float (fixed), a float32 scalar tensor (learned), or (batch, query, heads) float32 for
        lambda_mode "token" (which needs the layer input); tensors are on the layer's device."""
        return self.difflora_lambda[adapter_name](hidden_states)

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
        w_q, w_k = compat.query_key_weights(self.base_layer, self.family)  # views of a fused qkv weight
        if not (w_q.is_floating_point() and w_k.is_floating_point()):
            raise ValueError(
                f"cannot fold the positive adapters into a quantized W_Q/W_K ({w_q.dtype} weights): keep them "
                "unmerged (the model computes the same), or fold them on a float copy of the base")
        with torch.no_grad():
            for weight, lowrank in ((w_q, self.difflora_q1[adapter_name]), (w_k, self.difflora_k1[adapter_name])):
                weight += sign * lowrank.delta_weight().to(device=weight.device, dtype=weight.dtype)

    # ----------------------------------------------------------------------------------------
    # forward
    def _adapter(self, projection: str, name: str, x: torch.Tensor) -> torch.Tensor:
        lowrank = getattr(self, f"difflora_{projection}")[name]
        x = self.difflora_dropout[name][projection](x)  # a fresh mask per projection
        return lowrank(self._cast_input_dtype(x, lowrank.A.weight.dtype)).to(x.dtype)

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        # The decoder layer names the cache `cache` (transformers >= 5.24) or `past_key_values`.
        cache = compat.pop_cache(kwargs)
        adapter = None if self.disable_adapters else self._active()
        if adapter is None:
            return self.base_layer(hidden_states, position_embeddings=position_embeddings,
                                   attention_mask=attention_mask, **{self.cache_kwarg: cache}, **kwargs)
        settings = self.settings[adapter]
        lam = self.current_lambda(adapter, hidden_states)
        attend = self._shared_key_attention if settings.shared_keys else self._own_key_attention
        out, maps = attend(adapter, hidden_states, position_embeddings, attention_mask, cache, lam, kwargs)
        self.record.observe(lam, maps, out.device)
        if settings.group_norm:
            out = self.difflora_norm[adapter](out) * (1.0 - settings.lambda_init)
        elif settings.rescale:
            out = out / (1.0 - settings.lambda_init)
        out = out.reshape(*hidden_states.shape[:-1], -1).contiguous()
        return self.base_layer.o_proj(out), None

    def _queries_and_keys(self, adapter: str, hidden_states: torch.Tensor):
        """Q1, K1, Q2 and V (batch, query, width) before head split, norms and rotary; K2 is separate."""
        base, settings = self.base_layer, self.settings[adapter]
        q_base, k_base, v = compat.project_qkv(base, self.family, hidden_states)
        q1, k1 = q_base, k_base
        merged = adapter in self.merged_positive
        if settings.has_positive and not merged:
            q1 = q1 + self._adapter("q1", adapter, hidden_states)
            k1 = k1 + self._adapter("k1", adapter, hidden_states)
        elif merged and settings.negative_base == "shared":
            # W_Q/W_K hold the folded positive update, but the shared negative term is built on the
            # pretrained projections: take the update back out for it.
            q_base = q_base - self._adapter("q1", adapter, hidden_states)
            k_base = k_base - self._adapter("k1", adapter, hidden_states)
        q2 = self._adapter("q2", adapter, hidden_states)
        if settings.negative_base == "shared":
            q2 = q_base + q2
        return q1, k1, q2, k_base, v

    def _backend_kwargs(self, kwargs: dict) -> dict:
        base = self.base_layer
        return dict(dropout=0.0 if not self.training else base.attention_dropout, scaling=base.scaling,
                    **compat.backend_kwargs(base, self.family), **kwargs)

    def _own_key_attention(self, adapter, hidden_states, position_embeddings, attention_mask, cache, lam, kwargs):
        """The paper's form: K2 from its own adapter, cached beside K1; two backend calls."""
        base, settings = self.base_layer, self.settings[adapter]
        head_shape = (*hidden_states.shape[:-1], -1, base.head_dim)
        q1, k1, q2, k_base, v = self._queries_and_keys(adapter, hidden_states)
        k2 = self._adapter("k2", adapter, hidden_states)
        if settings.negative_base == "shared":
            k2 = k_base + k2

        q1, q2 = (compat.split_heads(base, self.family, t, head_shape, "q").transpose(1, 2) for t in (q1, q2))
        k1, k2 = (compat.split_heads(base, self.family, t, head_shape, "k").transpose(1, 2) for t in (k1, k2))
        v = v.view(head_shape).transpose(1, 2)

        cos, sin = position_embeddings
        q1, k1 = self.rotary(q1, k1, cos, sin)
        q2, k2 = self.rotary(q2, k2, cos, sin)

        if cache is not None:
            # K2 is cached beside K1 in the key slot (transformers 5 caches allow keys wider than values).
            keys, v = compat.update_cache(cache, torch.cat([k1, k2], dim=-1), v, self.layer_idx,
                                          self.cache_kwarg, kwargs)
            k1, k2 = keys.split(base.head_dim, dim=-1)

        backend = compat.attention_backend(base, self.eager)
        return differential_attention(backend, base, (q1, k1), (q2, k2), v, attention_mask, lam,
                                      **self._backend_kwargs(kwargs))

    def _shared_key_attention(self, adapter, hidden_states, position_embeddings, attention_mask, cache, lam,
                              kwargs):
        """K2 = K1: the cache holds K1 and V exactly as the base model's does, and Q1/Q2 go through
        the backend together as 2H query heads (one call, one q-norm, one rotary)."""
        base = self.base_layer
        head_shape = (*hidden_states.shape[:-1], -1, base.head_dim)
        q1, k, q2, _, v = self._queries_and_keys(adapter, hidden_states)
        kv_heads = k.shape[-1] // base.head_dim
        q1, q2 = (compat.split_heads(base, self.family, t, head_shape, "q") for t in (q1, q2))
        queries = stack_head_pairs(q1, q2, kv_heads).transpose(1, 2)  # batch, 2H, query, d
        k = compat.split_heads(base, self.family, k, head_shape, "k").transpose(1, 2)
        v = v.view(head_shape).transpose(1, 2)
        cos, sin = position_embeddings
        queries, k = self.rotary(queries, k, cos, sin)

        if cache is not None:
            k, v = compat.update_cache(cache, k, v, self.layer_idx, self.cache_kwarg, kwargs)

        # A decoding step (one query token) packs the 2H heads as rows of their kv head where the
        # backend allows it: the cached keys and values are then read once, not expanded to 2H heads.
        pack = queries.shape[2] == 1 and compat.packs_query_rows(base)
        module = compat.paired_heads(base, kv_heads if pack else queries.shape[1], kv_heads)
        backend = compat.attention_backend(base, self.eager)
        return shared_key_attention(backend, module, queries, k, v, attention_mask, lam,
                                    pack_single_query=pack, **self._backend_kwargs(kwargs))

    def __repr__(self) -> str:
        return "difflora." + super().__repr__()

