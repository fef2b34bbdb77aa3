"""The differential combination: O = Attn(Q1, K1, V) - lambda * Attn(Q2, K2, V).

O is linear in V, so the two softmax maps never need to exist together: each term is one call of
the model's own attention backend (SDPA, FlashAttention, flex, eager), which keeps that backend's
mask handling (padding on either side, sliding windows) and, for the fused backends, never
materialises an N x N map.

With shared keys (K2 = K1) both terms are ONE call: Q1 and Q2 become 2H query heads over the same
key/value heads. A GQA backend gives query head j the key/value head j // (queries per kv head), so
each kv group's Q1 heads and then its Q2 heads are laid out side by side (stack_head_pairs); the
output splits back the same way (split_head_pairs). lambda is a scalar, or (batch, query, heads).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


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
    return combine(out_pos, out_neg, lam), (map_pos, map_neg)


def combine(out_pos: torch.Tensor, out_neg: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """O1 - lambda * O2 for outputs (batch, query, heads, head_dim) and a scalar or per-token
    (batch, query, heads) lambda."""
    if isinstance(lam, torch.Tensor):
        lam = lam.to(out_pos.dtype)
        if lam.dim():
            lam = lam.unsqueeze(-1)  # one lambda per (token, head), broadcast over head_dim
    return out_pos - lam * out_neg


def stack_head_pairs(first: torch.Tensor, second: torch.Tensor, kv_heads: int, dim: int = -2) -> torch.Tensor:
    """Two tensors of H heads along `dim` -> 2H heads, ordered per kv group as
    [group 0: first's g heads, second's g heads, group 1: ...] (g = H / kv_heads), so that under
    GQA's head j -> kv head j // (2g) both halves of a pair see the same keys and values."""
    dim = dim % first.dim()
    groups = first.shape[dim] // kv_heads
    pairs = torch.cat([t.unflatten(dim, (kv_heads, groups)) for t in (first, second)], dim=dim + 1)
    return pairs.flatten(dim, dim + 1)


def split_head_pairs(stacked: torch.Tensor, kv_heads: int, dim: int = -2) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of stack_head_pairs: 2H heads along `dim` -> (first's H heads, second's H heads)."""
    dim = dim % stacked.dim()
    pairs = stacked.unflatten(dim, (kv_heads, stacked.shape[dim] // kv_heads))
    first, second = pairs.chunk(2, dim=dim + 1)
    return first.flatten(dim, dim + 1), second.flatten(dim, dim + 1)


def shared_key_attention(
    backend: Callable,
    module: nn.Module,
    query_pairs: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    lam: torch.Tensor | float,
    pack_single_query: bool = False,
    **backend_kwargs,
) -> tuple[torch.Tensor, tuple[torch.Tensor | None, torch.Tensor | None]]:
    """O = Attn(Q1, K, V) - lambda * Attn(Q2, K, V) in one backend call.

    query_pairs: (batch, 2H, query, head_dim) from stack_head_pairs; key/value: (batch, kv_heads,
    key, head_dim); `module` must report the query heads per kv head of the call (compat.paired_heads):
    2H / kv_heads, or 1 with pack_single_query. pack_single_query: when there is one query token
    (a decoding step), each kv head's 2H / kv_heads query heads become query rows of that kv head, so
    the backend reads each cached key and value once instead of expanding them for 2H heads (only
    for backends that apply a mask row to every query row alike: sdpa, eager).
    Returns the output (batch, query, H, head_dim) and the two maps (None for fused backends)."""
    kv_heads = key.shape[1]
    if pack_single_query and query_pairs.shape[2] == 1:
        out, maps = _single_query_rows(backend, module, query_pairs, key, value, attention_mask, **backend_kwargs)
    else:
        out, maps = backend(module, query_pairs, key, value, attention_mask, **backend_kwargs)
    out_pos, out_neg = split_head_pairs(out, kv_heads, dim=2)
    maps = split_head_pairs(maps, kv_heads, dim=1) if maps is not None else (None, None)
    return combine(out_pos, out_neg, lam), maps


def _single_query_rows(backend, module, query_pairs, key, value, attention_mask, **backend_kwargs):
    """One query token's 2H heads as (batch, kv_heads, 2H / kv_heads, d) rows: the same scores, since
    every row of a kv head sees the same keys and the one mask row (no causal triangle: rows are
    heads, not positions). Output and maps come back in the (batch, 1, 2H, d) / (batch, 2H, 1, keys) layout."""
    batch, heads, _, head_dim = query_pairs.shape
    kv_heads = key.shape[1]
    rows = query_pairs.reshape(batch, kv_heads, heads // kv_heads, head_dim)
    out, maps = backend(module, rows, key, value, attention_mask, **{**backend_kwargs, "is_causal": False})
    out = out.transpose(1, 2).reshape(batch, 1, heads, head_dim)  # backend: (batch, rows, kv_heads, d)
    if maps is not None:
        maps = maps.reshape(batch, heads, 1, maps.shape[-1])
    return out, maps


class HeadRMSNorm(nn.RMSNorm):
    """The GroupNorm variant: RMSNorm over head_dim for every head (weight shared by heads)."""

    def __init__(self, head_dim: int):
        super().__init__(head_dim, eps=1e-5, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised in float32 whatever the dtypes of x and the weight; returned in x's dtype."""
        return F.rms_norm(x.float(), self.normalized_shape, self.weight.float(), self.eps).to(x.dtype)
