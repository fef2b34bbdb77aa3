"""What a DiffLoRA layer keeps of its forward for difflora.introspection.

The layer only reports (observe); introspection decides what to keep and reads it back, so the
attention layer carries no switches set from outside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class LayerRecord:
    keep_maps: bool = False  # the two softmax maps are kept only inside keeping_maps()
    maps: dict | None = None  # {"positive", "negative", "lambda"} of the last forward while kept
    token_lambda: torch.Tensor | None = None  # a per-token lambda (batch, query, heads) of the last forward

    def observe(self, lam: torch.Tensor | float, maps: tuple, device: torch.device) -> None:
        """Called by the layer once per forward, with its lambda and the backend's maps (None unless eager)."""
        if isinstance(lam, torch.Tensor) and lam.dim():
            self.token_lambda = lam.detach()  # a reference, no copy: difflora.lambdas summarises it
        if self.keep_maps:  # everything stays on the device it was computed on
            lam = torch.as_tensor(lam, dtype=torch.float32, device=device).detach()
            self.maps = {"positive": maps[0], "negative": maps[1], "lambda": lam}

    @contextlib.contextmanager
    def keeping_maps(self) -> Iterator[LayerRecord]:
        self.keep_maps, self.maps = True, None
        try:
            yield self
        finally:
            self.keep_maps, self.maps = False, None
