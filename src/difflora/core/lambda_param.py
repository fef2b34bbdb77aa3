"""lambda, the weight of the negative (denoising) attention map."""

from __future__ import annotations

import math

import torch
from torch import nn


def depth_schedule(layer_idx: int) -> float:
    """Differential Transformer's lambda_init: 0.8 - 0.6 exp(-0.3 l), l the 0-based layer index."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)


def resolve_lambda_init(lambda_init: float | None, layer_idx: int) -> float:
    return depth_schedule(layer_idx) if lambda_init is None else float(lambda_init)


class LearnedLambda(nn.Module):
    """lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init, one scalar per layer shared by heads.

    The four vectors are initialised from N(0, 0.1^2), so lambda starts at lambda_init +- ~0.1.
    Parameters stay float32 and lambda is computed in float32 whatever the base dtype (the
    reference code mixed half and float32 here).
    """

    def __init__(self, head_dim: int, lambda_init: float):
        super().__init__()
        self.lambda_init = lambda_init
        self.lambda_q1 = nn.Parameter(torch.zeros(head_dim, dtype=torch.float32))
        self.lambda_k1 = nn.Parameter(torch.zeros(head_dim, dtype=torch.float32))
        self.lambda_q2 = nn.Parameter(torch.zeros(head_dim, dtype=torch.float32))
        self.lambda_k2 = nn.Parameter(torch.zeros(head_dim, dtype=torch.float32))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(p, mean=0.0, std=0.1)

    def forward(self) -> torch.Tensor:
        q1, k1, q2, k2 = (p.float() for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2))
        return torch.exp(torch.dot(q1, k1)) - torch.exp(torch.dot(q2, k2)) + self.lambda_init
