"""The attention-mass task (the paper's Figure 4): attention from the query to each segment of a
needle prompt, per layer, for every model; the measurement itself is difflora.analysis.segments.

Prompts: generated needle prompts (the RULER tasks of nih.py; the needle analysed is the first gold
needle, the query is the question) or the user's own JSONL rows {"prompt": text containing the
needle, "needle": the needle text, "query": optional, the question at the end of the prompt
(default: the prompt's last line), "answer_prefix": optional}. There is no per-sample score: the
result is each model's masses averaged over prompts. summary[label] = {"layers": {kind: [per layer
{segment: mass}]}, "mean": {kind: {segment: mass}} (averaged over layers), "layer": [layer indices],
"lambda": [per layer], "segment_tokens": {segment: mean tokens}, "row_total": [per layer],
"n_prompts"}. Files: attention_mass.json, attention_mass.png (averaged over layers) and
attention_mass_layers.png.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ...analysis.segments import SEGMENTS, analyse_prompt
from ...errors import UserError
from ...textfiles import read_jsonl
from ...validation import InputFile, Whole, kind
from ..document import Report
from ..generation import check_length, measure_fn, n_tokens, render
from ..nih import NEEDLE_TASKS, make_sample
from ..paper import FINDINGS
from ..plots import pyplot, save_figure
from ..results import progress_bar, write_json
from ..settings import EvalSettings
from ..task import TaskResult

NAME = "attention"
SUMMARY_FILE = "attention_mass.json"
SAMPLE_ID = None  # masses are averaged over prompts: nothing to pair sample by sample
SEGMENT_NAMES = ("BOS", "before needle", "needle", "after needle", "query")
KINDS = ("positive", "negative", "net")


@dataclass
class NeedlePrompt:
    """A user prompt whose needle and query are known as text."""

    prompt: str
    needle: str
    query: str | None = None
    answer_prefix: str = ""


def load_prompts(path: str) -> list[NeedlePrompt]:
    """User prompts from a JSONL file (see the module docstring)."""
    if not os.path.isfile(path):
        raise UserError(f"prompt file '{path}' does not exist")
    prompts = []
    for where, row in read_jsonl(path):
        if not (isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("needle"), str)):
            raise UserError(f'{where}: expected {{"prompt": ..., "needle": ..., "query": optional}}')
        prompt = NeedlePrompt(row["prompt"], row["needle"], row.get("query"), row.get("answer_prefix", ""))
        _query_start(prompt, where)
        prompts.append(prompt)
    if not prompts:
        raise UserError(f"prompt file '{path}' is empty")
    return prompts


def _query_start(p: NeedlePrompt, where: str = "prompt") -> int:
    """Character index in p.prompt where the query begins."""
    if p.query is not None:
        start = p.prompt.rfind(p.query)
        if start < 0:
            raise UserError(f"{where}: the query {p.query[:60]!r} is not in the prompt")
    else:
        start = p.prompt.rstrip("\n").rfind("\n") + 1
    if p.needle not in p.prompt[:start]:
        raise UserError(f"{where}: the needle {p.needle[:60]!r} must appear in the prompt before the query")
    return start


def _render_with_query(tokenizer, p: NeedlePrompt, chat: bool | None) -> tuple[str, int]:
    """The rendered text and the character where the query starts in it."""
    start = _query_start(p)
    marker = "\x00"  # find the query's position after the chat template wraps the prompt
    rendered = render(tokenizer, p.prompt[:start] + marker + p.prompt[start:], p.answer_prefix, chat)
    position = rendered.index(marker)
    return rendered.replace(marker, "", 1), position


def needle_prompts(tokenizer, task: str, length: int, n: int, seed: int, chat: bool | None) -> list[NeedlePrompt]:
    """Generated RULER prompts; the needle analysed is the first gold needle; the query is the question."""
    prompts = []
    for i in range(n):
        s = make_sample(task, length, i, measure_fn(tokenizer, chat), seed)
        question = s.prompt[s.prompt.rindex("\nWhat ") + 1:]
        prompts.append(NeedlePrompt(s.prompt, s.needle_text[0], question, s.answer_prefix))
    return prompts


def run(models: dict, settings: EvalSettings | None = None, *, prompts: list[NeedlePrompt] | str | None = None,
        length: int = 512, n_prompts: int = 4, task: str = "mk2") -> TaskResult:
    """Attention mass per segment for every model ({label: (model, tokenizer)}).

    prompts: NeedlePrompt list, a JSONL path, or None for n_prompts generated `task` prompts of
    `length` tokens (seeded by settings.seed)."""
    settings = settings or EvalSettings()
    if isinstance(prompts, str):
        prompts = load_prompts(prompts)
    if prompts is not None and not prompts:
        raise UserError("no prompts to analyse")
    rendered = {}  # label -> [(text, needle, query start)], every prompt checked before any forward
    for label, (model, tokenizer) in models.items():
        if prompts is None:
            check_length(model, length, 0, label)
        todo = prompts or needle_prompts(tokenizer, task, length, n_prompts, settings.seed, settings.chat)
        rendered[label] = [(*_render_with_query(tokenizer, p, settings.chat), p.needle) for p in todo]
        check_length(model, max(n_tokens(tokenizer, text) for text, _, _ in rendered[label]), 0, label)
    summary = {}
    with progress_bar("attention mass", sum(map(len, rendered.values())), settings.show_progress) as advance:
        for label, (model, tokenizer) in models.items():
            per_prompt = []
            for text, question_start, needle in rendered[label]:
                per_prompt.append(analyse_prompt(model, tokenizer, text, needle, question_start))
                advance(1)
            summary[label] = _average(per_prompt)
    result = TaskResult(NAME, summary, settings=dict(prompts=prompts if prompts is None else len(prompts),
                                                     length=length, n_prompts=n_prompts, task=task, seed=settings.seed))
    if settings.out_dir:
        write_json(os.path.join(settings.out_dir, SUMMARY_FILE), summary)
        plot(summary, settings.out_dir)
    return result


def attention_mass(models: dict, prompts: list[NeedlePrompt] | str | None = None, *, length: int = 512,
                   n_prompts: int = 4, task: str = "mk2", **settings) -> dict:
    """run() for its summary alone; settings: EvalSettings fields by keyword (seed=, out_dir=, ...; no
    progress bar unless show_progress=True)."""
    settings.setdefault("show_progress", False)
    return run(models, EvalSettings(**settings), prompts=prompts, length=length, n_prompts=n_prompts, task=task).summary


# The command line: `difflora analyze attention` (cli/evaluate.py registers every task from these parts).
COMMAND = ("analyze", "attention")
HELP = "attention mass per segment on needle prompts (the paper's Figure 4)"


def add_options(parser) -> None:
    """The task's own options, beside those every evaluation command shares."""
    parser.add_argument("--length", type=kind(Whole(minimum=1)), default=512,
                        help="tokens of each generated needle prompt")
    parser.add_argument("--prompts", type=kind(Whole(minimum=1)), default=4, help="number of generated needle prompts")
    parser.add_argument("--task", choices=list(NEEDLE_TASKS), default="mk2", help="needle task of generated prompts")
    parser.add_argument("--prompts-file", default=None, type=kind(InputFile()),
                        help='your own prompts: JSONL of {"prompt", "needle", "query" (optional), "answer_prefix" '
                             '(optional)} (default: generated needle prompts)')


def check_inputs(args) -> None:
    """A bad prompt file fails before any model loads."""
    if args.prompts_file:
        load_prompts(args.prompts_file)


def options(args) -> dict:
    """run()'s options from the parsed command line."""
    return dict(prompts=args.prompts_file, length=args.length, n_prompts=args.prompts, task=args.task)


def table(summary: dict) -> tuple[str, dict]:
    """The table printed after a run: (title, {(model, part): {segment: mass}})."""
    return "attention mass per token of segment (mean over layers)", {
        (m, part): values for m, s in summary.items() for part, values in s["mean"].items()}


def _average(per_prompt: list[dict]) -> dict:
    """Mean over prompts (per layer), then over layers."""
    def mean(dicts):
        keys = [k for k in SEGMENTS if all(k in d for d in dicts)]
        return {k: sum(d[k] for d in dicts) / len(dicts) for k in keys}

    n_layers = len(per_prompt[0]["positive"])
    entry = {"layers": {}, "mean": {}}
    for part in KINDS:
        if per_prompt[0][part][0] is None:
            continue
        layers = [mean([p[part][i] for p in per_prompt]) for i in range(n_layers)]
        entry["layers"][part] = layers
        entry["mean"][part] = mean(layers)
    first = per_prompt[0]
    entry["layer"] = first["layer"]
    entry["lambda"] = first["lambda"]
    entry["row_total"] = [sum(p["row_total"][i] for p in per_prompt) / len(per_prompt) for i in range(n_layers)]
    entry["segment_tokens"] = {k: sum(p["segment_tokens"][k] for p in per_prompt) / len(per_prompt) for k in SEGMENTS}
    entry["n_prompts"] = len(per_prompt)
    return entry


def plot(summary: dict, folder: str, settings: dict | None = None) -> list[str]:
    """attention_mass.png (averaged over layers) and attention_mass_layers.png (per layer)."""
    return [plot_mass(summary, os.path.join(folder, "attention_mass.png")),
            plot_layers(summary, os.path.join(folder, "attention_mass_layers.png"))]


def section(report: Report, summary: dict, figures: str, settings: dict | None = None) -> None:
    """Each model's masses averaged over layers, and both plots redrawn into `figures`."""
    mean_plot, layers_plot = plot(summary, figures, settings)
    report.heading("Attention mass per segment (Figure 4)")
    report.text(f"Paper: {FINDINGS['attention']} Mass from the query tokens per token of each segment, "
                "averaged over layers; for DiffLoRA the lambda-scaled negative part is listed separately and net = "
                "positive - lambda x negative.")
    rows = []
    for label, s in summary.items():
        for part, values in s["mean"].items():
            rows.append([label, part] + [f"{values[seg]:.4f}" if seg in values else "" for seg in SEGMENTS])
    report.table(["model", "part"] + list(SEGMENTS), rows)
    report.image(mean_plot, "attention mass per segment, averaged over layers")
    report.image(layers_plot, "attention mass per segment and layer")


def overview(summary: dict) -> list[tuple[str, Callable[[str], str]]]:
    """No overview column: masses are read per segment, in the section's table."""
    return []


def plot_mass(summary: dict, path: str) -> str:
    """Grouped bars per segment: each model's positive mass above zero and, for DiffLoRA models,
    the lambda-scaled negative mass below zero (hatched); a dot marks the net mass."""
    labels = list(summary)
    fig, ax = pyplot().subplots(figsize=(7.5, 4.2))
    width = 0.8 / max(1, len(labels))
    for j, label in enumerate(labels):
        mean = summary[label]["mean"]
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(SEGMENTS))]
        bars = ax.bar(xs, [mean["positive"].get(s, 0.0) for s in SEGMENTS], width, label=label)
        if "negative" in mean:
            ax.bar(xs, [-mean["negative"].get(s, 0.0) for s in SEGMENTS], width, color=bars[0].get_facecolor(),
                   alpha=0.45, hatch="//")
            ax.plot(xs, [mean["net"].get(s, 0.0) for s in SEGMENTS], "k.", markersize=5)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(SEGMENTS)), SEGMENT_NAMES)
    ax.set_ylabel("attention mass per token of the segment")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title("attention from the query, averaged over layers\n(hatched: -lambda x negative map; dot: net)",
                 fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_layers(summary: dict, path: str) -> str:
    """One panel per segment: mass per token against layer, one colour per model; solid positive
    map, dashed lambda-scaled negative map (DiffLoRA)."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, axes = plt.subplots(1, len(SEGMENTS), figsize=(3.0 * len(SEGMENTS), 3.3), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, seg, name in zip(axes[0], SEGMENTS, SEGMENT_NAMES):
        for j, (label, entry) in enumerate(summary.items()):
            colour = colours[j % len(colours)]
            layers = entry["layer"]
            ax.plot(layers, [m.get(seg, 0.0) for m in entry["layers"]["positive"]], "-o", color=colour,
                    markersize=3, label=label)
            if "negative" in entry["layers"]:
                ax.plot(layers, [m.get(seg, 0.0) for m in entry["layers"]["negative"]], "--", color=colour,
                        label=f"{label} (lambda x negative)")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mass per token")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle("attention from the query per layer")
    return save_figure(fig, path)
