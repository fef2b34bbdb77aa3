"""The differential combination: O = Attn(Q1, K1, V) - lambda * Attn(Q2, K2, V).

O is linear in V, so the two softmax maps never need to exist together: each term is one call of
the model's own attention backend (SDPA, FlashAttention, flex, eager), which keeps that backend's
mask handling (padding on either side, sliding windows) and, for the fused backends, never
materialises an N x N map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def differential_attention(
    backend: Callable,
    module: nn.Module,
    positive: tuple[torch.Tensor, torch.Tensor],
    negative: tuple[torch.Tensor, torch.Tensor],
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    lam: torch.Tensor | float,
    **backend_kwargs,
) -> tuple[torch.Tensor, tuple[torch.Tensor | None, torch.Tensor | None]]:
    """Returns the combined output (batch, query, heads, head_dim) and the two maps the backend
    returned (None for fused backends; the softmax maps for eager)."""
    out_pos, map_pos = backend(module, positive[0], positive[1], value, attention_mask, **backend_kwargs)
    out_neg, map_neg = backend(module, negative[0], negative[1], value, attention_mask, **backend_kwargs)
    if isinstance(lam, torch.Tensor):
        lam = lam.to(out_pos.dtype)
    return out_pos - lam * out_neg, (map_pos, map_neg)


class HeadRMSNorm(nn.RMSNorm):
    """The GroupNorm variant: RMSNorm over head_dim for every head (weight shared by heads)."""

    def __init__(self, head_dim: int):
        super().__init__(head_dim, eps=1e-5, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)
