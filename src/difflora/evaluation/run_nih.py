"""Running needle-in-a-haystack over models x tasks x context lengths."""

from __future__ import annotations

import os

from .generation import check_length, count_tokens_fn, generate, render
from .nih import TASKS, make_sample, score
from .plots import accuracy_lines
from .results import progress_bar, write_json, write_jsonl
from .stats import bootstrap

DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096)


def run_nih(models: dict, tasks=("mk2", "mk3", "mv"), lengths=DEFAULT_LENGTHS, n_samples: int = 20, seed: int = 0,
            out_dir: str | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
            show_progress: bool = True, train_length: int | None = None) -> dict:
    """models: label -> (model, tokenizer). Returns summary[label][task][length] = {mean, ci_low, ci_high, n}."""
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown needle task '{task}': choose from {', '.join(TASKS)}")
    summary, rows = {}, []
    total = len(models) * len(tasks) * len(lengths) * n_samples
    with progress_bar("needle-in-a-haystack", total, show_progress) as advance:
        for label, (model, tokenizer) in models.items():
            count = count_tokens_fn(tokenizer)
            for task in tasks:
                new_tokens = max_new_tokens or (40 if TASKS[task].value_kind == "number" else 64) * TASKS[task].n_values
                for length in lengths:
                    check_length(model, length, new_tokens)
                    samples = [make_sample(task, length, i, count, seed) for i in range(n_samples)]
                    texts = [render(tokenizer, s.prompt, s.answer_prefix) for s in samples]
                    outputs = generate(model, tokenizer, texts, new_tokens, batch_size, advance)
                    scores = [score(o, s.gold) for o, s in zip(outputs, samples)]
                    summary.setdefault(label, {}).setdefault(task, {})[length] = bootstrap(scores).to_dict()
                    rows += [{"model": label, "task": task, "length": length, "index": s.index, "depth": s.depth,
                              "gold": s.gold, "output": o, "score": sc} for s, o, sc in zip(samples, outputs, scores)]
    if out_dir:
        write_jsonl(os.path.join(out_dir, "nih_samples.jsonl"), rows)
        write_json(os.path.join(out_dir, "nih_summary.json"), summary)
        for task in tasks:
            series = {label: summary[label][task] for label in summary}
            accuracy_lines(series, "context length (tokens)", f"needle-in-a-haystack {task.upper()}",
                           os.path.join(out_dir, f"nih_{task}.png"), reference_x=train_length)
    return summary
