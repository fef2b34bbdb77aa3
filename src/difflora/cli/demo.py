"""`difflora demo`: the paper's comparison in miniature, on the project's own base model."""

from __future__ import annotations

import dataclasses
import time


def register(subparsers) -> None:
    from ..demo.plan import ALL_MODELS, ALL_TASKS

    demo = subparsers.add_parser("demo", help="base model vs LoRA vs every DiffLoRA variant, trained and measured on CPU")
    demo.add_argument("--quick", action="store_true", help="a smoke run of a minute or two (tiny base, few steps)")
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo); rerun to resume")
    demo.add_argument("--rebuild-base", action="store_true", help="pretrain the default base model again")
    demo.add_argument("--models", nargs="+", choices=ALL_MODELS, help="adapters to train (default: all)")
    demo.add_argument("--tasks", nargs="+", choices=ALL_TASKS, help="evaluations to run (default: all)")
    demo.add_argument("--lengths", nargs="+", type=int, help="needle-in-a-haystack context lengths")
    demo.add_argument("--config", help="a training config (e.g. configs/paper/difflora-64.yaml): its base model, "
                                       "data and training settings replace the embedded default")
    demo.add_argument("--threads", type=int, default=None, help="CPU threads (default: up to 2)")
    demo.set_defaults(func=_demo)


def _demo(args) -> int:
    from ..demo.pipeline import StopAfterStage, run_demo, set_threads
    from ..demo.plan import DemoPlan, quick_plan

    set_threads(args.threads)
    plan = quick_plan() if args.quick else DemoPlan()
    if args.config:
        from ..train import load_train_config

        cfg = load_train_config(args.config)
        plan = dataclasses.replace(plan, recipe=None, base_model=cfg.model, train_data=cfg.data.train,
                                   train_max_length=cfg.data.max_length, training=cfg.training,
                                   nih_lengths=(1024, 4096, 8192))
    if args.models:
        plan = dataclasses.replace(plan, models=tuple(args.models))
    if args.tasks:
        plan = dataclasses.replace(plan, tasks=tuple(args.tasks))
    if args.lengths:
        plan = dataclasses.replace(plan, nih_lengths=tuple(sorted(args.lengths)))
    started = time.time()
    try:
        report = run_demo(plan, args.out, rebuild_base=args.rebuild_base)
    except StopAfterStage as stop:
        print(f"stopped after stage '{stop}' (DIFFLORA_DEMO_STOP_AFTER); run the same command again to resume")
        return 3
    print(f"report: {report} (and report.html) in {time.time() - started:.0f} s")
    return 0
