"""The Differential Adaptation Matrix as data: architecture weights laid out layers x module kinds,
which candidates were kept, and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .candidates import DIFFLORA_KIND, LORA_KINDS, Candidate


@dataclass
class DAM:
    method: str                      # lora | difflora
    candidates: list[Candidate]
    weights: list[float]             # final architecture weight of each candidate (sigmoid of its logit)
    kept: list[Candidate] = field(default_factory=list)

    @property
    def layers(self) -> list[int]:
        return sorted({c.layer for c in self.candidates})

    @property
    def kinds(self) -> list[str]:
        present = {c.kind for c in self.candidates}
        return [k for k in (*LORA_KINDS, DIFFLORA_KIND) if k in present]

    def matrix(self) -> list[list[float | None]]:
        """weights[layer row][kind column]; None where a layer has no such candidate."""
        rows = {layer: [None] * len(self.kinds) for layer in self.layers}
        for c in self.candidates:
            rows[c.layer][self.kinds.index(c.kind)] = self.weights[c.index]
        return [rows[layer] for layer in self.layers]

    def kept_mask(self) -> list[list[bool]]:
        rows = {layer: [False] * len(self.kinds) for layer in self.layers}
        for c in self.kept:
            rows[c.layer][self.kinds.index(c.kind)] = True
        return [rows[layer] for layer in self.layers]

    def to_dict(self) -> dict:
        kept = {c.index for c in self.kept}
        return {
            "method": self.method,
            "layers": self.layers,
            "modules": self.kinds,
            "weights": self.matrix(),
            "candidates": [
                {"module": c.module_name, "layer": c.layer, "kind": c.kind, "params": c.params,
                 "weight": self.weights[c.index], "kept": c.index in kept}
                for c in self.candidates
            ],
            "kept": [c.module_name for c in self.kept],
            "kept_params": sum(c.params for c in self.kept),
            "all_params": sum(c.params for c in self.candidates),
        }

    def save_json(self, path: str, **extra) -> str:
        with open(path, "w") as f:
            json.dump({**self.to_dict(), **extra}, f, indent=1)
        return path
