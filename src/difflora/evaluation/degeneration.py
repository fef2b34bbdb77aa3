"""Degenerate free-form generation, measured: what the paper's authors saw by hand ("The question
is not a valid question. The question is not a valid question ...", uuids ending "0a0a0a")."""

from __future__ import annotations

import json
import os
import re
from importlib import resources

from ..errors import UserError
from .generation import generate, render
from .results import progress_bar, write_json, write_jsonl
from .stats import bootstrap

CHAR_PATTERN = re.compile(r"(.{1,4}?)\1{5,}", re.DOTALL)  # a 1-4 character unit repeated 6+ times: "0a0a0a0a0a0a"


def ngram_loop(text: str, n: int = 4, min_repeats: int = 3) -> bool:
    """Some word n-gram occurs min_repeats or more times: a repetition loop."""
    words = text.split()
    counts: dict[tuple, int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= min_repeats:
            return True
    return False


def distinct_n(text: str, n: int) -> float:
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def char_pattern_run(text: str) -> bool:
    return any(len(set(m.group(1))) > 0 and not m.group(1).isspace() for m in CHAR_PATTERN.finditer(text))


def analyse(text: str) -> dict:
    flags = {"empty": not text.strip(), "ngram_loop": ngram_loop(text), "char_pattern": char_pattern_run(text)}
    return {**flags, "degenerate": any(flags.values()), "distinct_1": distinct_n(text, 1),
            "distinct_2": distinct_n(text, 2)}


def load_prompts(source: str | None) -> list[str]:
    if source is None:
        text = resources.files("difflora.resources").joinpath("degeneration_prompts.jsonl").read_text()
    elif os.path.isfile(source):
        with open(source) as f:
            text = f.read()
    else:
        raise UserError(f"prompt file '{source}' does not exist")
    prompts = [json.loads(line)["prompt"] for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"prompt file '{source}' is empty")
    return prompts


def run_degeneration(models: dict, prompts: str | None = None, max_new_tokens: int = 64, out_dir: str | None = None,
                     batch_size: int = 8, show_progress: bool = True, worst: int = 3) -> dict:
    """summary[label] = {rate: {mean, ci}, empty, ngram_loop, char_pattern, distinct_2, worst: [...]}"""
    texts = load_prompts(prompts)
    summary, records = {}, []
    with progress_bar("degeneration", len(models) * len(texts), show_progress) as advance:
        for label, (model, tokenizer) in models.items():
            outputs = generate(model, tokenizer, [render(tokenizer, p) for p in texts], max_new_tokens, batch_size, advance)
            stats = [analyse(o) for o in outputs]
            rows = [{"model": label, "prompt": p, "output": o, **s} for p, o, s in zip(texts, outputs, stats)]
            records += rows
            ranked = sorted(rows, key=lambda r: (not r["degenerate"], r["distinct_2"]))
            summary[label] = {
                "rate": bootstrap([float(s["degenerate"]) for s in stats]).to_dict(),
                **{k: sum(s[k] for s in stats) / len(stats) for k in ("empty", "ngram_loop", "char_pattern", "distinct_2")},
                "worst": [{"prompt": r["prompt"], "output": r["output"]} for r in ranked[:worst] if r["degenerate"]],
            }
    if out_dir:
        write_jsonl(os.path.join(out_dir, "degeneration_samples.jsonl"), records)
        write_json(os.path.join(out_dir, "degeneration_summary.json"), summary)
    return summary
