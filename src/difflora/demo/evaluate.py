"""Evaluating one model (the base or an adapter on it) on every demo task, through the evaluation
tasks' own run(). Each (model, task) result is written to OUT/eval/<model>/<task>.json as soon as it
exists (its summary and per-sample rows), so an interrupted evaluation resumes task by task and the
report stage reads the results back as TaskResults."""

from __future__ import annotations

import json
import os

import torch

from ..devices import device_of
from ..evaluation.results import write_json
from ..evaluation.settings import EvalSettings
from ..evaluation.stats import bootstrap
from ..evaluation.task import TaskResult
from ..evaluation.tasks import attention_mass, degeneration, many_shot_icl, needles
from ..train.chat_data import IGNORE_INDEX, ChatCollator, build_dataset
from .plan import DemoPlan

LOSS = "loss"  # the demo's own task: held-out assistant-token loss, one sample per conversation


def icl_eval_file(out_dir: str) -> str:
    """The ICL sentences the evaluation draws from when the plan splits the pool (plan.icl_split)."""
    return os.path.join(out_dir, "data", "icl_eval.jsonl")


def result_path(out_dir: str, label: str, task: str) -> str:
    return os.path.join(out_dir, "eval", label, f"{task}.json")


def evaluate_model(plan: DemoPlan, label: str, model, tokenizer, out_dir: str, heldout: str, log=print) -> None:
    """Every task of the plan for one model; tasks already written are skipped."""
    for task in plan.tasks:
        path = result_path(out_dir, label, task)
        if _read(path) is not None:
            continue
        log(f"{label}: {task}")
        result = run_task(plan, task, label, (model, tokenizer), heldout, icl_eval_file(out_dir))
        write_json(path, {"summary": result.summary[label], "rows": result.rows, "settings": result.settings,
                          "sample_fields": list(result.sample_fields), "score_field": result.score_field})


def run_task(plan: DemoPlan, task: str, label: str, pair: tuple, heldout: str, icl_data: str) -> TaskResult:
    """One demo task on one model, in memory (icl_data: the evaluation's half of the ICL pool, used
    when the plan splits it)."""
    models = {label: pair}
    settings = EvalSettings(seed=plan.seed, batch_size=plan.batch_size)
    if task == "nih":
        parts = [needles.run(models, settings, tasks=(t,), lengths=plan.nih_lengths, n_samples=plan.nih_samples,
                             max_new_tokens=(plan.nih_new_tokens or {}).get(t),
                             train_length=plan.train_max_length)
                 for t in plan.nih_tasks]  # one run per needle task: each has its own answer length
        summary = {t: p.summary[label][t] for t, p in zip(plan.nih_tasks, parts)}
        return TaskResult(needles.NAME, {label: summary}, [r for p in parts for r in p.rows],
                          {**parts[0].settings, "tasks": list(plan.nih_tasks)}, needles.SAMPLE_ID)
    if task == "icl":
        pool = {"data": icl_data} if plan.icl_split else {}
        return many_shot_icl.run(models, settings, shots=plan.icl_shots, n_samples=plan.icl_samples, **pool)
    if task == "attention":
        return attention_mass.run(models, settings, length=plan.attention_length, n_prompts=plan.attention_prompts)
    if task == "degeneration":
        return degeneration.run(models, settings, max_new_tokens=plan.degeneration_tokens)
    if task == LOSS:
        losses = heldout_losses(*pair, heldout, plan.train_max_length)
        return TaskResult(LOSS, {label: bootstrap(losses).to_dict()},
                          [{"model": label, "index": i, "score": v} for i, v in enumerate(losses)],
                          {"heldout": heldout}, ("index",))
    raise ValueError(f"unknown demo task {task}")


def gather(out_dir: str, labels: list[str], tasks: tuple[str, ...]) -> dict[str, TaskResult]:
    """{task: TaskResult of every model that has it} from the files evaluate_model wrote."""
    results: dict[str, TaskResult] = {}
    for task in tasks:
        for label in labels:
            saved = _read(result_path(out_dir, label, task))
            if saved is None:
                continue
            if task not in results:
                results[task] = TaskResult(task, {}, [], saved["settings"], tuple(saved["sample_fields"]),
                                           saved["score_field"])
            results[task].summary[label] = saved["summary"]
            results[task].rows += saved["rows"]
    return results


def _read(path: str) -> dict | None:
    """A saved (model, task) result; None when there is none yet, or it was written in an older layout
    (without per-sample rows), so that the task runs again."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    return saved if "rows" in saved else None


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
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=IGNORE_INDEX,
                                                 reduction="none")
        per_example += (loss.sum(1) / (labels != IGNORE_INDEX).sum(1).clamp(min=1)).tolist()
    return per_example
