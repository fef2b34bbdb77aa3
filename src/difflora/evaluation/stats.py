"""Bootstrap confidence intervals for accuracies (percentile bootstrap over samples)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Estimate:
    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n": self.n}


def bootstrap(values: list[float], n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of `values` with a percentile-bootstrap interval (resampling the samples with replacement)."""
    if len(values) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(n_boot, len(data)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(data.mean()), float(low), float(high), len(data))


def paired_difference(a: dict, b: dict) -> Estimate | None:
    """Mean of a[k] - b[k] over the samples k both models were scored on, with a bootstrap
    interval (a paired comparison: the same haystacks and test texts for both)."""
    keys = sorted(set(a) & set(b))
    return bootstrap([a[k] - b[k] for k in keys]) if keys else None
