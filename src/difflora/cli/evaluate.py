"""`difflora eval nih|icl|degeneration|lm-eval`, `difflora analyze attention`, `difflora report`.

Every evaluation task (difflora.evaluation.tasks.TASKS) declares its own command: COMMAND (its
group and name), HELP, add_options(parser), check_inputs(args) (what can fail before any model
loads), options(args) (run()'s keywords) and table(summary) (the table printed after a run). This
module adds the options every task shares and runs any of them the same way.

Every command takes any mix of models with repeated --model SPEC (BASE, BASE::ADAPTER,
ADAPTER_DIR, optionally NAME=SPEC to choose the label shown in tables and plots) and writes
per-sample JSONL, a summary JSON and PNG plots to --out.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ..devices import DTYPES
from ..loading import load_models, split_label  # noqa: F401  (their former home: importable from here)
from ..quantization import NAMED as NAMED_QUANTIZATIONS
from ..validation import Choice, InputFolder, OutputFolder, Text, Whole, check_output_folder
from .options import device_option, kind, model_spec

if TYPE_CHECKING:
    from ..evaluation.settings import EvalSettings

CHAT_CHOICES = {"auto": None, "on": True, "off": False}
QUANTIZATIONS = tuple(NAMED_QUANTIZATIONS)
POSITIVE = kind(Whole(minimum=1))

# The command groups the tasks' commands sit in: name -> (help, dest, metavar).
GROUPS = {
    "eval": ("evaluate base models and adapters side by side", "eval_command", "TASK"),
    "analyze": ("analyses of attention", "analyze_command", "WHAT"),
}


def _common(parser, needs_models: bool = True) -> None:
    if needs_models:
        parser.add_argument("--model", dest="models", action="append", required=True, metavar="SPEC",
                            type=model_spec(labelled=True),
                            help="BASE, BASE::ADAPTER or ADAPTER_DIR, optionally NAME=SPEC (repeat to compare models)")
    parser.add_argument("--out", default="runs/eval", type=kind(OutputFolder()), help="output folder")
    parser.add_argument("--seed", type=kind(Whole(minimum=0)), default=0, help="random seed of the generated samples")
    parser.add_argument("--batch-size", type=POSITIVE, default=8, help="prompts per forward pass")
    parser.add_argument("--dtype", default="auto", type=kind(Choice(DTYPES)), help="weights' dtype: auto, float32, "
                        "bfloat16 or float16 (auto: as saved)")
    device_option(parser)
    parser.add_argument("--quantization", default=None, type=kind(Choice(QUANTIZATIONS)),
                        help="load every base quantized with bitsandbytes: nf4, fp4 (4-bit, double quantization) "
                             "or int8 (default: not quantized)")
    parser.add_argument("--chat-template", choices=list(CHAT_CHOICES), default="auto",
                        help="wrap prompts in the tokenizer's chat template (auto: when it has one)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    from ..evaluation.tasks import TASKS

    groups = {}
    for name, (help_text, dest, metavar) in GROUPS.items():
        group = subparsers.add_parser(name, help=help_text)
        groups[name] = group.add_subparsers(dest=dest, metavar=metavar, required=True)
    for task in TASKS.values():
        group, name = task.COMMAND
        parser = groups[group].add_parser(name, help=task.HELP)
        _common(parser)
        task.add_options(parser)
        parser.set_defaults(func=functools.partial(_run_task, task))

    rep = subparsers.add_parser("report", help="gather evaluation folders into report.md + report.html")
    rep.add_argument("runs", nargs="+", type=kind(InputFolder()),
                     help="folders written by difflora eval/analyze (--out)")
    rep.add_argument("--out", default=None, type=kind(OutputFolder()),
                     help="report folder (default: the first run folder)")
    rep.add_argument("--title", default="difflora evaluation report", type=kind(Text()), help="the report's title")
    rep.add_argument("--pair", action="append", default=[], metavar="MODEL=REFERENCE", type=kind(Text()),
                     help="compare two models sample by sample (paired bootstrap), e.g. a DiffoRA-selected adapter "
                          "against the uniform one: --pair diffora-lora=lora-8 (repeatable; default: none)")
    rep.set_defaults(func=_report)


# --------------------------------------------------------------------------------------------

def settings_of(args) -> EvalSettings:
    """The options every evaluation command shares, as one EvalSettings."""
    from ..evaluation.settings import EvalSettings

    return EvalSettings(seed=args.seed, batch_size=args.batch_size, chat=CHAT_CHOICES[args.chat_template],
                        show_progress=not args.quiet, out_dir=args.out, device=args.device, dtype=args.dtype)


def _run_task(task, args) -> int:
    """One evaluation task's command: its inputs checked, the models loaded, run(), its table printed."""
    task.check_inputs(args)  # a bad input file fails before any model loads
    settings = settings_of(args)
    models = load_models(args.models, settings, args.quantization)
    summary = task.run(models, settings, **task.options(args)).summary
    _print_table(*task.table(summary))
    _wrote(args.out)
    return 0


def _report(args) -> int:
    from ..errors import UserError
    from ..evaluation.report import write_report

    pairs = []
    for item in args.pair:
        model, sep, reference = item.partition("=")
        if not sep or not model or not reference:
            raise UserError(f"--pair expects MODEL=REFERENCE (two model labels), got '{item}'")
        pairs.append((model, reference))
    check_output_folder(args.out or args.runs[0], "the report folder")  # --out itself is checked as an option
    md, page = write_report(args.runs, args.out, args.title, pairs=pairs)
    print(f"wrote {md} and {page}")
    return 0


def _wrote(out: str) -> None:
    print(f"results in {out}/ (per-sample JSONL, summary JSON, PNG plots); "
          f"`difflora report {out}` makes a page of them")


def _print_table(title: str, rows: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = list(dict.fromkeys(c for values in rows.values() for c in values))
    if all(isinstance(c, int) or str(c).isdigit() for c in columns):
        columns = sorted(columns, key=int)
    table = Table(title=title)
    table.add_column("model")
    for c in columns:
        table.add_column(str(c), justify="right")
    for key, values in rows.items():
        table.add_row(" / ".join(map(str, key)), *[f"{values[c]:.3f}" if c in values else "" for c in columns])
    Console().print(table)
