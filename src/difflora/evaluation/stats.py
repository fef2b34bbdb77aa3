"""Bootstrap confidence intervals for accuracies (percentile bootstrap over samples)."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
    if not values:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    tail = (1 - level) / 2
    return Estimate(sum(values) / n, means[int(tail * n_boot)], means[min(n_boot - 1, int((1 - tail) * n_boot))], n)
