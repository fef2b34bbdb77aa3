"""A low-rank projection x -> (alpha / r) * B A x, the building block of every DiffLoRA adapter."""

from __future__ import annotations

import math

import torch
from torch import nn


class LowRank(nn.Module):
    """LoRA convention: A is r x in, B is out x r, scale = alpha / r.

    init="lora":  A kaiming-uniform, B = 0 (the projection starts at zero).
    init="paper": A and B both kaiming-uniform. Needed for the negative term in paper mode: if
                  B_Q2 and B_K2 both start at zero, each one's gradient flows through the other
                  and both stay zero forever.
    """

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, init: str):
        super().__init__()
        self.A = nn.Linear(in_features, r, bias=False)
        self.B = nn.Linear(r, out_features, bias=False)
        self.scale = alpha / r
        self.reset_parameters(init)

    def reset_parameters(self, init: str) -> None:
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        if init == "lora":
            nn.init.zeros_(self.B.weight)
        elif init == "paper":
            nn.init.kaiming_uniform_(self.B.weight, a=math.sqrt(5))
        else:
            raise ValueError(f"unknown low-rank init '{init}': use 'lora' or 'paper'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x)) * self.scale

    def delta_weight(self) -> torch.Tensor:
        """The dense update scale * B @ A (out x in), for folding into a base weight."""
        return (self.B.weight @ self.A.weight) * self.scale
