"""Where a model's weights are (the device its inputs, and any tensors built beside it, go to), and
the names of the dtypes they may be loaded in: one table for every command and config (--dtype,
dtype:, a quantized base's compute_dtype)."""

from __future__ import annotations

import torch
from torch import nn

from .errors import UserError

# The weights' dtypes by their full names, and the short names also accepted for them.
WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Every name a --dtype option or a dtype: setting takes; auto: as the checkpoint was saved.
DTYPES = ("auto", *WEIGHT_DTYPES, *DTYPE_ALIASES)
# The names of the 16-bit dtypes (the ones flash-attention kernels take).
HALF_DTYPES = tuple(name for name in DTYPES[1:] if WEIGHT_DTYPES[DTYPE_ALIASES.get(name, name)] != torch.float32)


def torch_dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    """A dtype name (full or short) -> its torch.dtype; "auto" and a torch.dtype pass unchanged; any
    other name is a one-line UserError."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    name = DTYPE_ALIASES.get(dtype, dtype)
    if name not in WEIGHT_DTYPES:
        raise UserError(f"unknown dtype '{dtype}': use one of {', '.join(DTYPES[1:])} or auto")
    return WEIGHT_DTYPES[name]


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (a model spread over devices by a device_map takes
    its inputs there too)."""
    return next(model.parameters()).device
