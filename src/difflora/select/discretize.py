"""Discretising the DAM: keep the top fraction of candidates, or as many as a parameter budget allows.

Candidates are ranked by architecture weight (highest first; ties by candidate order, so the result
is deterministic). The kept list is returned in candidate (layer, module) order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import UserError
from .candidates import Candidate

DEFAULT_SAMPLING_RATE = 0.5  # the seed's best-performing rate


def rank(weights: Sequence[float], candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates from highest to lowest architecture weight."""
    if len(weights) != len(candidates):
        raise ValueError(f"{len(weights)} architecture weights for {len(candidates)} candidates")
    order = sorted(range(len(candidates)), key=lambda i: (-float(weights[i]), i))
    return [candidates[i] for i in order]


def keep_count(n_candidates: int, sampling_rate: float) -> int:
    """round(sampling_rate * n), at least one: the number of candidates a sampling rate keeps."""
    check_sampling_rate(sampling_rate)
    return max(1, math.floor(sampling_rate * n_candidates + 0.5))


def check_sampling_rate(sampling_rate) -> None:
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float)) \
            or not math.isfinite(sampling_rate) or not 0 < sampling_rate <= 1:
        raise UserError(f"sampling rate must be in (0, 1] (the fraction of candidate modules to keep), "
                        f"got {sampling_rate!r}")


def check_budget(budget, candidates: Sequence[Candidate]) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise UserError(f"budget must be a positive number of trainable parameters, got {budget!r}")
    smallest = min(c.params for c in candidates)
    if budget < smallest:
        raise UserError(f"budget {budget:,} is smaller than one adapter (the smallest candidate, "
                        f"{min(candidates, key=lambda c: c.params).label}, has {smallest:,} parameters): "
                        "raise --budget")


def discretize(weights: Sequence[float], candidates: Sequence[Candidate], sampling_rate: float | None = None,
               budget: int | None = None) -> list[Candidate]:
    """The kept candidates. With a budget: walk the ranking and keep every candidate that still fits
    (so no dropped candidate would fit in what is left); otherwise the top keep_count(n, rate)."""
    if sampling_rate is not None and budget is not None:
        raise UserError("give either a sampling rate or a parameter budget, not both")
    ranked = rank(weights, candidates)
    if budget is not None:
        check_budget(budget, candidates)
        kept, used = [], 0
        for candidate in ranked:
            if used + candidate.params <= budget:
                kept.append(candidate)
                used += candidate.params
    else:
        rate = DEFAULT_SAMPLING_RATE if sampling_rate is None else sampling_rate
        kept = ranked[:keep_count(len(candidates), rate)]
    return sorted(kept, key=lambda c: c.index)
