"""The demo pipeline: base model -> instruction data -> fine-tune every method -> evaluate -> report.

Each stage leaves its results in the output folder and is skipped when they are already there, and
fine-tuning resumes from its own checkpoints, so an interrupted run picks up where it stopped on
the next invocation. DIFFLORA_DEMO_STOP_AFTER=<stage> stops a run after that stage (used by the
tests to interrupt a run at a known point).
"""

from __future__ import annotations

import json
import os
import time

import torch
from rich.console import Console

from ..evaluation.results import write_json, write_jsonl
from .base_model import ensure_base
from .corpus import instruction_conversations
from .plan import DemoPlan, method_for

console = Console(stderr=True)


class StopAfterStage(Exception):
    """Raised when DIFFLORA_DEMO_STOP_AFTER names the stage that just finished."""


def _stage_done(out_dir: str, stage: str, seconds: float, timings: dict) -> None:
    timings[stage] = timings.get(stage, 0.0) + round(seconds, 1)
    write_json(os.path.join(out_dir, "timings.json"), timings)
    if os.environ.get("DIFFLORA_DEMO_STOP_AFTER") == stage:
        raise StopAfterStage(stage)


def run_demo(plan: DemoPlan, out_dir: str = "runs/demo", rebuild_base: bool = False) -> str:
    """Runs (or finishes) the demo and returns the path of report.md."""
    os.makedirs(out_dir, exist_ok=True)
    timings_path = os.path.join(out_dir, "timings.json")
    timings = json.load(open(timings_path)) if os.path.isfile(timings_path) else {}

    started = time.time()
    base_path, built = _base(plan, rebuild_base)
    if built:
        _stage_done(out_dir, "base", time.time() - started, timings)
    write_json(os.path.join(out_dir, "base.json"), {"path": base_path, "built_now": built})

    started = time.time()
    train_file, heldout_file = _instruction_data(plan, out_dir)
    adapters = _fine_tune_all(plan, base_path, train_file, out_dir)
    _stage_done(out_dir, "train", time.time() - started, timings)

    from .evaluate import evaluate_all

    started = time.time()
    results = evaluate_all(plan, base_path, adapters, heldout_file, out_dir)
    _stage_done(out_dir, "evaluate", time.time() - started, timings)

    from .report import write_demo_report

    return write_demo_report(plan, base_path, adapters, results, out_dir, timings)


def _base(plan: DemoPlan, rebuild: bool) -> tuple[str, bool]:
    if plan.recipe is None:
        return plan.base_model, False
    console.rule("[bold]1/4 default base model")
    path, built = ensure_base(plan.recipe, rebuild=rebuild, log=console.print)
    console.print(("built and cached: " if built else "cached: ") + path)
    return path, built


def _instruction_data(plan: DemoPlan, out_dir: str) -> tuple[str, str]:
    data_dir = os.path.join(out_dir, "data")
    train, heldout = os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "heldout.jsonl")
    if plan.train_data:
        return plan.train_data, plan.train_data
    if not (os.path.isfile(train) and os.path.isfile(heldout)):
        rows = instruction_conversations(plan.train_examples + plan.heldout_examples, plan.seed + 7,
                                         max_units=24, max_shots=16)
        write_jsonl(heldout, rows[: plan.heldout_examples])
        write_jsonl(train, rows[plan.heldout_examples:])
    return train, heldout


def _fine_tune_all(plan: DemoPlan, base_path: str, train_file: str, out_dir: str) -> dict[str, str]:
    from transformers import AutoConfig

    from ..train import run_training

    hidden = AutoConfig.from_pretrained(base_path).hidden_size
    adapters = {}
    for i, name in enumerate(plan.models, 1):
        console.rule(f"[bold]2/4 fine-tuning {name} ({i}/{len(plan.models)})")
        config = {
            "model": base_path, "output_dir": os.path.join(out_dir, "adapters", name),
            "method": method_for(name, hidden, plan),
            "data": {"train": train_file, "max_length": plan.train_max_length},
            "training": {**plan.training, "report_to": []},
        }
        result = run_training(config, resume=True, quiet=False)
        adapters[name] = result.output_dir
        if result.already_complete:
            console.print(f"{name}: already trained, reusing {result.output_dir}")
    return adapters


def threads_for_demo() -> int:
    """One thread per physical core the process may use, at most 2 (the demo's small matmuls gain
    little beyond that, and an oversubscribed core slows them many times over)."""
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def set_threads(n: int | None) -> None:
    torch.set_num_threads(n or threads_for_demo())
