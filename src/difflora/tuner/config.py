"""DiffLoRAConfig: the PEFT config of the method, and the paper's presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from peft import PeftConfig

PEFT_TYPE = "DIFFLORA"

# The paper's Figure-1 rows plus the Shared-DIFF form that starts at the base model (the table and the
# parameter counts they give: docs/method.md, "Presets").
PRESETS: dict[str, dict[str, Any]] = {
    "difflora-64": dict(r=64, lora_alpha=128, positive_r=0, lambda_mode="learned", lambda_init=None),
    "difflora-64-fixed": dict(r=64, lora_alpha=128, positive_r=0, lambda_mode="fixed", lambda_init=0.1),
    "difflora-32": dict(r=32, lora_alpha=64, positive_r=32, positive_alpha=64, lambda_mode="learned",
                        lambda_init=None),
    "difflora-32-gn": dict(r=32, lora_alpha=64, positive_r=32, positive_alpha=64, lambda_mode="learned",
                           lambda_init=None, group_norm=True),
    "shared-diff": dict(r=32, lora_alpha=64, positive_r=32, positive_alpha=64, negative_base="shared",
                        lambda_mode="fixed", lambda_init=0.1, rescale=True),
    # Differential Transformer V2's form (not in the paper): Q2 attends with the positive term's keys, so the
    # cache and the attention call are the base model's; lambda per token and head. r/alpha are
    # difflora-64's, so the only differences from the paper's best row are the keys and lambda.
    "difflora-shared-kv": dict(r=64, lora_alpha=128, positive_r=0, negative_keys="shared", lambda_mode="token",
                               lambda_init=None),
    # The same keys and lambda on shared-diff's base: Q2 = W_Q x + (B = 0) update and the rescale make
    # it start exactly at the pretrained model.
    "shared-diff-kv": dict(r=32, lora_alpha=64, positive_r=32, positive_alpha=64, negative_base="shared",
                           negative_keys="shared", lambda_mode="token", lambda_init=0.1, rescale=True),
}

NEGATIVE_BASES = ("none", "shared")
NEGATIVE_KEYS = ("own", "shared")
LAMBDA_MODES = ("fixed", "learned", "token")


@dataclass
class DiffLoRAConfig(PeftConfig):
    """Configuration of a DiffLoRA adapter.

    Every transformed attention layer computes
        O = [softmax(Q1 K1^T s + M) - lambda * softmax(Q2 K2^T s + M)] V,
    with Q2/K2 from new low-rank projections (rank `r`), optionally LoRA on Q1/K1 (rank `positive_r`).
    negative_keys="shared" sets K2 = K1 (one attention call, the base model's cache); lambda_mode="token"
    makes lambda a per-token, per-head sigmoid(w_h . x_t + b_h).
    """

    r: int = field(default=64, metadata={"help": "Rank of the negative (Q2/K2) projections."})
    lora_alpha: float = field(default=128, metadata={"help": "Scale numerator of the negative projections."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapters' input."})
    positive_r: int = field(default=0, metadata={"help": "Rank of LoRA on Q1/K1; 0 = no positive adapters."})
    positive_alpha: float | None = field(default=None, metadata={"help": "Defaults to 2 * positive_r."})
    negative_base: str = field(
        default="none",
        metadata={"help": "'none': Q2/K2 purely low-rank (paper). 'shared': Q2 = W_Q x + low-rank (Shared DIFF)."},
    )
    negative_keys: str = field(
        default="own",
        metadata={"help": "'own': K2 from its own low-rank projection (paper). 'shared': K2 = K1 (base-size cache)."},
    )
    lambda_mode: str = field(
        default="learned",
        metadata={"help": "'fixed', 'learned' (one scalar per layer) or 'token' (sigmoid(w_h . x_t + b_h))."},
    )
    lambda_init: float | None = field(
        default=None, metadata={"help": "A constant, or None for the depth schedule 0.8 - 0.6 exp(-0.3 l)."}
    )
    group_norm: bool = field(default=False, metadata={"help": "Per-head RMSNorm then x (1 - lambda_init)."})
    rescale: bool = field(default=False, metadata={"help": "Divide the attention output by (1 - lambda_init)."})
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "0-based layer indices to transform; None = all layers."}
    )
    # Kept for PEFT's machinery, which reads these on every config; DiffLoRA always targets the
    # decoder layers' self-attention modules.
    target_modules: list[str] | str | None = field(default=None, metadata={"help": "Unused (always self_attn)."})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "Extra fully-trained modules."})
    base_shape: dict | None = field(
        default=None, metadata={"help": "Filled at injection: the base shape this adapter fits (checked on load)."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PEFT_TYPE
        if self.task_type is None:
            self.task_type = "CAUSAL_LM"
        if self.positive_alpha is None and self.positive_r:
            self.positive_alpha = 2 * self.positive_r
        if isinstance(self.layers_to_transform, int):
            self.layers_to_transform = [self.layers_to_transform]
        self._validate()

    def _validate(self) -> None:
        def bad(msg: str):
            raise ValueError(f"DiffLoRAConfig: {msg}")

        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            bad(f"r must be a positive integer (the rank of Q2/K2), got {self.r!r}")
        if not isinstance(self.positive_r, int) or isinstance(self.positive_r, bool) or self.positive_r < 0:
            bad(f"positive_r must be an integer >= 0 (0 = no LoRA on Q1/K1), got {self.positive_r!r}")
        if not (isinstance(self.lora_alpha, (int, float)) and self.lora_alpha > 0):
            bad(f"lora_alpha must be a positive number, got {self.lora_alpha!r}")
        if self.positive_r and not (isinstance(self.positive_alpha, (int, float)) and self.positive_alpha > 0):
            bad(f"positive_alpha must be a positive number, got {self.positive_alpha!r}")
        if not (isinstance(self.lora_dropout, (int, float)) and 0.0 <= self.lora_dropout < 1.0):
            bad(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.negative_base not in NEGATIVE_BASES:
            bad(f"negative_base must be one of {NEGATIVE_BASES}, got {self.negative_base!r}")
        if self.negative_keys not in NEGATIVE_KEYS:
            bad(f"negative_keys must be one of {NEGATIVE_KEYS}, got {self.negative_keys!r}")
        if self.lambda_mode not in LAMBDA_MODES:
            bad(f"lambda_mode must be one of {LAMBDA_MODES}, got {self.lambda_mode!r}")
        if self.lambda_init is not None:
            if not isinstance(self.lambda_init, (int, float)) or not math.isfinite(self.lambda_init):
                bad(f"lambda_init must be a finite number or None (depth schedule), got {self.lambda_init!r}")
            if (self.rescale or self.group_norm) and self.lambda_init == 1.0:
                bad("lambda_init = 1 makes the (1 - lambda_init) factor of rescale/group_norm zero")
            if self.lambda_mode == "token" and not 0.0 < self.lambda_init < 1.0:
                bad(f"lambda_mode 'token' starts lambda = sigmoid(b) at lambda_init, so it must lie in (0, 1), "
                    f"got {self.lambda_init!r}")
        if self.rescale and self.group_norm:
            bad("rescale and group_norm cannot be combined: group_norm already multiplies by (1 - lambda_init)")
        if self.layers_to_transform is not None:
            layers = self.layers_to_transform
            if not layers or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in layers):
                bad(f"layers_to_transform must be a non-empty list of layer indices >= 0, got {layers!r}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> DiffLoRAConfig:
        """A preset ("difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn", "shared-diff",
        "difflora-shared-kv", "shared-diff-kv"), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown DiffLoRA preset '{name}': known presets are {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})
