"""Evaluating the base model and every adapter on every demo task (each task's results are
cached in the output folder, so an interrupted evaluation resumes task by task)."""

from __future__ import annotations

import json
import os

import torch
from rich.console import Console

from ..analysis.attention_mass import run_attention_mass
from ..evaluation.degeneration import run_degeneration
from ..evaluation.results import write_json
from ..evaluation.run_icl import run_icl
from ..evaluation.run_nih import run_nih
from ..evaluation.stats import bootstrap
from ..models import ModelSpec, load_model
from ..train.chat_data import ChatCollator, build_dataset
from .plan import DemoPlan

console = Console(stderr=True)


def load_all(base_path: str, adapters: dict[str, str]) -> dict:
    models = {"base": load_model(ModelSpec(base_path))}
    for name, path in adapters.items():
        models[name] = load_model(ModelSpec(base_path, path))
    return models


def evaluate_all(plan: DemoPlan, base_path: str, adapters: dict[str, str], heldout: str, out_dir: str) -> dict:
    eval_dir = os.path.join(out_dir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    models = load_all(base_path, adapters)
    tasks = {
        "nih": lambda: run_nih(models, plan.nih_tasks, plan.nih_lengths, plan.nih_samples, plan.seed, eval_dir,
                               train_length=plan.train_max_length),
        "icl": lambda: run_icl(models, plan.icl_shots, plan.icl_samples, seed=plan.seed, out_dir=eval_dir),
        "attention": lambda: run_attention_mass(models, plan.attention_length, plan.attention_prompts,
                                                seed=plan.seed, out_dir=eval_dir),
        "degeneration": lambda: run_degeneration(models, None, plan.degeneration_tokens, eval_dir),
        "loss": lambda: heldout_loss(models, heldout, plan.train_max_length),
    }
    results = {}
    for i, name in enumerate(t for t in tasks if t in plan.tasks):
        path = os.path.join(eval_dir, f"demo_{name}.json")
        if os.path.isfile(path):
            with open(path) as f:
                results[name] = json.load(f)
            console.print(f"{name}: cached results reused")
            continue
        console.rule(f"[bold]3/4 evaluating: {name} ({i + 1}/{len(plan.tasks)})")
        results[name] = json.loads(json.dumps(tasks[name]()))  # int keys become str, as when reloaded
        write_json(path, results[name])
    return results


@torch.no_grad()
def heldout_loss(models: dict, heldout: str, max_length: int, batch_size: int = 8) -> dict:
    """Mean assistant-token loss on the held-out instruction data, with a bootstrap CI over examples."""
    out = {}
    for label, (model, tokenizer) in models.items():
        data = build_dataset(heldout, tokenizer, max_length)
        collate = ChatCollator(tokenizer.pad_token_id)
        per_example = []
        for start in range(0, len(data), batch_size):
            batch = collate([data[i] for i in range(start, min(len(data), start + batch_size))])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=-100,
                                                     reduction="none")
            mask = labels != -100
            per_example += (loss.sum(1) / mask.sum(1).clamp(min=1)).tolist()
        out[label] = bootstrap(per_example).to_dict()
    return out
