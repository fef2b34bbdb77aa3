"""The needle-in-a-haystack task (RULER format: MK-2, MK-3, MV) over models x tasks x lengths.

Samples and their score come from nih.py (the prompt format, which the demo's training data also
uses): sample `index` of a task at a length is deterministic in (seed, task, length, index), so
every model answers the same haystacks. summary[label][task][length] = {"mean", "ci_low",
"ci_high", "n"} (95% bootstrap interval). Files: nih_samples.jsonl, nih_summary.json,
nih_settings.json and one plot per task, nih_<task>.png.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ...errors import UserError
from ...validation import Whole, kind
from ..document import Report, fmt, lookup, sorted_numbers
from ..generation import check_length, generate, measure_fn, render
from ..nih import HAYSTACKS, NEEDLE_TASKS, check_task, make_sample, score
from ..paper import FINDINGS
from ..plots import accuracy_lines
from ..results import progress_bar, save_result
from ..settings import EvalSettings
from ..stats import bootstrap
from ..task import TaskResult

NAME = "nih"
SUMMARY_FILE = "nih_summary.json"
SAMPLE_ID = ("task", "length", "index")
DEFAULT_TASKS = tuple(NEEDLE_TASKS)
DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096)


def new_tokens_for(task: str) -> int:
    """Room for the answer: every value, with slack for the words around it."""
    spec = NEEDLE_TASKS[task]
    return (40 if spec.value_kind == "number" else 64) * spec.n_values


def run(models: dict, settings: EvalSettings | None = None, *, tasks=DEFAULT_TASKS, lengths=DEFAULT_LENGTHS,
        n_samples: int = 20, haystack: str | None = None, max_new_tokens: int | None = None,
        train_length: int | None = None) -> TaskResult:
    """Needle accuracy of every model ({label: (model, tokenizer)}) on every task at every length.

    haystack: None (each task's own) or needles/noise/essay; max_new_tokens: None gives each task
    room for all its values; train_length: the fine-tuning length, drawn on the plots."""
    settings = settings or EvalSettings()
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
        measure = measure_fn(tokenizer, settings.chat)
        for task in tasks:
            for length in lengths:
                samples = [make_sample(task, length, i, measure, settings.seed, haystack) for i in range(n_samples)]
                jobs.append((label, task, length, samples,
                             [render(tokenizer, s.prompt, s.answer_prefix, settings.chat) for s in samples]))

    summary: dict = {}
    rows = []
    with progress_bar("needle-in-a-haystack", sum(len(j[3]) for j in jobs), settings.show_progress) as advance:
        for label, task, length, samples, texts in jobs:
            model, tokenizer = models[label]
            outputs = generate(model, tokenizer, texts, new_tokens[task], settings.batch_size, advance)
            scores = [score(o, s.gold) for o, s in zip(outputs, samples)]
            summary.setdefault(label, {}).setdefault(task, {})[length] = bootstrap(scores).to_dict()
            rows += [{"model": label, "task": task, "length": length, "index": s.index, "haystack": s.haystack,
                      "haystack_units": s.haystack_units, "depth": s.depth, "query": s.query, "gold": s.gold,
                      "output": o, "score": sc} for s, o, sc in zip(samples, outputs, scores)]
    result = TaskResult(NAME, summary, rows, dict(tasks=tasks, lengths=lengths, n_samples=n_samples, seed=settings.seed,
                                                  haystack=haystack, max_new_tokens=new_tokens, chat=settings.chat,
                                                  train_length=train_length), SAMPLE_ID)
    if settings.out_dir:
        save_result(result, settings.out_dir)
        plot(summary, settings.out_dir, result.settings)
    return result


def run_nih(models: dict, tasks=DEFAULT_TASKS, lengths=DEFAULT_LENGTHS, n_samples: int = 20, *,
            haystack: str | None = None, max_new_tokens: int | None = None, train_length: int | None = None,
            **settings) -> dict:
    """run() for its summary alone; settings: EvalSettings fields by keyword (seed=, out_dir=, ...)."""
    return run(models, EvalSettings(**settings), tasks=tasks, lengths=lengths, n_samples=n_samples, haystack=haystack,
               max_new_tokens=max_new_tokens, train_length=train_length).summary


# The command line: `difflora eval nih` (cli/evaluate.py registers every task from these parts).
COMMAND = ("eval", "nih")
HELP = "needle in a haystack: MK-2, MK-3, MV (RULER format)"


def add_options(parser) -> None:
    """The task's own options, beside those every evaluation command shares."""
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), choices=list(NEEDLE_TASKS),
                        help="needle tasks")
    parser.add_argument("--lengths", nargs="+", type=kind(Whole(minimum=1)), default=list(DEFAULT_LENGTHS),
                        help="context lengths in each model's tokens (chat template and answer prefix included)")
    parser.add_argument("--samples", type=kind(Whole(minimum=1)), default=20, help="samples per task and length")
    parser.add_argument("--haystack", choices=list(HAYSTACKS), default=None,
                        help="override the tasks' haystacks "
                             "(default: RULER's: distractor needles for MK, essay for MV)")
    parser.add_argument("--max-new-tokens", type=kind(Whole(minimum=1)), default=None,
                        help="answer length limit (default: room for every value the task asks for)")
    parser.add_argument("--train-length", type=kind(Whole(minimum=1)), default=None,
                        help="draw the fine-tuning length on the plots (default: not drawn)")


def check_inputs(args) -> None:
    """Nothing to read before the models load: the needle samples are generated."""


def options(args) -> dict:
    """run()'s options from the parsed command line."""
    return dict(tasks=args.tasks, lengths=args.lengths, n_samples=args.samples, haystack=args.haystack,
                max_new_tokens=args.max_new_tokens, train_length=args.train_length)


def table(summary: dict) -> tuple[str, dict]:
    """The table printed after a run: (title, {(model, task): {length: accuracy}})."""
    return "needle in a haystack (accuracy)", {(m, t.upper()): {n: e["mean"] for n, e in d.items()}
                                               for m, tasks in summary.items() for t, d in tasks.items()}


def plot(summary: dict, folder: str, settings: dict | None = None) -> dict[str, str]:
    """One plot per task: accuracy against context length, one line per model, the fine-tuning
    length (settings["train_length"]) marked when known."""
    train_length = (settings or {}).get("train_length")
    tasks = sorted({t for per_model in summary.values() for t in per_model})
    return {task: accuracy_lines({label: summary[label][task] for label in summary if task in summary[label]},
                                 "context length (tokens)", f"needle-in-a-haystack {task.upper()}",
                                 os.path.join(folder, f"nih_{task}.png"), reference_x=train_length)
            for task in tasks}


def section(report: Report, summary: dict, figures: str, settings: dict | None = None) -> None:
    """A table per task (models x context lengths) and its plot, redrawn into `figures`."""
    paths = plot(summary, figures, settings)
    report.heading("Needle in a haystack (RULER format)")
    report.text(f"Paper: {FINDINGS['nih']} Accuracy (fraction of gold values found) with a 95% bootstrap "
                "interval; context lengths in each model's own tokens.")
    for task in sorted({t for m in summary.values() for t in m}):
        lengths = sorted_numbers(n for m in summary.values() for n in m.get(task, {}))
        rows = [[label] + [_cell(summary[label][task], n) for n in lengths]
                for label in summary if task in summary[label]]
        report.table([f"{task.upper()} \\ context"] + [str(n) for n in lengths], rows)
        report.image(paths[task], f"{task.upper()} accuracy against context length")


def overview(summary: dict) -> list[tuple[str, Callable[[str], str]]]:
    """Overview columns: each task's accuracy averaged over lengths."""
    def mean_over_lengths(label: str, task: str) -> str:
        if task not in summary.get(label, {}):
            return ""
        values = [e["mean"] for e in summary[label][task].values()]
        return f"{sum(values) / len(values):.2f}"

    return [(f"{task.upper()} (mean over lengths)", lambda label, t=task: mean_over_lengths(label, t))
            for task in sorted({t for m in summary.values() for t in m})]


def _cell(per_length: dict, length: int) -> str:
    estimate = lookup(per_length, length)
    return fmt(estimate) if estimate else ""
