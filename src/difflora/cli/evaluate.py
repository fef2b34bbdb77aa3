"""`difflora eval nih|icl|degeneration|lm-eval`, `difflora analyze attention`, `difflora report`.

Every command takes any mix of models with repeated --model SPEC (BASE, BASE::ADAPTER, ADAPTER_DIR).
"""

from __future__ import annotations

import os


def _models_arg(parser) -> None:
    parser.add_argument("--model", dest="models", action="append", required=True, metavar="SPEC",
                        help="BASE, BASE::ADAPTER or ADAPTER_DIR (repeatable: models are compared side by side)")
    parser.add_argument("--out", default="runs/eval", help="output folder (default runs/eval)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quiet", action="store_true")


def register(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="evaluate base models and adapters side by side")
    sub = ev.add_subparsers(dest="eval_command", metavar="TASK", required=True)

    nih = sub.add_parser("nih", help="needle in a haystack: MK-2, MK-3, MV (RULER format)")
    _models_arg(nih)
    nih.add_argument("--tasks", nargs="+", default=["mk2", "mk3", "mv"], choices=["mk2", "mk3", "mv"])
    nih.add_argument("--lengths", nargs="+", type=int, default=[256, 512, 1024, 2048, 4096])
    nih.add_argument("--samples", type=int, default=20)
    nih.set_defaults(func=_nih)

    icl = sub.add_parser("icl", help="many-shot in-context classification (HELMET format)")
    _models_arg(icl)
    icl.add_argument("--shots", nargs="+", type=int, default=[6, 12, 24, 48])
    icl.add_argument("--samples", type=int, default=30)
    icl.add_argument("--data", default="bundled:topics", help="JSONL of {text, label}, a datasets name, or bundled:topics")
    icl.set_defaults(func=_icl)

    deg = sub.add_parser("degeneration", help="free-form generation: loops, repeated patterns, empty answers")
    _models_arg(deg)
    deg.add_argument("--prompts", default=None, help='JSONL of {"prompt": ...} (default: bundled prompts)')
    deg.add_argument("--max-new-tokens", type=int, default=64)
    deg.set_defaults(func=_degeneration)

    lm = sub.add_parser("lm-eval", help="any lm-evaluation-harness task on a base model and adapters")
    _models_arg(lm)
    lm.add_argument("--tasks", nargs="+", required=True)
    lm.add_argument("--include-path", default=None, help="folder of extra lm-eval task YAMLs")
    lm.add_argument("--limit", type=int, default=None)
    lm.add_argument("--num-fewshot", type=int, default=None)
    lm.set_defaults(func=_lm_eval)

    an = subparsers.add_parser("analyze", help="analyses of attention")
    an_sub = an.add_subparsers(dest="analyze_command", metavar="WHAT", required=True)
    att = an_sub.add_parser("attention", help="attention mass per segment on needle prompts (Figure 4)")
    _models_arg(att)
    att.add_argument("--length", type=int, default=512)
    att.add_argument("--prompts", type=int, default=4, help="number of generated needle prompts")
    att.set_defaults(func=_attention)

    rep = subparsers.add_parser("report", help="gather evaluation folders into report.md + report.html")
    rep.add_argument("runs", nargs="+", help="folders written by difflora eval/analyze (--out)")
    rep.add_argument("--out", default=None, help="report folder (default: the first run folder)")
    rep.set_defaults(func=_report)


def _load(specs: list[str]) -> dict:
    from ..models import load_model, parse_model_spec

    models = {}
    for spec in specs:
        parsed = parse_model_spec(spec)
        label = parsed.label
        while label in models:
            label += "'"
        models[label] = load_model(parsed)
    return models


def _nih(args) -> int:
    from ..evaluation.run_nih import run_nih

    summary = run_nih(_load(args.models), args.tasks, args.lengths, args.samples, args.seed, args.out,
                      args.batch_size, show_progress=not args.quiet)
    _print_table("needle in a haystack", {(m, t): {n: e["mean"] for n, e in d.items()}
                                          for m, tasks in summary.items() for t, d in tasks.items()})
    return 0


def _icl(args) -> int:
    from ..evaluation.run_icl import run_icl

    summary = run_icl(_load(args.models), args.shots, args.samples, args.data, args.seed, args.out, args.batch_size,
                      show_progress=not args.quiet)
    _print_table("many-shot ICL", {(m,): {k: e["mean"] for k, e in d.items()} for m, d in summary.items()})
    return 0


def _degeneration(args) -> int:
    from ..evaluation.degeneration import run_degeneration

    summary = run_degeneration(_load(args.models), args.prompts, args.max_new_tokens, args.out, args.batch_size,
                               show_progress=not args.quiet)
    _print_table("degenerate generation", {(m,): {"rate": s["rate"]["mean"], "distinct-2": s["distinct_2"]}
                                           for m, s in summary.items()})
    return 0


def _lm_eval(args) -> int:
    from ..evaluation.lm_eval_model import evaluate
    from ..evaluation.results import write_json
    from ..models import parse_model_spec

    results = {}
    for spec in args.models:
        parsed = parse_model_spec(spec)
        out = evaluate(parsed.base, parsed.adapter, args.tasks, args.include_path, args.limit, args.batch_size,
                       args.num_fewshot)
        results[parsed.label] = out["results"]
    write_json(os.path.join(args.out, "lm_eval_summary.json"), results)
    _print_table("lm-eval", {(m, t): {k: v for k, v in r.items() if isinstance(v, float)}
                             for m, tasks in results.items() for t, r in tasks.items()})
    return 0


def _attention(args) -> int:
    from ..analysis.attention_mass import run_attention_mass

    summary = run_attention_mass(_load(args.models), args.length, args.prompts, seed=args.seed, out_dir=args.out)
    _print_table("attention mass (mean over layers)", {(m, kind): values for m, s in summary.items()
                                                       for kind, values in s["mean"].items()})
    return 0


def _report(args) -> int:
    from ..evaluation.report import write_report

    md, page = write_report(args.runs, args.out or args.runs[0])
    print(f"wrote {md} and {page}")
    return 0


def _print_table(title: str, rows: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = sorted({c for values in rows.values() for c in values}, key=lambda c: (isinstance(c, str), c))
    table = Table(title=title)
    table.add_column("model")
    for c in columns:
        table.add_column(str(c), justify="right")
    for key, values in rows.items():
        table.add_row(" / ".join(map(str, key)), *[f"{values[c]:.3f}" if c in values else "" for c in columns])
    Console().print(table)
