"""Configuration of a DiffLoRA model written by `difflora export` (imports only transformers).

The model is its base family's own architecture (Llama, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3, Phi-3,
OLMo 2, Mixtral, Qwen2-MoE or Qwen3-MoE). Every field of the base config is kept as it was except three,
which describe the ONE attention call each layer makes (the fields serving engines size their attention
and KV cache from):

    num_attention_heads   2 x the base's query heads (Q1's and Q2's heads in one call)
    num_key_value_heads   the base's kv heads (shared keys), or 2 x them (own keys: K1 and K2 as kv heads)
    head_dim              the base's head_dim, written out

One field is added, `difflora`, which says which layers compute differential attention and how:

    layers           0-based indices of the decoder layers with differential attention
    attention_heads  the base model's query heads (H) and
    key_value_heads  kv heads, with which q/k/v/o_proj are built
    negative_base    "none": Q2 = B A x (the paper); "shared": Q2 = W_Q x + B A x (Shared-DIFF form)
    negative_keys    "own": K2 from its own factors, cached as kv heads beside K1; "shared": K2 = K1
    negative_rank    rank of the Q2/K2 factors
    lambda_mode      "fixed" (lambda = lambda_init), "learned" (one scalar from four vectors per layer)
                     or "token" (sigmoid(w_h . x_t + b_h) per token and head)
    lambda_init      one value per entry of `layers`
    group_norm       per-head RMSNorm of the output, then x (1 - lambda_init)
    rescale          output divided by (1 - lambda_init)

The model type is "difflora_<family>" rather than the family's own, so that loading the folder
without trust_remote_code fails loudly instead of silently dropping the differential weights.
"""

from transformers import (
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    Olmo2Config,
    Phi3Config,
    Qwen2Config,
    Qwen2MoeConfig,
    Qwen3Config,
    Qwen3MoeConfig,
)

FORMAT = 2  # 2: config.json's head counts are the attention call's (format 1 had the base's and two calls)
REQUIRED_KEYS = ("format", "layers", "attention_heads", "key_value_heads", "negative_base", "negative_keys",
                 "negative_rank", "lambda_mode", "lambda_init", "group_norm", "rescale")
CHOICES = {"negative_base": ("none", "shared"), "negative_keys": ("own", "shared"),
           "lambda_mode": ("fixed", "learned", "token")}


def check_difflora_section(section, num_layers: int) -> None:
    """Refuse a `difflora` entry this file cannot run (None is allowed: transformers builds default configs)."""
    if section is None:
        return
    missing = [key for key in REQUIRED_KEYS if key not in section]
    if missing:
        raise ValueError(f"config.json 'difflora' lacks {', '.join(missing)}: re-export the model with difflora export")
    if section["format"] != FORMAT:
        raise ValueError(f"config.json 'difflora' has format {section['format']}, this modeling file reads {FORMAT}")
    layers = section["layers"]
    if len(section["lambda_init"]) != len(layers) or any(not 0 <= i < num_layers for i in layers):
        raise ValueError(f"config.json 'difflora': layers {layers} and lambda_init do not fit {num_layers} layers")
    for key, choices in CHOICES.items():
        if section[key] not in choices:
            raise ValueError(f"config.json 'difflora': {key} must be one of {choices}, got {section[key]!r}")


def call_heads(section) -> tuple[int, int]:
    """(query heads, kv heads) of each layer's one attention call: 2H query heads over the base's kv heads
    (shared keys) or over 2 x kv heads (own keys: K1 and K2, with V given to both)."""
    pair = 2 if section["negative_keys"] == "own" else 1
    return 2 * section["attention_heads"], pair * section["key_value_heads"]


class DifferentialConfigMixin:
    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_difflora_section(self.difflora, self.num_hidden_layers)
        if self.difflora is not None:
            declared = (self.num_attention_heads, self.num_key_value_heads)
            if declared != call_heads(self.difflora) or getattr(self, "head_dim", None) is None:
                raise ValueError(f"config.json: num_attention_heads / num_key_value_heads {declared} and head_dim "
                                 f"{getattr(self, 'head_dim', None)} must be the attention call's "
                                 f"{call_heads(self.difflora)} and the base's head_dim: re-export the model")

    def validate(self):
        """The family config's own checks (hidden_size % heads, Phi-3's rotary factors) are written for the
        base's head counts: they run with those."""
        section = getattr(self, "difflora", None)
        if not isinstance(section, dict) or not {"attention_heads", "key_value_heads"} <= section.keys():
            return super().validate()
        saved = self.num_attention_heads, self.num_key_value_heads
        self.num_attention_heads, self.num_key_value_heads = section["attention_heads"], section["key_value_heads"]
        try:
            super().validate()
        finally:
            self.num_attention_heads, self.num_key_value_heads = saved


class DiffLoRALlamaConfig(DifferentialConfigMixin, LlamaConfig):
    model_type = "difflora_llama"
    difflora: dict | None = None


class DiffLoRAMistralConfig(DifferentialConfigMixin, MistralConfig):
    model_type = "difflora_mistral"
    difflora: dict | None = None


class DiffLoRAQwen2Config(DifferentialConfigMixin, Qwen2Config):
    model_type = "difflora_qwen2"
    difflora: dict | None = None


class DiffLoRAQwen3Config(DifferentialConfigMixin, Qwen3Config):
    model_type = "difflora_qwen3"
    difflora: dict | None = None


class DiffLoRAGemma2Config(DifferentialConfigMixin, Gemma2Config):
    model_type = "difflora_gemma2"
    difflora: dict | None = None


class DiffLoRAGemma3TextConfig(DifferentialConfigMixin, Gemma3TextConfig):
    model_type = "difflora_gemma3_text"
    difflora: dict | None = None


class DiffLoRAPhi3Config(DifferentialConfigMixin, Phi3Config):
    model_type = "difflora_phi3"
    difflora: dict | None = None


class DiffLoRAOlmo2Config(DifferentialConfigMixin, Olmo2Config):
    model_type = "difflora_olmo2"
    difflora: dict | None = None


class DiffLoRAMixtralConfig(DifferentialConfigMixin, MixtralConfig):
    model_type = "difflora_mixtral"
    difflora: dict | None = None


class DiffLoRAQwen2MoeConfig(DifferentialConfigMixin, Qwen2MoeConfig):
    model_type = "difflora_qwen2_moe"
    difflora: dict | None = None


class DiffLoRAQwen3MoeConfig(DifferentialConfigMixin, Qwen3MoeConfig):
    model_type = "difflora_qwen3_moe"
    difflora: dict | None = None
