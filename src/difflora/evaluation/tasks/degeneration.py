"""The degenerate-generation task: free-form answers checked for degeneration, measured: what the
paper's authors saw by hand ("The question is not a valid question. The question is not a valid
question ...", uuids ending "0a0a0a").

An answer is degenerate when it is empty, loops (some word n-gram comes back min_repeats times),
or holds a run of a short repeated character pattern ("0a0a0a", "!!!!!!!!"). distinct-n (unique
word n-grams / all word n-grams) is reported beside the flags as a graded measure of repetition.
A sample is a prompt (its index in the prompt list); its score is 1 when the answer degenerates.
Files: degeneration_samples.jsonl, degeneration_summary.json, degeneration_settings.json,
degeneration.png.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from importlib import resources

from ...errors import UserError
from ...textfiles import read_jsonl, read_text
from ...validation import InputFile, Whole, kind
from ..document import Report, fmt
from ..generation import check_length, generate, n_tokens, render
from ..paper import FINDINGS
from ..plots import grouped_bars
from ..results import progress_bar, save_result
from ..settings import EvalSettings
from ..stats import bootstrap
from ..task import TaskResult

NAME = "degeneration"
SUMMARY_FILE = "degeneration_summary.json"
SAMPLE_ID = ("index",)
SCORE = "degenerate"

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
        prompts = [_prompt_of(row, where) for where, row in read_jsonl(name, text)]
    if not prompts:
        raise UserError(f"prompt file '{name}' is empty: write one {{\"prompt\": ...}} object per line")
    return prompts


def _prompt_of(row, where: str) -> str:
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise UserError(f'{where}: expected {{"prompt": "..."}}')
    return row["prompt"]


def run(models: dict, settings: EvalSettings | None = None, *, prompts: str | list[str] | None = None,
        max_new_tokens: int = 64, worst: int = 3) -> TaskResult:
    """Free-form answers of every model ({label: (model, tokenizer)}) to every prompt, checked for
    degeneration. prompts: a file (see load_prompts), a list of strings, or None for the bundled set.
    summary[label] = {"rate": {mean, ci_low, ci_high, n}, "empty", "ngram_loop", "char_pattern",
    "distinct_1", "distinct_2", "distinct_3" (means over prompts), "worst": [{prompt, output, flags}]}."""
    settings = settings or EvalSettings()
    texts = list(prompts) if isinstance(prompts, list | tuple) else load_prompts(prompts)
    if not texts:
        raise UserError("no prompts to generate from")
    rendered = {}
    for label, (model, tokenizer) in models.items():  # every prompt checked before any generation
        rendered[label] = [render(tokenizer, p, chat=settings.chat) for p in texts]
        check_length(model, max(n_tokens(tokenizer, t) for t in rendered[label]), max_new_tokens, label)
    summary: dict = {}
    records = []
    with progress_bar("degeneration", len(models) * len(texts), settings.show_progress) as advance:
        for label, (model, tokenizer) in models.items():
            outputs = generate(model, tokenizer, rendered[label], max_new_tokens, settings.batch_size, advance)
            rows = [{"model": label, "index": i, "prompt": p, "output": o, **analyse(o)}
                    for i, (p, o) in enumerate(zip(texts, outputs))]
            records += rows
            summary[label] = summarise(rows, worst)
    result = TaskResult(NAME, summary, records,
                        dict(prompts=prompts if isinstance(prompts, str | None) else "given", n_prompts=len(texts),
                             max_new_tokens=max_new_tokens, chat=settings.chat), SAMPLE_ID, SCORE)
    if settings.out_dir:
        save_result(result, settings.out_dir)
        plot(summary, settings.out_dir)
    return result


def run_degeneration(models: dict, prompts: str | list[str] | None = None, *, max_new_tokens: int = 64,
                     worst: int = 3, **settings) -> dict:
    """run() for its summary alone; settings: EvalSettings fields by keyword (out_dir=, batch_size=, ...)."""
    return run(models, EvalSettings(**settings), prompts=prompts, max_new_tokens=max_new_tokens, worst=worst).summary


# The command line: `difflora eval degeneration` (cli/evaluate.py registers every task from these parts).
COMMAND = ("eval", "degeneration")
HELP = "free-form generation: loops, repeated patterns, empty answers"


def add_options(parser) -> None:
    """The task's own options, beside those every evaluation command shares."""
    parser.add_argument("--prompts", default=None, type=kind(InputFile()),
                        help='JSONL of {"prompt": ...} or a .txt file (default: bundled prompts)')
    parser.add_argument("--max-new-tokens", type=kind(Whole(minimum=1)), default=64, help="answer length")
    parser.add_argument("--worst", type=kind(Whole(minimum=0)), default=3, help="worst answers kept per model")


def check_inputs(args) -> None:
    """A bad prompt file fails before any model loads."""
    if args.prompts:
        load_prompts(args.prompts)


def options(args) -> dict:
    """run()'s options from the parsed command line."""
    return dict(prompts=args.prompts, max_new_tokens=args.max_new_tokens, worst=args.worst)


def table(summary: dict) -> tuple[str, dict]:
    """The table printed after a run: (title, {(model,): {measure: value}})."""
    return "degenerate generation", {(m,): {"degenerate": s["rate"]["mean"], "empty": s["empty"],
                                            "loop": s["ngram_loop"], "char pattern": s["char_pattern"],
                                            "distinct-2": s["distinct_2"]} for m, s in summary.items()}


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


def plot(summary: dict, folder: str, settings: dict | None = None) -> str:
    """Bars per model: the degenerate rate (with its interval) and each kind of degeneration."""
    values = {label: {"degenerate": s["rate"]["mean"], "empty": s["empty"], "n-gram loop": s["ngram_loop"],
                      "char pattern": s["char_pattern"], "1 - distinct-2": 1 - s["distinct_2"]}
              for label, s in summary.items()}
    errors = {label: {"degenerate": (s["rate"]["ci_low"], s["rate"]["ci_high"])} for label, s in summary.items()}
    return grouped_bars(values, "degenerate free-form generation", "fraction of answers",
                        os.path.join(folder, "degeneration.png"), errors)


def section(report: Report, summary: dict, figures: str, settings: dict | None = None) -> None:
    """Rates per model, the plot redrawn into `figures`, and the two worst answers of each model."""
    path = plot(summary, figures, settings)
    report.heading("Degenerate generation")
    report.text(f"Paper: {FINDINGS['degeneration']} An answer is degenerate when it is empty, loops "
                "(a word 4-gram three times) or holds a run of a repeated character pattern.")
    report.table(["model", "degenerate rate", "empty", "n-gram loop", "char pattern", "distinct-1", "distinct-2"],
                 [[label, fmt(s["rate"]), f"{s['empty']:.2f}", f"{s['ngram_loop']:.2f}", f"{s['char_pattern']:.2f}",
                   f"{s.get('distinct_1', float('nan')):.2f}", f"{s['distinct_2']:.2f}"]
                  for label, s in summary.items()])
    report.image(path, "degeneration rates")
    for label, s in summary.items():
        for w in s.get("worst", [])[:2]:
            report.text(f"Worst from {label}: prompt {w['prompt']!r} -> {w['output'][:200]!r}")


def overview(summary: dict) -> list[tuple[str, Callable[[str], str]]]:
    """Overview column: the degenerate rate."""
    if not summary:
        return []
    return [("degenerate rate", lambda label: fmt(summary[label]["rate"]) if label in summary else "")]
