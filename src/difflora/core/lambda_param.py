"""lambda, the weight of the negative (denoising) attention map.

Every form is a module called the same way, `lam(hidden_states)`, with the layer's input: the fixed
and learned forms ignore it, the per-token form reads it. A fixed lambda is a Python float, so it stays
exact whatever the model is cast to and is a constant in a compiled graph.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def depth_schedule(layer_idx: int) -> float:
    """Differential Transformer's lambda_init: 0.8 - 0.6 exp(-0.3 l), l the 0-based layer index."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)


def resolve_lambda_init(lambda_init: float | None, layer_idx: int) -> float:
    return depth_schedule(layer_idx) if lambda_init is None else float(lambda_init)


class FixedLambda(nn.Module):
    """lambda = lambda_init, not trained (and not saved: the config holds it)."""

    def __init__(self, lambda_init: float):
        super().__init__()
        self.lambda_init = lambda_init

    def forward(self, hidden_states: torch.Tensor | None = None) -> float:
        return self.lambda_init


class LearnedLambda(nn.Module):
    """lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init, one scalar per layer shared by heads.

    The four vectors are initialised from N(0, 0.1^2), so lambda starts at lambda_init +- ~0.1.
    lambda is computed in float32 whatever the parameters' dtype (the reference code mixed half and
    float32 here); the parameters are float32 unless the whole model is cast.
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

    def forward(self, hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """A float32 scalar on the parameters' device (the input is not read)."""
        q1, k1, q2, k2 = (p.float() for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2))
        return torch.exp(torch.dot(q1, k1)) - torch.exp(torch.dot(q2, k2)) + self.lambda_init

    @torch.no_grad()
    def rescale_(self, factor: float) -> None:
        """Change the parameters in place so that lambda becomes factor * lambda (a DiffoRA export
        folds an architecture weight into it this way). One of the two exponentials is moved, the
        other kept, so both stay positive; the vectors move only along their partners."""
        e1 = math.exp(float(self.lambda_q1 @ self.lambda_k1))
        e2 = math.exp(float(self.lambda_q2 @ self.lambda_k2))
        gap = factor * (e1 - e2 + self.lambda_init) - self.lambda_init  # the wanted e1' - e2'
        if gap + e2 > 0:
            _set_dot(self.lambda_q1, self.lambda_k1, math.log(gap + e2))
        else:
            _set_dot(self.lambda_q2, self.lambda_k2, math.log(e1 - gap))


def _set_dot(q: torch.Tensor, k: torch.Tensor, target: float) -> None:
    """Move q along k so that q . k == target (k = e_0 first if it is zero)."""
    if float(k @ k) == 0.0:
        k[0] = 1.0
    q += (target - float(q @ k)) * k / (k @ k)


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
