"""Evaluation: needle-in-a-haystack (RULER format), many-shot ICL (HELMET format), degenerate
generation, lm-eval-harness, and reports. Every evaluation takes already-loaded models:

    models = {"base": load_model(BASE), "difflora": load_model(f"{BASE}::{ADAPTER}")}
    run_nih(models, tasks=("mk2", "mv"), lengths=(512, 1024), n_samples=20, seed=0, out_dir="runs/eval")
    run_icl(models, shots=(6, 12, 24), n_samples=30, out_dir="runs/eval")
    run_degeneration(models, out_dir="runs/eval")
    attention_mass(models, length=512, n_prompts=4, out_dir="runs/eval")
    run_lm_eval(models, ["arc_easy"], out_dir="runs/eval")      # needs lm-eval
    write_report(["runs/eval"], "runs/eval")

run_lm_eval (lm-eval is slow to import) and attention_mass are imported on first use.
"""

from __future__ import annotations

import importlib

# Eager: the modules run_nih / run_icl share their function's name, and a lazily resolved name
# would be shadowed by the submodule once anything imports it.
from .degeneration import run_degeneration
from .report import Report, Section, write_report
from .run_icl import run_icl
from .run_nih import run_nih
from .stats import bootstrap

_LAZY = {"run_lm_eval": ".lm_eval_model", "attention_mass": "..analysis.attention_mass"}

__all__ = ["run_nih", "run_icl", "run_degeneration", "run_lm_eval", "attention_mass", "write_report", "Section",
           "Report", "bootstrap"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
