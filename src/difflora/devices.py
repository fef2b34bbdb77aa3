"""Where a model's weights are: the device its inputs (and any tensors built beside it) go to."""

from __future__ import annotations

import torch
from torch import nn


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (a model spread over devices by a device_map takes
    its inputs there too)."""
    return next(model.parameters()).device
