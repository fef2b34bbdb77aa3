"""A plain LoRA baseline at a given number of trainable parameters (for comparing a DiffoRA
selection with LoRA on every module at the same cost)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..train.method_spec import MethodSpec
from .candidates import LORA_KINDS, lora_target_names


@dataclass
class MatchedLoRA:
    method: MethodSpec     # the training config's method
    params: int            # trainable parameters it really has
    requested: int

    @property
    def rank(self) -> int:
        return self.method.options["r"]


def lora_params_per_rank(model: nn.Module | str, target_modules=LORA_KINDS, layers=None) -> int:
    """Trainable parameters one unit of rank costs: sum of in + out features over the targeted Linears."""
    base = _shape_model(model) if isinstance(model, str) else model
    modules = dict(base.named_modules())
    return sum(modules[n].in_features + modules[n].out_features
               for n in lora_target_names(base, tuple(target_modules), layers))


def lora_for_budget(model: nn.Module | str, n_params: int, target_modules=LORA_KINDS,
                    alpha_per_rank: float = 2.0, lora_dropout: float = 0.0) -> MatchedLoRA:
    """LoRA on every target module of every layer, with the rank (at least 1) whose parameter count is
    nearest to n_params; lora_alpha = alpha_per_rank * r keeps the LoRA scale fixed (lora-8: 16 / 8)."""
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params <= 0:
        raise UserError(f"the parameter count to match must be a positive integer, got {n_params!r}")
    per_rank = lora_params_per_rank(model, target_modules)
    rank = max(1, round(n_params / per_rank))
    method = MethodSpec.parse({"type": "lora", "r": rank, "lora_alpha": alpha_per_rank * rank,
                               "lora_dropout": lora_dropout, "target_modules": list(target_modules)})
    return MatchedLoRA(method, rank * per_rank, n_params)


def _shape_model(path: str) -> nn.Module:
    """The model's modules without its weights (meta tensors), from its config."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as exc:
        raise UserError(f"cannot read a model config from '{path}' ({exc.__class__.__name__})") from exc
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
