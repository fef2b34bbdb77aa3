"""The many-shot in-context classification task (HELMET format) over models x numbers of
demonstrations.

Samples and their score come from icl.py (the prompt format, which the demo's training data also
uses): the same test examples at every shot count, so accuracies differ only by the
demonstrations. summary[label][shots] = {"mean", "ci_low", "ci_high", "n", "prompt_tokens"}.
Files: icl_samples.jsonl, icl_summary.json, icl_settings.json, icl.png.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ...errors import UserError
from ...validation import Text, Whole, kind
from ..document import Report, fmt, lookup, sorted_numbers
from ..generation import check_length, generate, n_tokens, render
from ..icl import ANSWER_PREFIX, BUNDLED, SEPARATOR, load_examples, make_sample, pick_test_example, score
from ..paper import FINDINGS
from ..plots import accuracy_lines
from ..results import progress_bar, save_result
from ..settings import EvalSettings
from ..stats import bootstrap
from ..task import TaskResult

NAME = "icl"
SUMMARY_FILE = "icl_summary.json"
SAMPLE_ID = ("shots", "index")
DEFAULT_SHOTS = (6, 12, 24, 48)


def run(models: dict, settings: EvalSettings | None = None, *, shots=DEFAULT_SHOTS, n_samples: int = 30,
        data: str = BUNDLED, test_data: str | None = None, text_field: str = "text", label_field: str = "label",
        split: str = "train", test_split: str = "test", max_new_tokens: int = 8) -> TaskResult:
    """Many-shot ICL accuracy of every model ({label: (model, tokenizer)}) at every shot count.

    data: a (text, label) JSONL, a datasets name or BUNDLED (fields text_field/label_field, `split`);
    test_data: where test examples come from (default: the same pool, each test example left out
    of its own demonstrations)."""
    settings = settings or EvalSettings()
    shots = sorted(int(k) for k in shots)
    if not models or not shots or n_samples < 1 or shots[0] < 0:
        raise UserError("many-shot ICL needs at least one model, a non-negative shot count and one sample")
    pool = load_examples(data, text_field, label_field, split)
    tests = load_examples(test_data, text_field, label_field, test_split) if test_data else pool
    test_rows = [pick_test_example(tests, i, settings.seed) for i in range(n_samples)]
    samples = {k: [make_sample(pool, k, i, settings.seed, test=t, demo_pool=pool if test_data else None)
                   for i, t in enumerate(test_rows)] for k in shots}

    jobs = []  # (label, shots, texts, longest prompt)
    for label, (model, tokenizer) in models.items():
        for k in shots:
            texts = [render(tokenizer, s.prompt, ANSWER_PREFIX, settings.chat, SEPARATOR) for s in samples[k]]
            longest = max(n_tokens(tokenizer, t) for t in texts)
            check_length(model, longest, max_new_tokens, label)  # before any generation
            jobs.append((label, k, texts, longest))

    summary: dict = {}
    rows = []
    with progress_bar("many-shot ICL", len(jobs) * n_samples, settings.show_progress) as advance:
        for label, k, texts, longest in jobs:
            model, tokenizer = models[label]
            outputs = generate(model, tokenizer, texts, max_new_tokens, settings.batch_size, advance)
            scores = [score(o, s.answer) for o, s in zip(outputs, samples[k])]
            summary.setdefault(label, {})[k] = dict(bootstrap(scores).to_dict(), prompt_tokens=longest)
            rows += [{"model": label, "shots": k, "index": s.index, "text": s.text, "label": s.label,
                      "gold": s.gold, "output": o, "score": sc} for s, o, sc in zip(samples[k], outputs, scores)]
    result = TaskResult(NAME, summary, rows, dict(shots=shots, n_samples=n_samples, data=data, test_data=test_data,
                                                  seed=settings.seed, classes=len({r["label"] for r in pool}),
                                                  chat=settings.chat, max_new_tokens=max_new_tokens), SAMPLE_ID)
    if settings.out_dir:
        save_result(result, settings.out_dir)
        plot(summary, settings.out_dir)
    return result


def run_icl(models: dict, shots=DEFAULT_SHOTS, n_samples: int = 30, *, data: str = BUNDLED,
            test_data: str | None = None, text_field: str = "text", label_field: str = "label", split: str = "train",
            test_split: str = "test", max_new_tokens: int = 8, **settings) -> dict:
    """run() for its summary alone; settings: EvalSettings fields by keyword (seed=, out_dir=, ...)."""
    return run(models, EvalSettings(**settings), shots=shots, n_samples=n_samples, data=data, test_data=test_data,
               text_field=text_field, label_field=label_field, split=split, test_split=test_split,
               max_new_tokens=max_new_tokens).summary


# The command line: `difflora eval icl` (cli/evaluate.py registers every task from these parts).
COMMAND = ("eval", "icl")
HELP = "many-shot in-context classification (HELMET format)"


def add_options(parser) -> None:
    """The task's own options, beside those every evaluation command shares."""
    parser.add_argument("--shots", nargs="+", type=kind(Whole(minimum=0)), default=list(DEFAULT_SHOTS),
                        help="demonstrations per prompt")
    parser.add_argument("--samples", type=kind(Whole(minimum=1)), default=30,
                        help="test examples (the same at every shot count)")
    parser.add_argument("--data", default=BUNDLED, type=kind(Text()),
                        help="JSONL of {text, label}, a datasets name (NAME or NAME:CONFIG), or bundled:topics")
    parser.add_argument("--test-data", default=None, type=kind(Text()),
                        help="test examples from here (default: --data, each left out of its demos)")
    parser.add_argument("--text-field", default="text", type=kind(Text()), help="field of each row holding the text")
    parser.add_argument("--label-field", default="label", type=kind(Text()),
                        help="field of each row holding the label")
    parser.add_argument("--split", default="train", type=kind(Text()), help="datasets split for demonstrations")
    parser.add_argument("--test-split", default="test", type=kind(Text()), help="datasets split of --test-data")
    parser.add_argument("--max-new-tokens", type=kind(Whole(minimum=1)), default=8, help="answer length limit")


def check_inputs(args) -> None:
    """A bad local data file fails before any model loads (a datasets name is read by run())."""
    for source in (args.data, args.test_data):
        if source and (os.path.exists(source) or source.endswith((".jsonl", ".json"))):
            load_examples(source, args.text_field, args.label_field)


def options(args) -> dict:
    """run()'s options from the parsed command line."""
    return dict(shots=args.shots, n_samples=args.samples, data=args.data, test_data=args.test_data,
                text_field=args.text_field, label_field=args.label_field, split=args.split,
                test_split=args.test_split, max_new_tokens=args.max_new_tokens)


def table(summary: dict) -> tuple[str, dict]:
    """The table printed after a run: (title, {(model,): {shots: accuracy}})."""
    return "many-shot ICL (accuracy by shots)", {(m,): {k: e["mean"] for k, e in d.items()} for m, d in summary.items()}


def plot(summary: dict, folder: str, settings: dict | None = None) -> str:
    """Accuracy against the number of demonstrations, one line per model."""
    return accuracy_lines(summary, "demonstrations (shots)", "many-shot in-context classification",
                          os.path.join(folder, "icl.png"))


def section(report: Report, summary: dict, figures: str, settings: dict | None = None) -> None:
    """Models x shot counts, and the plot redrawn into `figures`."""
    path = plot(summary, figures, settings)
    report.heading("Many-shot in-context learning (HELMET format)")
    report.text(f"Paper: {FINDINGS['icl']} Exact-match accuracy with a 95% bootstrap interval.")
    shots = sorted_numbers(k for m in summary.values() for k in m)
    report.table(["model \\ shots"] + [str(k) for k in shots],
                 [[label] + [_cell(summary[label], k) for k in shots] for label in summary])
    report.image(path, "accuracy against number of demonstrations")


def overview(summary: dict) -> list[tuple[str, Callable[[str], str]]]:
    """Overview column: accuracy at the largest shot count."""
    if not summary:
        return []
    top = max(sorted_numbers(k for m in summary.values() for k in m))
    return [(f"ICL @ {top} shots", lambda label: _cell(summary.get(label, {}), top))]


def _cell(per_shots: dict, shots: int) -> str:
    estimate = lookup(per_shots, shots)
    return fmt(estimate) if estimate else ""
