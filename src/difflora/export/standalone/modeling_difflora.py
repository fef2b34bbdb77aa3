"""A DiffLoRA model as a plain transformers model (imports only torch and transformers).

Written by `difflora export` for transformers 5.23.0 and 5.24.0 (WRITTEN_FOR_TRANSFORMERS), and tested
with both. Each class subclasses its family's own transformers class, so loading, generation, caches and
attention backends are transformers' own; the attention of every decoder layer is DifferentialAttention,
which in the layers config.difflora["layers"] names computes

    O = Attn(Q1, K1, V) - lambda * Attn(Q2, K2, V)

Q1/K1 come from q_proj/k_proj (positive adapters already folded in), Q2/K2 from the low-rank
factors q2_proj/k2_proj (added to q_proj/k_proj in the "shared" form), or K2 = K1 with shared keys.

Both terms are ONE call of the configured attention function per layer (Differential Transformer V2's
layout), which is what serving engines that run transformers models need (vLLM `--model-impl
transformers`, SGLang's transformers backend: kwargs passed down to the attention function, one
ALL_ATTENTION_FUNCTIONS call per layer whose KV cache the engine keeps by `module.layer_idx`, and
`_supports_attention_backend`). The call has 2H query heads: Q1's and Q2's heads paired per kv group
(stack_head_pairs), so that GQA's query head j -> kv head j // groups gives both halves of a pair the
same keys and values. With shared keys those are the base model's kv heads (the cache is the base's);
with own keys K1 and K2 are paired the same way into 2 x kv heads and V is given to both (the cache
is twice the base's). The output splits back into the two terms (split_head_pairs); lambda, the
GroupNorm variant and o_proj follow in the module. A layer without DiffLoRA makes the same call with
its own heads twice (the second half dropped), since an engine gives every layer one size.

The pieces of the method itself (lambda, the GroupNorm variant, the combination, the head pairing) are
difflora.core's own code: each is marked "# Copied from difflora.core.<module>.<name>" and kept identical to
it by difflora.export.copies (python -m difflora.export.copies --fix), since this file cannot import difflora.

Engines size each layer's attention and KV cache from config.json's num_attention_heads,
num_key_value_heads and head_dim, so those fields hold the call's head counts (2H; kv or 2 x kv);
the base model's are config.difflora["attention_heads"] and ["key_value_heads"], with which the
family's own projections are built (BaseHeads).
"""

import inspect
import math

import torch
from torch import nn
from torch.nn import functional as F
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

# The transformers releases this file is written for, each one tested (difflora's pinned release and the
# newest): a list of releases, not the (floor, newest) range difflora itself claims.
WRITTEN_FOR_TRANSFORMERS = ("5.23.0", "5.24.0")
# Modules that stay float32 in a half-precision model, as they were trained.
FLOAT32_MODULES = ["q2_proj", "k2_proj", "diff_lambda", "diff_norm"]


def cache_keyword(forward) -> str:
    """transformers 5.24 hands the attention module its cache as `cache=` and calls
    cache.update(k, v, layer_idx, kwargs=...); earlier 5.x releases use `past_key_values=`."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


class LowRank(nn.Module):
    """x -> B A x in the factors' dtype (alpha / r is already in B). Not a copy of core.lowrank.LowRank,
    which holds the scale apart and leaves the cast to its caller (difflora.export.copies.DIFFERS)."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x.to(self.A.weight.dtype))).to(x.dtype)


# Copied from difflora.core.lambda_param.FixedLambda
class FixedLambda(nn.Module):
    """lambda = lambda_init, not trained (and not saved: the config holds it)."""

    def __init__(self, lambda_init: float):
        super().__init__()
        self.lambda_init = lambda_init

    def forward(self, hidden_states: torch.Tensor | None = None) -> float:
        return self.lambda_init


class LearnedLambda(nn.Module):
    """lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init, one scalar per layer shared by heads,
    computed in float32 (difflora.core.lambda_param.LearnedLambda without rescale_)."""

    # Copied from difflora.core.lambda_param.LearnedLambda.__init__
    def __init__(self, head_dim: int, lambda_init: float):
        super().__init__()
        self.lambda_init = lambda_init
        self.lambda_q1 = nn.Parameter(torch.zeros(head_dim, dtype=torch.float32))
        self.lambda_k1 = nn.Parameter(torch.zeros(head_dim, dtype=torch.float32))
        self.lambda_q2 = nn.Parameter(torch.zeros(head_dim, dtype=torch.float32))
        self.lambda_k2 = nn.Parameter(torch.zeros(head_dim, dtype=torch.float32))
        self.reset_parameters()

    # Copied from difflora.core.lambda_param.LearnedLambda.reset_parameters
    def reset_parameters(self) -> None:
        for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(p, mean=0.0, std=0.1)

    # Copied from difflora.core.lambda_param.LearnedLambda.forward
    def forward(self, hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """A float32 scalar on the parameters' device (the input is not read)."""
        q1, k1, q2, k2 = (p.float() for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2))
        return torch.exp(torch.dot(q1, k1)) - torch.exp(torch.dot(q2, k2)) + self.lambda_init


# Copied from difflora.core.lambda_param.TokenLambda
class TokenLambda(nn.Module):
    """lambda[t, h] = sigmoid(w_h . x_t + b_h): one lambda per token and head (Differential
    Transformer V2), read from the attention layer's input x.

    w starts at zero and b at logit(lambda_init), so every token starts at exactly lambda_init; w
    still gets a gradient from the first step (d lambda / d w_h = lambda (1 - lambda) x_t). The
    sigmoid keeps lambda in (0, 1): the negative term can only subtract, never flip the sign of O.
    No extra scale: (0, 1) covers the scalar forms' range (the depth schedule runs 0.2 to 0.8).
    Parameters are float32 (PEFT keeps adapters there on a half-precision base) unless the whole model
    is cast (`model.to(torch.bfloat16)`); the input is cast to their dtype and lambda is float32 either way.
    """

    def __init__(self, hidden_size: int, num_heads: int, lambda_init: float):
        super().__init__()
        if not 0.0 < lambda_init < 1.0:
            raise ValueError(f"a per-token lambda starts at sigmoid(b) = lambda_init, which must lie in (0, 1), "
                             f"got {lambda_init}")
        self.lambda_init = lambda_init
        self.proj = nn.Linear(hidden_size, num_heads, bias=True, dtype=torch.float32)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, math.log(self.lambda_init / (1.0 - self.lambda_init)))

    def forward(self, hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """(..., hidden) -> (..., heads), float32, on the input's device."""
        if hidden_states is None:
            raise ValueError("a per-token lambda depends on the input: pass the layer's hidden states")
        return torch.sigmoid(self.proj(hidden_states.to(self.proj.weight.dtype)).float())


# Copied from difflora.core.attention.HeadRMSNorm
class HeadRMSNorm(nn.RMSNorm):
    """The GroupNorm variant: RMSNorm over head_dim for every head (weight shared by heads)."""

    def __init__(self, head_dim: int):
        super().__init__(head_dim, eps=1e-5, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised in float32 whatever the dtypes of x and the weight; returned in x's dtype."""
        return F.rms_norm(x.float(), self.normalized_shape, self.weight.float(), self.eps).to(x.dtype)


# Copied from difflora.core.attention.combine
def combine(out_pos: torch.Tensor, out_neg: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """O1 - lambda * O2 for outputs (batch, query, heads, head_dim) and a scalar or per-token
    (batch, query, heads) lambda."""
    if isinstance(lam, torch.Tensor):
        lam = lam.to(out_pos.dtype)
        if lam.dim():
            lam = lam.unsqueeze(-1)  # one lambda per (token, head), broadcast over head_dim
    return out_pos - lam * out_neg


# Copied from difflora.core.attention.stack_head_pairs
def stack_head_pairs(first: torch.Tensor, second: torch.Tensor, kv_heads: int, dim: int = -2) -> torch.Tensor:
    """Two tensors of H heads along `dim` -> 2H heads, ordered per kv group as
    [group 0: first's g heads, second's g heads, group 1: ...] (g = H / kv_heads), so that under
    GQA's head j -> kv head j // (2g) both halves of a pair see the same keys and values."""
    dim = dim % first.dim()
    groups = first.shape[dim] // kv_heads
    pairs = torch.cat([t.unflatten(dim, (kv_heads, groups)) for t in (first, second)], dim=dim + 1)
    return pairs.flatten(dim, dim + 1)


# Copied from difflora.core.attention.split_head_pairs
def split_head_pairs(stacked: torch.Tensor, kv_heads: int, dim: int = -2) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of stack_head_pairs: 2H heads along `dim` -> (first's H heads, second's H heads)."""
    dim = dim % stacked.dim()
    pairs = stacked.unflatten(dim, (kv_heads, stacked.shape[dim] // kv_heads))
    first, second = pairs.chunk(2, dim=dim + 1)
    return first.flatten(dim, dim + 1), second.flatten(dim, dim + 1)


class BaseHeads:
    """The config as the family's attention __init__ reads it: with the base model's head counts, so
    that q/k/v/o_proj (and OLMo 2's projection norms) keep the base's shapes. Everything else is the
    config's own."""

    def __init__(self, config):
        self._config = config
        self.num_attention_heads = config.difflora["attention_heads"]
        self.num_key_value_heads = config.difflora["key_value_heads"]

    def __getattr__(self, name: str):
        return getattr(self._config, name)


class DifferentialAttention:
    """The forward of every attention layer of the exported model; mixed into each family's attention
    class, whose __init__ builds q/k/v/o_proj or Phi-3's fused qkv_proj (and the q/k norms, sliding
    window and soft-cap of the families that have them)."""

    family_module = None  # the family's transformers modeling module
    qk_norm = "head"  # a family's q_norm/k_norm act per head after the split, or (OLMo 2) on the projection
    window_from_config = False  # Mistral, Mixtral and Phi-3 hand the backend config.sliding_window
    passes_softcap = False  # Gemma 2 hands the backend its logit soft-cap

    def __init__(self, config, layer_idx: int):
        super().__init__(BaseHeads(config), layer_idx)
        self.config = config  # the model's own (set_attn_implementation changes it), not the BaseHeads view
        settings = config.difflora
        # the one backend call: 2H query heads over config.num_key_value_heads (kv, or 2 x kv with own keys)
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.pair_keys = settings["negative_keys"] == "own"  # K1 and K2 as separate kv heads, V for both
        self.widths = (settings["attention_heads"] * self.head_dim, settings["key_value_heads"] * self.head_dim)
        # the keyword of the family forward this class replaces, so cache.update is called as it would
        self.cache_keyword = cache_keyword(super().forward)
        self.differential = layer_idx in settings["layers"]
        if not self.differential:
            return
        position = settings["layers"].index(layer_idx)
        self.lambda_init = float(settings["lambda_init"][position])
        self.negative_base = settings["negative_base"]
        self.group_norm, self.rescale = settings["group_norm"], settings["rescale"]
        rank = settings["negative_rank"]
        self.q2_proj = LowRank(config.hidden_size, self.widths[0], rank)
        if self.pair_keys:
            self.k2_proj = LowRank(config.hidden_size, self.widths[1], rank)
        if settings["lambda_mode"] == "learned":
            self.diff_lambda = LearnedLambda(self.head_dim, self.lambda_init)
        elif settings["lambda_mode"] == "token":
            self.diff_lambda = TokenLambda(config.hidden_size, settings["attention_heads"], self.lambda_init)
        else:
            self.diff_lambda = FixedLambda(self.lambda_init)
        if self.group_norm:
            self.diff_norm = HeadRMSNorm(self.head_dim)

    # The pieces a new form of the negative term changes: its queries/keys, lambda (diff_lambda), the output.
    def negative_queries_keys(self, hidden_states, q_base, k_base):
        """Q2 and K2 before head split, norm and rotary; K2 is None when the keys are shared (K2 = K1).
        A layer without DiffLoRA repeats its own queries (and keys): Q2 = Q1, K2 = K1."""
        if not self.differential:
            return q_base, (k_base if self.pair_keys else None)
        q2 = self.q2_proj(hidden_states)
        k2 = self.k2_proj(hidden_states) if self.pair_keys else None
        if self.negative_base == "shared":
            q2, k2 = q_base + q2, (None if k2 is None else k_base + k2)
        return q2, k2

    def combine_terms(self, hidden_states, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """O1 - lambda * O2 (batch, query, H, head_dim), then GroupNorm or the rescale."""
        if not self.differential:
            return positive
        out = combine(positive, negative, self.diff_lambda(hidden_states))
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
        v = v.view(head_shape).transpose(1, 2)

        # One call: Q1 and Q2 as 2H query heads paired per kv group; with own keys K1/K2 as 2 x kv heads
        # paired the same way and V given to both, so query head j still reaches kv head j // groups.
        kv_heads = k1.shape[1]
        queries = stack_head_pairs(q1, q2, kv_heads, dim=1)
        if self.pair_keys:
            keys = stack_head_pairs(k1, self.heads(k2, head_shape, "k"), kv_heads, dim=1)
            values = stack_head_pairs(v, v, kv_heads, dim=1)
        else:
            keys, values = k1, v
        cos, sin = position_embeddings
        queries, keys = self.family_module.apply_rotary_pos_emb(queries, keys, cos, sin)

        if cache is not None:
            keys, values = self.update_cache(cache, keys, values, kwargs)

        backend = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, self.family_module.eager_attention_forward
        )
        out, _ = backend(self, queries, keys, values, attention_mask,
                         dropout=0.0 if not self.training else self.attention_dropout, scaling=self.scaling,
                         **self.sliding_window_kwargs(), **kwargs)
        # transformers' backends return (batch, query, 2H, head_dim); an engine's may return (tokens, 2H * head_dim)
        out = out.reshape(*hidden_states.shape[:-1], -1, self.head_dim)
        positive, negative = split_head_pairs(out, kv_heads)
        out = self.combine_terms(hidden_states, positive, negative)
        out = out.reshape(*hidden_states.shape[:-1], -1).contiguous()
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


def install_attention(model, config, attention_class) -> None:
    """Every decoder layer of `model` (the family's base model) gets `attention_class`."""
    if config.difflora is None:
        raise ValueError("config.json has no 'difflora' entry: this folder was not written by difflora export")
    for idx, layer in enumerate(model.layers):
        layer.self_attn = attention_class(config, idx)


class DifferentialModel:
    """The family's base model (what AutoModel loads, and what serving engines run) with DifferentialAttention."""

    attention_class = None
    _supports_attention_backend = True  # every attention call goes through ALL_ATTENTION_FUNCTIONS, once per layer
    _keep_in_fp32_modules_strict = FLOAT32_MODULES

    def __init__(self, config):
        super().__init__(config)
        install_attention(self, config, self.attention_class)


class DifferentialCausalLM:
    """The family's causal LM whose base model is the family's DifferentialModel."""

    model_class = None
    _supports_attention_backend = True
    _keep_in_fp32_modules_strict = FLOAT32_MODULES

    def __init__(self, config):
        super().__init__(config)
        install_attention(self.model, config, self.model_class.attention_class)


# Llama
class DiffLoRALlamaAttention(DifferentialAttention, modeling_llama.LlamaAttention):
    family_module = modeling_llama


class DiffLoRALlamaModel(DifferentialModel, modeling_llama.LlamaModel):
    config_class = DiffLoRALlamaConfig
    attention_class = DiffLoRALlamaAttention


class DiffLoRALlamaForCausalLM(DifferentialCausalLM, modeling_llama.LlamaForCausalLM):
    config_class = DiffLoRALlamaConfig
    model_class = DiffLoRALlamaModel


# Mistral
class DiffLoRAMistralAttention(DifferentialAttention, modeling_mistral.MistralAttention):
    family_module = modeling_mistral
    window_from_config = True


class DiffLoRAMistralModel(DifferentialModel, modeling_mistral.MistralModel):
    config_class = DiffLoRAMistralConfig
    attention_class = DiffLoRAMistralAttention


class DiffLoRAMistralForCausalLM(DifferentialCausalLM, modeling_mistral.MistralForCausalLM):
    config_class = DiffLoRAMistralConfig
    model_class = DiffLoRAMistralModel


# Qwen2
class DiffLoRAQwen2Attention(DifferentialAttention, modeling_qwen2.Qwen2Attention):
    family_module = modeling_qwen2


class DiffLoRAQwen2Model(DifferentialModel, modeling_qwen2.Qwen2Model):
    config_class = DiffLoRAQwen2Config
    attention_class = DiffLoRAQwen2Attention


class DiffLoRAQwen2ForCausalLM(DifferentialCausalLM, modeling_qwen2.Qwen2ForCausalLM):
    config_class = DiffLoRAQwen2Config
    model_class = DiffLoRAQwen2Model


# Qwen3
class DiffLoRAQwen3Attention(DifferentialAttention, modeling_qwen3.Qwen3Attention):
    family_module = modeling_qwen3


class DiffLoRAQwen3Model(DifferentialModel, modeling_qwen3.Qwen3Model):
    config_class = DiffLoRAQwen3Config
    attention_class = DiffLoRAQwen3Attention


class DiffLoRAQwen3ForCausalLM(DifferentialCausalLM, modeling_qwen3.Qwen3ForCausalLM):
    config_class = DiffLoRAQwen3Config
    model_class = DiffLoRAQwen3Model


# Gemma2
class DiffLoRAGemma2Attention(DifferentialAttention, modeling_gemma2.Gemma2Attention):
    family_module = modeling_gemma2
    passes_softcap = True


class DiffLoRAGemma2Model(DifferentialModel, modeling_gemma2.Gemma2Model):
    config_class = DiffLoRAGemma2Config
    attention_class = DiffLoRAGemma2Attention


class DiffLoRAGemma2ForCausalLM(DifferentialCausalLM, modeling_gemma2.Gemma2ForCausalLM):
    config_class = DiffLoRAGemma2Config
    model_class = DiffLoRAGemma2Model


# Gemma3
class DiffLoRAGemma3Attention(DifferentialAttention, modeling_gemma3.Gemma3Attention):
    family_module = modeling_gemma3


class DiffLoRAGemma3TextModel(DifferentialModel, modeling_gemma3.Gemma3TextModel):
    config_class = DiffLoRAGemma3TextConfig
    attention_class = DiffLoRAGemma3Attention


class DiffLoRAGemma3ForCausalLM(DifferentialCausalLM, modeling_gemma3.Gemma3ForCausalLM):
    config_class = DiffLoRAGemma3TextConfig
    model_class = DiffLoRAGemma3TextModel


# Phi3
class DiffLoRAPhi3Attention(DifferentialAttention, modeling_phi3.Phi3Attention):
    family_module = modeling_phi3
    window_from_config = True


class DiffLoRAPhi3Model(DifferentialModel, modeling_phi3.Phi3Model):
    config_class = DiffLoRAPhi3Config
    attention_class = DiffLoRAPhi3Attention


class DiffLoRAPhi3ForCausalLM(DifferentialCausalLM, modeling_phi3.Phi3ForCausalLM):
    config_class = DiffLoRAPhi3Config
    model_class = DiffLoRAPhi3Model


# Olmo2
class DiffLoRAOlmo2Attention(DifferentialAttention, modeling_olmo2.Olmo2Attention):
    family_module = modeling_olmo2
    qk_norm = "projection"


class DiffLoRAOlmo2Model(DifferentialModel, modeling_olmo2.Olmo2Model):
    config_class = DiffLoRAOlmo2Config
    attention_class = DiffLoRAOlmo2Attention


class DiffLoRAOlmo2ForCausalLM(DifferentialCausalLM, modeling_olmo2.Olmo2ForCausalLM):
    config_class = DiffLoRAOlmo2Config
    model_class = DiffLoRAOlmo2Model


# Mixtral
class DiffLoRAMixtralAttention(DifferentialAttention, modeling_mixtral.MixtralAttention):
    family_module = modeling_mixtral
    window_from_config = True


class DiffLoRAMixtralModel(DifferentialModel, modeling_mixtral.MixtralModel):
    config_class = DiffLoRAMixtralConfig
    attention_class = DiffLoRAMixtralAttention


class DiffLoRAMixtralForCausalLM(DifferentialCausalLM, modeling_mixtral.MixtralForCausalLM):
    config_class = DiffLoRAMixtralConfig
    model_class = DiffLoRAMixtralModel


# Qwen2Moe
class DiffLoRAQwen2MoeAttention(DifferentialAttention, modeling_qwen2_moe.Qwen2MoeAttention):
    family_module = modeling_qwen2_moe


class DiffLoRAQwen2MoeModel(DifferentialModel, modeling_qwen2_moe.Qwen2MoeModel):
    config_class = DiffLoRAQwen2MoeConfig
    attention_class = DiffLoRAQwen2MoeAttention


class DiffLoRAQwen2MoeForCausalLM(DifferentialCausalLM, modeling_qwen2_moe.Qwen2MoeForCausalLM):
    config_class = DiffLoRAQwen2MoeConfig
    model_class = DiffLoRAQwen2MoeModel


# Qwen3Moe
class DiffLoRAQwen3MoeAttention(DifferentialAttention, modeling_qwen3_moe.Qwen3MoeAttention):
    family_module = modeling_qwen3_moe


class DiffLoRAQwen3MoeModel(DifferentialModel, modeling_qwen3_moe.Qwen3MoeModel):
    config_class = DiffLoRAQwen3MoeConfig
    attention_class = DiffLoRAQwen3MoeAttention


class DiffLoRAQwen3MoeForCausalLM(DifferentialCausalLM, modeling_qwen3_moe.Qwen3MoeForCausalLM):
    config_class = DiffLoRAQwen3MoeConfig
    model_class = DiffLoRAQwen3MoeModel


# base model_type -> the exported causal LM class (read by difflora export; its model_class is AutoModel's)
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
