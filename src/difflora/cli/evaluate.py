"""`difflora eval nih|icl|degeneration|lm-eval`, `difflora analyze attention`, `difflora report`.

Every command takes any mix of models with repeated --model SPEC (BASE, BASE::ADAPTER,
ADAPTER_DIR, optionally NAME=SPEC to choose the label shown in tables and plots) and writes
per-sample JSONL, a summary JSON and PNG plots to --out.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from ..quantization import NAMED as NAMED_QUANTIZATIONS
from ..validation import Choice, InputFile, InputFolder, OutputFolder, Real, Text, Whole, check_output_folder
from .options import device_option, kind, model_spec

if TYPE_CHECKING:  # the evaluation package loads matplotlib: not at every command's start
    from ..evaluation.settings import EvalSettings

CHAT_CHOICES = {"auto": None, "on": True, "off": False}


DTYPES = ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16")
QUANTIZATIONS = tuple(NAMED_QUANTIZATIONS)
POSITIVE = kind(Whole(minimum=1))


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
    ev = subparsers.add_parser("eval", help="evaluate base models and adapters side by side")
    sub = ev.add_subparsers(dest="eval_command", metavar="TASK", required=True)

    nih = sub.add_parser("nih", help="needle in a haystack: MK-2, MK-3, MV (RULER format)")
    _common(nih)
    nih.add_argument("--tasks", nargs="+", default=["mk2", "mk3", "mv"], choices=["mk2", "mk3", "mv"],
                     help="needle tasks")
    nih.add_argument("--lengths", nargs="+", type=POSITIVE, default=[256, 512, 1024, 2048, 4096],
                     help="context lengths in each model's tokens (chat template and answer prefix included)")
    nih.add_argument("--samples", type=POSITIVE, default=20, help="samples per task and length")
    nih.add_argument("--haystack", choices=["needles", "noise", "essay"], default=None,
                     help="override the tasks' haystacks (default: RULER's: distractor needles for MK, essay for MV)")
    nih.add_argument("--max-new-tokens", type=POSITIVE, default=None,
                     help="answer length limit (default: room for every value the task asks for)")
    nih.add_argument("--train-length", type=POSITIVE, default=None,
                     help="draw the fine-tuning length on the plots (default: not drawn)")
    nih.set_defaults(func=_nih)

    icl = sub.add_parser("icl", help="many-shot in-context classification (HELMET format)")
    _common(icl)
    icl.add_argument("--shots", nargs="+", type=kind(Whole(minimum=0)), default=[6, 12, 24, 48],
                     help="demonstrations per prompt")
    icl.add_argument("--samples", type=POSITIVE, default=30, help="test examples (the same at every shot count)")
    icl.add_argument("--data", default="bundled:topics", type=kind(Text()),
                     help="JSONL of {text, label}, a datasets name (NAME or NAME:CONFIG), or bundled:topics")
    icl.add_argument("--test-data", default=None, type=kind(Text()),
                     help="test examples from here (default: --data, each left out of its demos)")
    icl.add_argument("--text-field", default="text", type=kind(Text()), help="field of each row holding the text")
    icl.add_argument("--label-field", default="label", type=kind(Text()), help="field of each row holding the label")
    icl.add_argument("--split", default="train", type=kind(Text()), help="datasets split for demonstrations")
    icl.add_argument("--test-split", default="test", type=kind(Text()), help="datasets split of --test-data")
    icl.add_argument("--max-new-tokens", type=POSITIVE, default=8, help="answer length limit")
    icl.set_defaults(func=_icl)

    deg = sub.add_parser("degeneration", help="free-form generation: loops, repeated patterns, empty answers")
    _common(deg)
    deg.add_argument("--prompts", default=None, type=kind(InputFile()),
                     help='JSONL of {"prompt": ...} or a .txt file (default: bundled prompts)')
    deg.add_argument("--max-new-tokens", type=POSITIVE, default=64, help="answer length")
    deg.add_argument("--worst", type=kind(Whole(minimum=0)), default=3, help="worst answers kept per model")
    deg.set_defaults(func=_degeneration)

    lm = sub.add_parser("lm-eval", help="any lm-evaluation-harness task on base models and adapters")
    _common(lm)
    lm.add_argument("--tasks", nargs="+", required=True, type=kind(Text()),
                    help="lm-eval task names (space or comma separated)")
    lm.add_argument("--include-path", default=None, type=kind(InputFolder(what="a folder of lm-eval task YAMLs")),
                    help="folder of extra lm-eval task YAMLs (default: none)")
    lm.add_argument("--limit", type=kind(Real(above=0)), default=None,
                    help="examples per task, a count or a fraction below 1 (default: all)")
    lm.add_argument("--num-fewshot", type=kind(Whole(minimum=0)), default=None,
                    help="demonstrations per prompt (default: the task's own)")
    lm.add_argument("--apply-chat-template", action="store_true", help="wrap prompts in the chat template")
    lm.set_defaults(func=_lm_eval)

    an = subparsers.add_parser("analyze", help="analyses of attention")
    an_sub = an.add_subparsers(dest="analyze_command", metavar="WHAT", required=True)
    att = an_sub.add_parser("attention", help="attention mass per segment on needle prompts (the paper's Figure 4)")
    _common(att)
    att.add_argument("--length", type=POSITIVE, default=512, help="tokens of each generated needle prompt")
    att.add_argument("--prompts", type=POSITIVE, default=4, help="number of generated needle prompts")
    att.add_argument("--task", choices=["mk2", "mk3", "mv"], default="mk2", help="needle task of generated prompts")
    att.add_argument("--prompts-file", default=None, type=kind(InputFile()),
                     help='your own prompts: JSONL of {"prompt", "needle", "query" (optional), "answer_prefix" '
                          '(optional)} (default: generated needle prompts)')
    att.set_defaults(func=_attention)

    rep = subparsers.add_parser("report", help="gather evaluation folders into report.md + report.html")
    rep.add_argument("runs", nargs="+", type=kind(InputFolder()), help="folders written by difflora eval/analyze (--out)")
    rep.add_argument("--out", default=None, type=kind(OutputFolder()), help="report folder (default: the first run folder)")
    rep.add_argument("--title", default="difflora evaluation report", type=kind(Text()), help="the report's title")
    rep.add_argument("--pair", action="append", default=[], metavar="MODEL=REFERENCE", type=kind(Text()),
                     help="compare two models sample by sample (paired bootstrap), e.g. a DiffoRA-selected adapter "
                          "against the uniform one: --pair diffora-lora=lora-8 (repeatable; default: none)")
    rep.set_defaults(func=_report)


# --------------------------------------------------------------------------------------------

_LABELLED = re.compile(r"^([A-Za-z0-9_.+-]+)=(.+)$")


def split_label(spec: str) -> tuple[str | None, str]:
    """"NAME=SPEC" -> (NAME, SPEC); a plain SPEC -> (None, SPEC)."""
    match = _LABELLED.match(spec)
    if match and not os.path.exists(spec):
        return match.group(1), match.group(2)
    return None, spec


def load_models(specs: list[str], settings: EvalSettings, quantization: str | None = None) -> dict:
    """{label: (model, tokenizer)} for --model specs, on settings.device in settings.dtype; a bad
    adapter is a one-line UserError."""
    import torch
    from rich.console import Console

    from ..errors import UserError
    from ..loading import load_model, parse_model_spec

    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    console = Console(stderr=True, quiet=not settings.show_progress)
    models = {}
    for raw in specs:
        name, spec = split_label(raw)
        parsed = parse_model_spec(spec)
        label = name or parsed.label
        while label in models:
            label += "'"
        console.print(f"loading {label} ({spec})")
        try:
            models[label] = load_model(parsed, dtype=settings.dtype, device=device, quantization=quantization)
        except RuntimeError as exc:  # PEFT's state-dict shape mismatch for a LoRA made on another base
            if "size mismatch" not in str(exc):
                raise
            raise UserError(f"adapter '{parsed.adapter}' does not fit base '{parsed.base}' (weight shapes differ): "
                            "it was made for another base model") from None
    return models


def settings_of(args) -> EvalSettings:
    """The options every evaluation command shares, as one EvalSettings."""
    from ..evaluation.settings import EvalSettings

    return EvalSettings(seed=args.seed, batch_size=args.batch_size, chat=CHAT_CHOICES[args.chat_template],
                        show_progress=not args.quiet, out_dir=args.out, device=args.device, dtype=args.dtype)


def _models_and_settings(args) -> tuple[dict, EvalSettings]:
    settings = settings_of(args)
    return load_models(args.models, settings, args.quantization), settings


def _nih(args) -> int:
    from ..evaluation.tasks import needles

    models, settings = _models_and_settings(args)
    summary = needles.run(models, settings, tasks=args.tasks, lengths=args.lengths, n_samples=args.samples,
                          haystack=args.haystack, max_new_tokens=args.max_new_tokens,
                          train_length=args.train_length).summary
    _print_table("needle in a haystack (accuracy)", {(m, t.upper()): {n: e["mean"] for n, e in d.items()}
                                                     for m, tasks in summary.items() for t, d in tasks.items()})
    _wrote(args.out)
    return 0


def _icl(args) -> int:
    from ..evaluation.icl import load_examples
    from ..evaluation.tasks import many_shot_icl

    for source in (args.data, args.test_data):  # a bad local data file fails before any model loads
        if source and (os.path.exists(source) or source.endswith((".jsonl", ".json"))):
            load_examples(source, args.text_field, args.label_field)
    models, settings = _models_and_settings(args)
    summary = many_shot_icl.run(models, settings, shots=args.shots, n_samples=args.samples, data=args.data,
                                test_data=args.test_data, text_field=args.text_field, label_field=args.label_field,
                                split=args.split, test_split=args.test_split,
                                max_new_tokens=args.max_new_tokens).summary
    _print_table("many-shot ICL (accuracy by shots)", {(m,): {k: e["mean"] for k, e in d.items()} for m, d in summary.items()})
    _wrote(args.out)
    return 0


def _degeneration(args) -> int:
    from ..evaluation.tasks import degeneration

    if args.prompts:
        degeneration.load_prompts(args.prompts)  # a bad prompt file fails before any model loads
    models, settings = _models_and_settings(args)
    summary = degeneration.run(models, settings, prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                               worst=args.worst).summary
    _print_table("degenerate generation", {(m,): {"degenerate": s["rate"]["mean"], "empty": s["empty"],
                                                  "loop": s["ngram_loop"], "char pattern": s["char_pattern"],
                                                  "distinct-2": s["distinct_2"]} for m, s in summary.items()})
    _wrote(args.out)
    return 0


def _lm_eval(args) -> int:
    from ..evaluation.tasks import lm_eval_harness

    tasks = [t for item in args.tasks for t in item.split(",") if t]
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    models, settings = _models_and_settings(args)
    summary = lm_eval_harness.run(models, settings, tasks=tasks, include_path=args.include_path, limit=limit,
                                  num_fewshot=args.num_fewshot, apply_chat_template=args.apply_chat_template).summary
    _print_table("lm-eval", {(m, t): {k.split(",")[0]: v for k, (v, _) in lm_eval_harness.primary_metrics(r).items()}
                             for m, per_task in summary.items() for t, r in per_task.items()})
    _wrote(args.out)
    return 0


def _attention(args) -> int:
    from ..evaluation.tasks import attention_mass

    if args.prompts_file:
        attention_mass.load_prompts(args.prompts_file)  # a bad prompt file fails before any model loads
    models, settings = _models_and_settings(args)
    summary = attention_mass.run(models, settings, prompts=args.prompts_file, length=args.length,
                                 n_prompts=args.prompts, task=args.task).summary
    _print_table("attention mass per token of segment (mean over layers)",
                 {(m, kind): values for m, s in summary.items() for kind, values in s["mean"].items()})
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
    print(f"results in {out}/ (per-sample JSONL, summary JSON, PNG plots); `difflora report {out}` makes a page of them")


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
