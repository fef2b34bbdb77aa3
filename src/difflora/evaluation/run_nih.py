"""Running needle-in-a-haystack over models x tasks x context lengths."""

from __future__ import annotations

import os

from ..errors import UserError
from .generation import check_length, generate, measure_fn, render
from .nih import TASKS, check_task, make_sample, score
from .plots import accuracy_lines
from .results import progress_bar, write_results
from .stats import bootstrap

DEFAULT_TASKS = ("mk2", "mk3", "mv")
DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096)


def new_tokens_for(task: str) -> int:
    """Room for the answer: every value, with slack for the words around it."""
    spec = TASKS[task]
    return (40 if spec.value_kind == "number" else 64) * spec.n_values


def run_nih(models: dict, tasks=DEFAULT_TASKS, lengths=DEFAULT_LENGTHS, n_samples: int = 20, seed: int = 0,
            out_dir: str | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
            show_progress: bool = True, train_length: int | None = None, haystack: str | None = None,
            chat: bool | None = None) -> dict:
    """Needle-in-a-haystack accuracy of every model on every task at every length.

    models: {label: (model, tokenizer)}; haystack: None (each task's own) or needles/noise/essay;
    chat: None uses the chat template when the tokenizer has one. Returns
    summary[label][task][length] = {"mean", "ci_low", "ci_high", "n"} (95% bootstrap interval).
    With out_dir: nih_samples.jsonl, nih_summary.json, nih_settings.json, nih_<task>.png."""
    tasks, lengths = list(tasks), sorted(int(n) for n in lengths)
    for task in tasks:
        check_task(task, haystack)
    if not models or not tasks or not lengths or n_samples < 1:
        raise UserError("needle-in-a-haystack needs at least one model, task, length and sample")
    if lengths[0] < 1:
        raise UserError(f"context lengths must be positive (got {lengths[0]})")
    new_tokens = {t: max_new_tokens or new_tokens_for(t) for t in tasks}
    for label, (model, _) in models.items():  # refuse impossible lengths before any work
        check_length(model, lengths[-1], max(new_tokens.values()), label)

    jobs = []  # (label, task, length, samples, rendered texts)
    for label, (_, tokenizer) in models.items():
        measure = measure_fn(tokenizer, chat)
        for task in tasks:
            for length in lengths:
                samples = [make_sample(task, length, i, measure, seed, haystack) for i in range(n_samples)]
                jobs.append((label, task, length, samples,
                             [render(tokenizer, s.prompt, s.answer_prefix, chat) for s in samples]))

    summary: dict = {}
    rows = []
    with progress_bar("needle-in-a-haystack", sum(len(j[3]) for j in jobs), show_progress) as advance:
        for label, task, length, samples, texts in jobs:
            model, tokenizer = models[label]
            outputs = generate(model, tokenizer, texts, new_tokens[task], batch_size, advance)
            scores = [score(o, s.gold) for o, s in zip(outputs, samples)]
            summary.setdefault(label, {}).setdefault(task, {})[length] = bootstrap(scores).to_dict()
            rows += [{"model": label, "task": task, "length": length, "index": s.index, "haystack": s.haystack,
                      "haystack_units": s.haystack_units, "depth": s.depth, "query": s.query, "gold": s.gold,
                      "output": o, "score": sc} for s, o, sc in zip(samples, outputs, scores)]
    if out_dir:
        settings = dict(tasks=tasks, lengths=lengths, n_samples=n_samples, seed=seed, haystack=haystack,
                        max_new_tokens=new_tokens, chat=chat, train_length=train_length)
        write_results(out_dir, "nih", summary, rows, settings)
        plot_nih(summary, out_dir, train_length)
    return summary


def plot_nih(summary: dict, out_dir: str, train_length: int | None = None) -> dict[str, str]:
    """One plot per task: accuracy against context length, one line per model."""
    tasks = sorted({t for per_model in summary.values() for t in per_model})
    return {task: accuracy_lines({label: summary[label][task] for label in summary if task in summary[label]},
                                 "context length (tokens)", f"needle-in-a-haystack {task.upper()}",
                                 os.path.join(out_dir, f"nih_{task}.png"), reference_x=train_length)
            for task in tasks}
