"""`difflora <command>`: one sub-command module per concern, each exposing register(subparsers).

Errors a user can fix (bad config, missing file, unknown preset ...) are raised as
difflora.errors.UserError (or ValueError/FileNotFoundError) and printed as one line, no traceback;
set DIFFLORA_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# module path -> what it adds; each module defines register(subparsers)
COMMAND_MODULES = (
    "difflora.cli.train",       # train, generate
    "difflora.cli.evaluate",    # eval nih|icl|degeneration|lm-eval, analyze attention, report
    "difflora.cli.select",      # select (DiffoRA)
    "difflora.cli.demo",        # demo
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="difflora", description="Differential-attention LoRA for Hugging Face LLMs.")
    parser.add_argument("--version", action="version", version=f"difflora {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command group is not part of this install
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("DIFFLORA_DEBUG"):
            raise
        print(f"difflora {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"difflora {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
