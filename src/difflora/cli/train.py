"""`difflora train` and `difflora generate`."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="fine-tune with DiffLoRA, LoRA or full fine-tuning from a YAML config")
    train.add_argument("config", help="YAML config (model, output_dir, method, data, training)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set training.learning_rate=2e-4 (repeatable)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest complete checkpoint in output_dir")
    train.add_argument("--quiet", action="store_true", help="no progress bar or TensorBoard")
    train.set_defaults(func=_train)

    gen = subparsers.add_parser("generate", help="chat with a trained output folder")
    gen.add_argument("output", help="a training output folder (adapter + tokenizer) or BASE::ADAPTER")
    gen.add_argument("--prompt", action="append", default=[], help="a user message (repeatable); stdin lines if none")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--system", default=None, help="an optional system message")
    gen.set_defaults(func=_generate)


def _train(args) -> int:
    from ..errors import UserError
    from ..train import load_train_config, run_training
    from ..train.checkpoints import latest_complete_checkpoint
    from ..train.runner import completed_run

    cfg = load_train_config(args.config, args.overrides)
    done = completed_run(cfg)
    if done is not None:
        print(f"difflora train: '{cfg.output_dir}' already holds this finished run; nothing to do", file=sys.stderr)
        return 0
    if not args.resume and latest_complete_checkpoint(cfg.output_dir, set_aside=False):
        raise UserError(f"'{cfg.output_dir}' already holds checkpoints: pass --resume to continue that run, "
                        "or choose another output_dir")
    run_training(cfg, resume=args.resume, quiet=args.quiet)
    return 0


def _generate(args) -> int:
    from ..train.generate import chat, load_for_chat

    if not args.prompt and sys.stdin.isatty():
        print("difflora generate: type a message per line (Ctrl-D to end)", file=sys.stderr)

    model, tokenizer = load_for_chat(args.output)
    prompts = args.prompt or [line.strip() for line in sys.stdin if line.strip()]
    for prompt in prompts:
        reply = chat(model, tokenizer, prompt, args.max_new_tokens, args.temperature, args.system)
        print(f"user: {prompt}\nassistant: {reply}\n")
    return 0
