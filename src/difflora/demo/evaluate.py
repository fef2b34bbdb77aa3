"""Evaluating one model (the base or an adapter on it) on every demo task, through the evaluation
suite's own functions. Each (model, task) result is written to OUT/eval/<model>/<task>.json as soon
as it exists, so an interrupted evaluation resumes task by task."""

from __future__ import annotations

import json
import os

import torch

from ..analysis.attention_mass import run_attention_mass
from ..evaluation.degeneration import run_degeneration
from ..evaluation.generation import device_of
from ..evaluation.results import write_json
from ..evaluation.run_icl import run_icl
from ..evaluation.run_nih import run_nih
from ..evaluation.stats import bootstrap
from ..train.chat_data import ChatCollator, build_dataset
from .plan import DemoPlan

# Room for the answer after RULER's answer prefix: a 7-digit number is 8 tokens with one token per
# digit, a uuid about 25, MV's four numbers about 36. None: the suite's own (generous) defaults.
CPU_NEW_TOKENS = {"mk2": 16, "mk3": 40, "mv": 48}


def result_path(out_dir: str, label: str, task: str) -> str:
    return os.path.join(out_dir, "eval", label, f"{task}.json")


def evaluate_model(plan: DemoPlan, label: str, model, tokenizer, out_dir: str, heldout: str, log=print) -> None:
    """Every task of the plan for one model; tasks already written are skipped. Each file holds
    {"summary": what the suite's run function returns for this model, "scores": per-sample scores
    keyed so that the same sample has the same key for every model (for paired comparisons)}."""
    for task in plan.tasks:
        path = result_path(out_dir, label, task)
        if os.path.isfile(path):
            continue
        log(f"{label}: {task}")
        work = os.path.join(out_dir, "eval", label, task)
        write_json(path, run_task(plan, task, label, (model, tokenizer), heldout, work))


def run_task(plan: DemoPlan, task: str, label: str, pair: tuple, heldout: str, work: str) -> dict:
    models = {label: pair}
    if task == "nih":
        summary, scores = {}, {}
        for nih_task in plan.nih_tasks:  # one call per task: each has its own answer length
            new_tokens = CPU_NEW_TOKENS[nih_task] if plan.embedded_base else None
            result = run_nih(models, (nih_task,), plan.nih_lengths, plan.nih_samples, plan.seed, out_dir=work,
                             batch_size=plan.batch_size, max_new_tokens=new_tokens, train_length=plan.train_max_length)
            summary[nih_task] = result[label][nih_task]
            scores[nih_task] = {f"{r['length']}/{r['index']}": r["score"] for r in _rows(work, "nih")}
        return {"summary": summary, "scores": scores}
    if task == "icl":
        result = run_icl(models, plan.icl_shots, plan.icl_samples, seed=plan.seed, batch_size=plan.batch_size,
                         out_dir=work)
        return {"summary": result[label], "scores": {f"{r['shots']}/{r['index']}": r["score"] for r in _rows(work, "icl")}}
    if task == "attention":
        result = run_attention_mass(models, plan.attention_length, plan.attention_prompts, seed=plan.seed,
                                    show_progress=True)
        return {"summary": result[label], "scores": {}}
    if task == "degeneration":
        result = run_degeneration(models, None, plan.degeneration_tokens, batch_size=plan.batch_size, out_dir=work)
        return {"summary": result[label],
                "scores": {str(i): float(r["degenerate"]) for i, r in enumerate(_rows(work, "degeneration"))}}
    if task == "loss":
        losses = heldout_losses(*pair, heldout, plan.train_max_length)
        return {"summary": bootstrap(losses).to_dict(), "scores": {str(i): v for i, v in enumerate(losses)}}
    raise ValueError(f"unknown demo task {task}")


def _rows(work: str, name: str) -> list[dict]:
    with open(os.path.join(work, f"{name}_samples.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def gather(out_dir: str, labels: list[str], tasks: tuple[str, ...]) -> tuple[dict, dict]:
    """({task: {label: summary}}, {task: {label: scores}}) from the files evaluate_model wrote;
    the summaries are in the layout the evaluation suite's report and plot helpers take."""
    summaries: dict = {}
    scores: dict = {}
    for task in tasks:
        for label in labels:
            path = result_path(out_dir, label, task)
            if os.path.isfile(path):
                with open(path) as f:
                    saved = json.load(f)
                summaries.setdefault(task, {})[label] = saved["summary"]
                scores.setdefault(task, {})[label] = saved["scores"]
    return summaries, scores


@torch.no_grad()
def heldout_losses(model, tokenizer, heldout: str, max_length: int, batch_size: int = 8) -> list[float]:
    """Mean assistant-token loss of every held-out conversation."""
    data = build_dataset(heldout, tokenizer, max_length)
    collate = ChatCollator(tokenizer.pad_token_id)
    device = device_of(model)
    per_example = []
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(len(data), start + batch_size))])
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=-100,
                                                 reduction="none")
        per_example += (loss.sum(1) / (labels != -100).sum(1).clamp(min=1)).tolist()
    return per_example
