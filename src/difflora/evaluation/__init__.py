"""Evaluation: needle-in-a-haystack (RULER format), many-shot ICL (HELMET format), degenerate
generation, attention mass per segment, lm-eval-harness, and reports. Every task takes
already-loaded models, one EvalSettings and its own options (the interface: tasks/__init__.py):

    from difflora.evaluation.tasks import attention_mass, degeneration, many_shot_icl, needles

    models = {"base": load_model(BASE), "difflora": load_model(f"{BASE}::{ADAPTER}")}
    settings = EvalSettings(seed=0, out_dir="runs/eval")
    nih = needles.run(models, settings, tasks=("mk2", "mv"), lengths=(512, 1024), n_samples=20)
    icl = many_shot_icl.run(models, settings, shots=(6, 12, 24), n_samples=30)
    degeneration.run(models, settings)
    attention_mass.run(models, settings, length=512, n_prompts=4)
    write_report([nih, icl, "runs/other-eval"], "runs/report")

Each run returns a TaskResult (summary and per-sample rows, in memory). The functions exported
here return the summary alone, with EvalSettings' fields as keywords:
run_nih(models, tasks=..., lengths=..., n_samples=..., seed=0, out_dir=...), run_icl,
run_degeneration, attention_mass, run_lm_eval (needs lm-eval).
"""

from __future__ import annotations

from .report import Report, Section, write_report
from .settings import EvalSettings
from .stats import bootstrap
from .task import TaskResult
from .tasks import TASKS
from .tasks.attention_mass import attention_mass
from .tasks.degeneration import run_degeneration
from .tasks.lm_eval_harness import run_lm_eval
from .tasks.many_shot_icl import run_icl
from .tasks.needles import run_nih

__all__ = ["EvalSettings", "TaskResult", "TASKS", "run_nih", "run_icl", "run_degeneration", "run_lm_eval",
           "attention_mass", "write_report", "Section", "Report", "bootstrap"]
