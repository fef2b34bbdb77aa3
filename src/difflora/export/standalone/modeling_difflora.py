"""A DiffLoRA model as a plain transformers model (imports only torch and transformers).

Written by `difflora export`; tested with transformers 5.23.0 and 5.24.0 (TESTED_TRANSFORMERS).
Each class subclasses its family's own transformers class, so loading, generation, caches and
attention backends are transformers' own; only the attention of the layers listed in
config.difflora["layers"] is replaced by DifferentialAttention, which computes

    O = Attn(Q1, K1, V) - lambda * Attn(Q2, K2, V)

Q1/K1 come from q_proj/k_proj (positive adapters already folded in), Q2/K2 from the low-rank
factors q2_proj/k2_proj (added to q_proj/k_proj in the "shared" form), or K2 = K1 with shared keys.
Each term is one call of the configured attention backend (sdpa, eager, flash, flex), so its masking
(padding, sliding window) holds for both. In the cache, K2 sits beside K1 in the key slot ([K1 | K2]
along the last dimension; transformers 5 caches accept keys wider than values), so cached generation
needs no new cache class; with shared keys the cache is the base model's.
"""

import inspect

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.gemma2 import modeling_gemma2
from transformers.models.gemma3 import modeling_gemma3
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.mixtral import modeling_mixtral
from transformers.models.olmo2 import modeling_olmo2
from transformers.models.phi3 import modeling_phi3
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen2_moe import modeling_qwen2_moe
from transformers.models.qwen3 import modeling_qwen3
from transformers.models.qwen3_moe import modeling_qwen3_moe

from .configuration_difflora import (
    DiffLoRAGemma2Config,
    DiffLoRAGemma3TextConfig,
    DiffLoRALlamaConfig,
    DiffLoRAMistralConfig,
    DiffLoRAMixtralConfig,
    DiffLoRAOlmo2Config,
    DiffLoRAPhi3Config,
    DiffLoRAQwen2Config,
    DiffLoRAQwen2MoeConfig,
    DiffLoRAQwen3Config,
    DiffLoRAQwen3MoeConfig,
)

TESTED_TRANSFORMERS = ("5.23.0", "5.24.0")
# Modules that stay float32 in a half-precision model, as they were trained.
FLOAT32_MODULES = ["q2_proj", "k2_proj", "diff_lambda", "diff_norm"]


def cache_keyword(forward) -> str:
    """transformers 5.24 hands the attention module its cache as `cache=` and calls
    cache.update(k, v, layer_idx, kwargs=...); earlier 5.x releases use `past_key_values=`."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


class LowRank(nn.Module):
    """x -> B A x (the alpha / r scale is already in B)."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x.to(self.A.weight.dtype))).to(x.dtype)


class FixedLambda(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.value, dtype=torch.float32, device=hidden_states.device)


class LearnedLambda(nn.Module):
    """lambda = exp(q1 . k1) - exp(q2 . k2) + lambda_init, one scalar per layer, computed in float32."""

    def __init__(self, head_dim: int, lambda_init: float):
        super().__init__()
        self.lambda_init = lambda_init
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            setattr(self, name, nn.Parameter(torch.zeros(head_dim, dtype=torch.float32)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        q1, k1, q2, k2 = (p.float() for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2))
        return (torch.exp(torch.dot(q1, k1)) - torch.exp(torch.dot(q2, k2)) + self.lambda_init).to(hidden_states.device)


class TokenLambda(nn.Module):
    """lambda[t, h] = sigmoid(w_h . x_t + b_h): one lambda per token and head, in float32."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, num_heads, bias=True, dtype=torch.float32)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(hidden_states.float()))


class HeadRMSNorm(nn.RMSNorm):
    """RMSNorm over head_dim for every head (one weight shared by the heads), in float32."""

    def __init__(self, head_dim: int):
        super().__init__(head_dim, eps=1e-5, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class DifferentialAttention:
    """The forward of a differential attention layer; mixed into each family's attention class,
    whose __init__ builds q/k/v/o_proj or Phi-3's fused qkv_proj (and the q/k norms, sliding window
    and soft-cap of the families that have them)."""

    family_module = None  # the family's transformers modeling module
    qk_norm = "head"  # a family's q_norm/k_norm act per head after the split, or (OLMo 2) on the projection
    window_from_config = False  # Mistral, Mixtral and Phi-3 hand the backend config.sliding_window
    passes_softcap = False  # Gemma 2 hands the backend its logit soft-cap

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx)
        settings = config.difflora
        position = settings["layers"].index(layer_idx)
        self.lambda_init = float(settings["lambda_init"][position])
        self.negative_base = settings["negative_base"]
        self.group_norm, self.rescale = settings["group_norm"], settings["rescale"]
        self.shared_keys = settings["negative_keys"] == "shared"
        rank = settings["negative_rank"]
        self.widths = (config.num_attention_heads * self.head_dim, config.num_key_value_heads * self.head_dim)
        self.q2_proj = LowRank(config.hidden_size, self.widths[0], rank)
        if not self.shared_keys:
            self.k2_proj = LowRank(config.hidden_size, self.widths[1], rank)
        if settings["lambda_mode"] == "learned":
            self.diff_lambda = LearnedLambda(self.head_dim, self.lambda_init)
        elif settings["lambda_mode"] == "token":
            self.diff_lambda = TokenLambda(config.hidden_size, config.num_attention_heads)
        else:
            self.diff_lambda = FixedLambda(self.lambda_init)
        if self.group_norm:
            self.diff_norm = HeadRMSNorm(self.head_dim)
        # the keyword of the family forward this class replaces, so cache.update is called as it would
        self.cache_keyword = cache_keyword(super().forward)

    # The pieces a new form of the negative term changes: its queries/keys, lambda (diff_lambda), the output.
    def negative_queries_keys(self, hidden_states, q_base, k_base):
        """Q2 and K2 before head split, norm and rotary; K2 is None when the keys are shared (K2 = K1)."""
        q2 = self.q2_proj(hidden_states)
        k2 = None if self.shared_keys else self.k2_proj(hidden_states)
        if self.negative_base == "shared":
            q2, k2 = q_base + q2, (None if k2 is None else k_base + k2)
        return q2, k2

    def finish_output(self, out: torch.Tensor) -> torch.Tensor:
        if self.group_norm:
            return self.diff_norm(out) * (1.0 - self.lambda_init)
        if self.rescale:
            return out / (1.0 - self.lambda_init)
        return out

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        # the decoder layer of this release passes the cache under one of these names
        caches = [kwargs.pop(name, None) for name in ("cache", "past_key_values")]
        cache = next((c for c in caches if c is not None), None)
        head_shape = (*hidden_states.shape[:-1], -1, self.head_dim)

        q1, k1, v = self.project(hidden_states)
        q2, k2 = self.negative_queries_keys(hidden_states, q1, k1)
        q1, q2 = (self.heads(t, head_shape, "q") for t in (q1, q2))
        k1 = self.heads(k1, head_shape, "k")
        k2 = None if k2 is None else self.heads(k2, head_shape, "k")
        v = v.view(head_shape).transpose(1, 2)

        cos, sin = position_embeddings
        q1, k1 = self.family_module.apply_rotary_pos_emb(q1, k1, cos, sin)
        if k2 is None:  # shared keys: only Q2 needs rotating
            q2 = self.family_module.apply_rotary_pos_emb(q2, q2, cos, sin)[0]
        else:
            q2, k2 = self.family_module.apply_rotary_pos_emb(q2, k2, cos, sin)

        if cache is not None:
            keys = k1 if k2 is None else torch.cat([k1, k2], dim=-1)
            keys, v = self.update_cache(cache, keys, v, kwargs)
            k1, k2 = (keys, None) if k2 is None else keys.split(self.head_dim, dim=-1)
        k2 = k1 if k2 is None else k2

        backend = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, self.family_module.eager_attention_forward
        )
        backend_kwargs = dict(dropout=0.0 if not self.training else self.attention_dropout, scaling=self.scaling,
                              **self.sliding_window_kwargs(), **kwargs)
        positive, _ = backend(self, q1, k1, v, attention_mask, **backend_kwargs)
        negative, _ = backend(self, q2, k2, v, attention_mask, **backend_kwargs)
        lam = self.diff_lambda(hidden_states).to(positive.dtype)
        if lam.dim():
            lam = lam.unsqueeze(-1)  # per token and head: broadcast over head_dim
        out = self.finish_output(positive - lam * negative).reshape(*hidden_states.shape[:-1], -1).contiguous()
        return self.o_proj(out), None

    def project(self, hidden_states):
        """W_Q x, W_K x, W_V x (flat); Phi-3 computes them with one fused qkv_proj."""
        if hasattr(self, "qkv_proj"):
            q_out, kv_out = self.widths
            return self.qkv_proj(hidden_states).split([q_out, kv_out, kv_out], dim=-1)
        return self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)

    def heads(self, flat, head_shape, which: str):
        """(batch, heads, seq, head_dim), with the family's q/k norm where the family applies it."""
        norm = getattr(self, f"{which}_norm", None)
        if norm is not None and self.qk_norm == "projection":
            flat = norm(flat)
        heads = flat.view(head_shape)
        if norm is not None and self.qk_norm == "head":
            heads = norm(heads)
        return heads.transpose(1, 2)

    def update_cache(self, cache, keys, values, kwargs):
        if self.cache_keyword == "cache":
            return cache.update(keys, values, self.layer_idx, kwargs=kwargs)
        return cache.update(keys, values, self.layer_idx)

    def sliding_window_kwargs(self) -> dict:
        # What each family's own attention passes to its backend (window, and Gemma 2's soft-cap).
        kwargs = {}
        if self.window_from_config:
            kwargs["sliding_window"] = getattr(self.config, "sliding_window", None)
        elif hasattr(self, "sliding_window"):
            kwargs["sliding_window"] = self.sliding_window
        if self.passes_softcap:
            kwargs["softcap"] = self.attn_logit_softcapping
        return kwargs


class DifferentialCausalLM:
    """The family's causal LM with DifferentialAttention in the layers config.difflora names."""

    attention_class = None
    _keep_in_fp32_modules_strict = FLOAT32_MODULES

    def __init__(self, config):
        super().__init__(config)
        if config.difflora is None:
            raise ValueError("config.json has no 'difflora' entry: this folder was not written by difflora export")
        for idx in config.difflora["layers"]:
            self.model.layers[idx].self_attn = self.attention_class(config, idx)


class DiffLoRALlamaAttention(DifferentialAttention, modeling_llama.LlamaAttention):
    family_module = modeling_llama


class DiffLoRAMistralAttention(DifferentialAttention, modeling_mistral.MistralAttention):
    family_module = modeling_mistral
    window_from_config = True


class DiffLoRAQwen2Attention(DifferentialAttention, modeling_qwen2.Qwen2Attention):
    family_module = modeling_qwen2


class DiffLoRAQwen3Attention(DifferentialAttention, modeling_qwen3.Qwen3Attention):
    family_module = modeling_qwen3


class DiffLoRALlamaForCausalLM(DifferentialCausalLM, modeling_llama.LlamaForCausalLM):
    config_class = DiffLoRALlamaConfig
    attention_class = DiffLoRALlamaAttention


class DiffLoRAMistralForCausalLM(DifferentialCausalLM, modeling_mistral.MistralForCausalLM):
    config_class = DiffLoRAMistralConfig
    attention_class = DiffLoRAMistralAttention


class DiffLoRAQwen2ForCausalLM(DifferentialCausalLM, modeling_qwen2.Qwen2ForCausalLM):
    config_class = DiffLoRAQwen2Config
    attention_class = DiffLoRAQwen2Attention


class DiffLoRAQwen3ForCausalLM(DifferentialCausalLM, modeling_qwen3.Qwen3ForCausalLM):
    config_class = DiffLoRAQwen3Config
    attention_class = DiffLoRAQwen3Attention


class DiffLoRAGemma2Attention(DifferentialAttention, modeling_gemma2.Gemma2Attention):
    family_module = modeling_gemma2
    passes_softcap = True


class DiffLoRAGemma3Attention(DifferentialAttention, modeling_gemma3.Gemma3Attention):
    family_module = modeling_gemma3


class DiffLoRAPhi3Attention(DifferentialAttention, modeling_phi3.Phi3Attention):
    family_module = modeling_phi3
    window_from_config = True


class DiffLoRAOlmo2Attention(DifferentialAttention, modeling_olmo2.Olmo2Attention):
    family_module = modeling_olmo2
    qk_norm = "projection"


class DiffLoRAMixtralAttention(DifferentialAttention, modeling_mixtral.MixtralAttention):
    family_module = modeling_mixtral
    window_from_config = True


class DiffLoRAQwen2MoeAttention(DifferentialAttention, modeling_qwen2_moe.Qwen2MoeAttention):
    family_module = modeling_qwen2_moe


class DiffLoRAQwen3MoeAttention(DifferentialAttention, modeling_qwen3_moe.Qwen3MoeAttention):
    family_module = modeling_qwen3_moe


class DiffLoRAGemma2ForCausalLM(DifferentialCausalLM, modeling_gemma2.Gemma2ForCausalLM):
    config_class = DiffLoRAGemma2Config
    attention_class = DiffLoRAGemma2Attention


class DiffLoRAGemma3ForCausalLM(DifferentialCausalLM, modeling_gemma3.Gemma3ForCausalLM):
    config_class = DiffLoRAGemma3TextConfig
    attention_class = DiffLoRAGemma3Attention


class DiffLoRAPhi3ForCausalLM(DifferentialCausalLM, modeling_phi3.Phi3ForCausalLM):
    config_class = DiffLoRAPhi3Config
    attention_class = DiffLoRAPhi3Attention


class DiffLoRAOlmo2ForCausalLM(DifferentialCausalLM, modeling_olmo2.Olmo2ForCausalLM):
    config_class = DiffLoRAOlmo2Config
    attention_class = DiffLoRAOlmo2Attention


class DiffLoRAMixtralForCausalLM(DifferentialCausalLM, modeling_mixtral.MixtralForCausalLM):
    config_class = DiffLoRAMixtralConfig
    attention_class = DiffLoRAMixtralAttention


class DiffLoRAQwen2MoeForCausalLM(DifferentialCausalLM, modeling_qwen2_moe.Qwen2MoeForCausalLM):
    config_class = DiffLoRAQwen2MoeConfig
    attention_class = DiffLoRAQwen2MoeAttention


class DiffLoRAQwen3MoeForCausalLM(DifferentialCausalLM, modeling_qwen3_moe.Qwen3MoeForCausalLM):
    config_class = DiffLoRAQwen3MoeConfig
    attention_class = DiffLoRAQwen3MoeAttention


# base model_type -> the exported class (read by difflora export)
CAUSAL_LM_CLASSES = {
    "llama": DiffLoRALlamaForCausalLM,
    "mistral": DiffLoRAMistralForCausalLM,
    "qwen2": DiffLoRAQwen2ForCausalLM,
    "qwen3": DiffLoRAQwen3ForCausalLM,
    "gemma2": DiffLoRAGemma2ForCausalLM,
    "gemma3_text": DiffLoRAGemma3ForCausalLM,
    "phi3": DiffLoRAPhi3ForCausalLM,
    "olmo2": DiffLoRAOlmo2ForCausalLM,
    "mixtral": DiffLoRAMixtralForCausalLM,
    "qwen2_moe": DiffLoRAQwen2MoeForCausalLM,
    "qwen3_moe": DiffLoRAQwen3MoeForCausalLM,
}
