"""`difflora demo`: the paper's comparison in miniature, on the project's own base model (or, with
--config, on a real base model and data)."""

from __future__ import annotations

import dataclasses
import shlex
import time

from ..validation import Choice, InputFile, InputFolder, OutputFolder, Text, Whole
from .options import device_option, kind


def register(subparsers) -> None:
    from ..demo.plan import ALL_MODELS, ALL_TASKS, NIH_TASKS

    demo = subparsers.add_parser(
        "demo", help="base model vs LoRA vs every DiffLoRA variant: trained and measured the same way, on a CPU",
        description="Loads the small default base model shipped with the package (other recipes are pretrained "
                    "once and cached), fine-tunes LoRA and every DiffLoRA variant "
                    "on the same generated instruction data, evaluates them all and writes OUT/report.md and "
                    "report.html. Rerun the same command to resume an interrupted run.")
    demo.add_argument("--quick", action="store_true", help="a smoke run of a minute or two (tiny base, few steps)")
    demo.add_argument("--out", default="runs/demo", type=kind(OutputFolder()), help="output folder")
    demo.add_argument("--rebuild-base", action="store_true", help="pretrain the default base model again")
    demo.add_argument("--models", nargs="+", metavar="MODEL", type=kind(Choice(ALL_MODELS, what="demo model")),
                      help=f"adapters to train (default all: {' '.join(ALL_MODELS)})")
    demo.add_argument("--tasks", nargs="+", metavar="TASK", type=kind(Choice(ALL_TASKS, what="demo task")),
                      help=f"evaluations (default all: {' '.join(ALL_TASKS)})")
    demo.add_argument("--lengths", nargs="+", type=kind(Whole(minimum=64, unit="tokens")), metavar="N",
                      help="needle-in-a-haystack context lengths in tokens "
                           "(default: 256 512 1024; --quick: 256 320 384)")
    demo.add_argument("--needles", nargs="+", metavar="TASK", type=kind(Choice(NIH_TASKS, what="needle task")),
                      help=f"needle-in-a-haystack tasks (default: mk2; all: {' '.join(NIH_TASKS)})")
    demo.add_argument("--samples", type=kind(Whole(minimum=1)),
                      help="samples per needle length and per ICL shot count (default: 100; --quick: 2)")
    demo.add_argument("--config", type=kind(InputFile()),
                      help="a training config (e.g. configs/paper/difflora-64.yaml): its base model, data and training "
                           "settings replace the embedded default (a GPU run; default: none, the embedded base model)")
    demo.add_argument("--base", type=kind(Text()), metavar="MODEL",
                      help="run the study on a real pretrained base instead of the embedded one: a fetched name "
                           "(smollm2-135m-instruct, gemma3-270m; see `difflora fetch`), a local folder or a hub id. "
                           "Alone it runs the CPU-sized study (LoRA-8, the paper's rows, the shared-key forms); with "
                           "--config, the config's data and training settings on this base (default: the config's "
                           "model, or the embedded base)")
    demo.add_argument("--train-data", type=kind(Text()), metavar="DATA",
                      help="instruction data to fine-tune on instead of the plan's (chat JSONL or a datasets name), "
                           "e.g. a local copy of the config's data (default: the generated data, or the config's)")
    demo.add_argument("--steps", type=kind(Whole(minimum=1)),
                      help="fine-tuning steps of every model (default: the plan's or the config's)")
    demo.add_argument("--seed", type=kind(Whole(minimum=0)),
                      help="one seed for everything drawn: the generated data, the adapters' initialisation and "
                           "data order, the evaluation samples (default: 0); another seed re-derives the report's "
                           "numbers independently")
    demo.add_argument("--compare-with", type=kind(InputFolder()), metavar="DIR",
                      help="a finished demo's output folder (its verdicts.json): the report adds where this run's "
                           "verdicts agree with that run's (default: none)")
    demo.add_argument("--threads", type=kind(Whole(minimum=1)),
                      help="CPU threads for torch (default: up to 2 on a CPU)")
    device_option(demo, training=True, default_help="cuda when available; the adapters train and every model is "
                                                    "evaluated there")
    demo.set_defaults(func=_demo)


def _demo(args) -> int:
    import torch

    from ..demo.pipeline import StopAfterStage, default_threads, run_demo
    from ..errors import Interrupted

    on_cpu = not torch.cuda.is_available() or (args.device is not None and torch.device(args.device).type == "cpu")
    if args.threads is not None or on_cpu:
        torch.set_num_threads(args.threads or default_threads())
    plan = choose_plan(args)
    changes = {"models": args.models and tuple(args.models), "tasks": args.tasks and tuple(args.tasks),
               "nih_lengths": args.lengths and tuple(sorted(args.lengths)), "nih_samples": args.samples,
               "icl_samples": args.samples, "nih_tasks": args.needles and tuple(args.needles),
               "train_data": args.train_data}
    plan = dataclasses.replace(plan, **{k: v for k, v in changes.items() if v})
    training = {"max_steps": args.steps, "seed": args.seed}
    plan = dataclasses.replace(plan, seed=plan.seed if args.seed is None else args.seed,
                               training={**plan.training, **{k: v for k, v in training.items() if v is not None}})
    if args.compare_with:  # refused now, not after hours of training
        from ..demo.agreement import read_verdicts

        read_verdicts(args.compare_with)
    started = time.time()
    command = "difflora " + " ".join(shlex.quote(a) for a in args.argv)  # as typed, for the report
    try:
        report = run_demo(plan, args.out, rebuild_base=args.rebuild_base, command=command, device=args.device,
                          compare_with=args.compare_with)
    except KeyboardInterrupt:
        raise Interrupted("run the same command again to continue where it stopped") from None
    except StopAfterStage as stop:
        print(f"stopped after stage '{stop}' (DIFFLORA_DEMO_STOP_AFTER); run the same command again to resume")
        return 3
    print(f"report: {report} (and report.html), this invocation took {time.time() - started:.0f} s")
    return 0


def choose_plan(args):
    """The embedded demo (or its --quick smoke run); --base alone: the study on that real base;
    --config: the config's base, data and training, on --base when given."""
    from ..demo.plan import QUICK_SIZES, DemoPlan, plan_from_config, quick_plan, real_base_plan

    if args.config:
        plan = plan_from_config(args.config, quick_plan() if args.quick else DemoPlan())
        return dataclasses.replace(plan, base_model=args.base) if args.base else plan
    if args.base:  # --quick: the study's smoke run, the smoke run's sizes on this base
        plan = real_base_plan(args.base)
        return dataclasses.replace(plan, **QUICK_SIZES) if args.quick else plan
    return quick_plan() if args.quick else DemoPlan()
