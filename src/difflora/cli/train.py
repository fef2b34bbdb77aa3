"""`difflora train` and `difflora generate`."""

from __future__ import annotations

import shlex
import sys

from ..validation import InputFile, Real, Text, Whole
from .options import KeyValue, device_option, kind, model_spec, training_overrides


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="fine-tune with DiffLoRA, LoRA or full fine-tuning from a YAML config")
    train.add_argument("config", type=kind(InputFile()), help="YAML config (model, output_dir, method, data, training)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       type=kind(KeyValue()),
                       help="override a config value, e.g. --set training.learning_rate=2e-4 "
                            "(repeatable; default: none)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest complete checkpoint in output_dir")
    train.add_argument("--quiet", action="store_true", help="no progress bar or TensorBoard")
    device_option(train, training=True, default_help="cuda when available; cpu is training.use_cpu: true")
    train.set_defaults(func=_train)

    gen = subparsers.add_parser("generate", help="chat with a trained output folder")
    gen.add_argument("output", type=model_spec(),
                     help="a training output folder (adapter + tokenizer) or BASE::ADAPTER")
    gen.add_argument("--prompt", action="append", default=[], type=kind(Text()),
                     help="a user message (repeatable; default: one per line of stdin)")
    gen.add_argument("--max-new-tokens", type=kind(Whole(minimum=1)), default=128, help="tokens per reply at most")
    gen.add_argument("--temperature", type=kind(Real(minimum=0)), default=0.0, help="sampling temperature; 0 = greedy")
    gen.add_argument("--system", type=kind(Text()), default=None, help="a system message (default: none)")
    device_option(gen)
    gen.set_defaults(func=_generate)


def _train(args) -> int:
    from ..errors import Interrupted, UserError
    from ..train import load_train_config, run_training
    from ..train.checkpoints import latest_complete_checkpoint
    from ..train.runner import completed_run

    cfg = load_train_config(args.config, [*args.overrides, *training_overrides(args.device)])
    done = completed_run(cfg)
    if done is not None:
        print(f"difflora train: '{cfg.output_dir}' already holds this finished run; nothing to do", file=sys.stderr)
        return 0
    has_checkpoint = latest_complete_checkpoint(cfg.output_dir, set_aside=False) is not None
    if not args.resume and has_checkpoint:
        raise UserError(f"'{cfg.output_dir}' already holds checkpoints: pass --resume to continue that run, "
                        "or choose another output_dir")
    if args.resume and not has_checkpoint:
        print(f"difflora train: no complete checkpoint in '{cfg.output_dir}' to resume from; starting fresh",
              file=sys.stderr)
    try:
        run_training(cfg, resume=args.resume, quiet=args.quiet)
    except KeyboardInterrupt:
        again = args.argv if "--resume" in args.argv else [*args.argv, "--resume"]
        raise Interrupted("continue from the last checkpoint with: difflora " + shlex.join(again)) from None
    return 0


def _generate(args) -> int:
    from ..train.generate import chat, load_for_chat

    if not args.prompt and sys.stdin.isatty():
        print("difflora generate: type a message per line (Ctrl-D to end)", file=sys.stderr)

    model, tokenizer = load_for_chat(args.output, args.device)
    prompts = args.prompt or [line.strip() for line in sys.stdin if line.strip()]
    for prompt in prompts:
        reply = chat(model, tokenizer, prompt, args.max_new_tokens, args.temperature, args.system)
        print(f"user: {prompt}\nassistant: {reply}\n")
    return 0
