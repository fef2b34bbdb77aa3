"""Degenerate free-form generation, measured: what the paper's authors saw by hand ("The question
is not a valid question. The question is not a valid question ...", uuids ending "0a0a0a").

An answer is degenerate when it is empty, loops (some word n-gram comes back min_repeats times),
or holds a run of a short repeated character pattern ("0a0a0a", "!!!!!!!!"). distinct-n (unique
word n-grams / all word n-grams) is reported beside the flags as a graded measure of repetition.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources

from ..errors import UserError
from ..textfiles import read_text
from .generation import check_length, generate, n_tokens, render
from .plots import grouped_bars
from .results import progress_bar, write_results
from .stats import bootstrap

# A unit of 1-4 characters repeated 3+ times in a row ("0a0a0a"); single characters need 8 in a row
# so that ordinary numbers such as 1000000 do not count.
_REPEATED_UNIT = re.compile(r"(.{1,4}?)\1{2,}", re.DOTALL)
FLAGS = ("empty", "ngram_loop", "char_pattern")


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
    """Unique word n-grams / word n-grams (1.0 for text too short to have any)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def char_pattern_runs(text: str, min_chars: int = 6) -> list[str]:
    """Runs of a repeated 1-4 character unit (not whitespace), at least min_chars long."""
    runs = []
    for match in _REPEATED_UNIT.finditer(text):
        unit, run = match.group(1), match.group(0)
        if unit.isspace() or len(run) < (8 if len(set(unit)) == 1 else min_chars):
            continue
        runs.append(run)
    return runs


def analyse(text: str) -> dict:
    flags = {"empty": not text.strip(), "ngram_loop": ngram_loop(text), "char_pattern": bool(char_pattern_runs(text))}
    return {**flags, "degenerate": any(flags.values()), "distinct_1": distinct_n(text, 1),
            "distinct_2": distinct_n(text, 2), "distinct_3": distinct_n(text, 3)}


def load_prompts(source: str | None = None) -> list[str]:
    """Prompts from a JSONL file of {"prompt": ...} rows, a .txt file (one per line), or the bundled set."""
    if source is None:
        text, name = resources.files("difflora.resources").joinpath("degeneration_prompts.jsonl").read_text(), "bundled"
    elif os.path.isfile(source):
        text, name = read_text(source), source
    else:
        raise UserError(f"prompt file '{source}' does not exist")
    if name.endswith(".txt"):
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        prompts = [_prompt_of(line, name, i) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not prompts:
        raise UserError(f"prompt file '{name}' is empty: write one {{\"prompt\": ...}} object per line")
    return prompts


def _prompt_of(line: str, source: str, line_no: int) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source}:{line_no}: invalid JSON ({exc.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise UserError(f'{source}:{line_no}: expected {{"prompt": "..."}}')
    return row["prompt"]


def run_degeneration(models: dict, prompts: str | list[str] | None = None, max_new_tokens: int = 64,
                     out_dir: str | None = None, batch_size: int = 8, show_progress: bool = True, worst: int = 3,
                     chat: bool | None = None) -> dict:
    """Free-form answers of every model to every prompt, checked for degeneration.

    prompts: a file (see load_prompts), a list of strings, or None for the bundled set. Returns
    summary[label] = {"rate": {mean, ci_low, ci_high, n}, "empty", "ngram_loop", "char_pattern",
    "distinct_1", "distinct_2", "distinct_3" (means over prompts), "worst": [{prompt, output}]}.
    With out_dir: degeneration_samples.jsonl, degeneration_summary.json, degeneration_settings.json,
    degeneration.png."""
    texts = list(prompts) if isinstance(prompts, list | tuple) else load_prompts(prompts)
    if not texts:
        raise UserError("no prompts to generate from")
    rendered = {}
    for label, (model, tokenizer) in models.items():  # every prompt checked before any generation
        rendered[label] = [render(tokenizer, p, chat=chat) for p in texts]
        check_length(model, max(n_tokens(tokenizer, t) for t in rendered[label]), max_new_tokens, label)
    summary: dict = {}
    records = []
    with progress_bar("degeneration", len(models) * len(texts), show_progress) as advance:
        for label, (model, tokenizer) in models.items():
            outputs = generate(model, tokenizer, rendered[label], max_new_tokens, batch_size, advance)
            stats = [analyse(o) for o in outputs]
            rows = [{"model": label, "prompt": p, "output": o, **s} for p, o, s in zip(texts, outputs, stats)]
            records += rows
            summary[label] = summarise(rows, worst)
    if out_dir:
        write_results(out_dir, "degeneration", summary, records,
                      dict(prompts=prompts if isinstance(prompts, str | None) else "given", n_prompts=len(texts),
                           max_new_tokens=max_new_tokens, chat=chat))
        plot_degeneration(summary, os.path.join(out_dir, "degeneration.png"))
    return summary


def summarise(rows: list[dict], worst: int = 3) -> dict:
    """Rates over one model's rows, and its worst answers (degenerate first, least distinct first)."""
    ranked = sorted(rows, key=lambda r: (not r["degenerate"], r["distinct_2"], r["distinct_1"]))
    return {
        "rate": bootstrap([float(r["degenerate"]) for r in rows]).to_dict(),
        **{k: sum(float(r[k]) for r in rows) / len(rows)
           for k in (*FLAGS, "distinct_1", "distinct_2", "distinct_3")},
        "worst": [{"prompt": r["prompt"], "output": r["output"], "flags": [f for f in FLAGS if r[f]]}
                  for r in ranked[:worst] if r["degenerate"]],
    }


def plot_degeneration(summary: dict, path: str) -> str:
    values = {label: {"degenerate": s["rate"]["mean"], "empty": s["empty"], "n-gram loop": s["ngram_loop"],
                      "char pattern": s["char_pattern"], "1 - distinct-2": 1 - s["distinct_2"]}
              for label, s in summary.items()}
    errors = {label: {"degenerate": (s["rate"]["ci_low"], s["rate"]["ci_high"])} for label, s in summary.items()}
    return grouped_bars(values, "degenerate free-form generation", "fraction of answers", path, errors)
