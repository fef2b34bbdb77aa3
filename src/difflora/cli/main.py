"""`difflora <command>`: one sub-command module per concern, each exposing register(subparsers).

Errors a user can fix (bad config, missing file, unknown preset ...) are raised as
difflora.errors.UserError (or ValueError/FileNotFoundError) and printed as one line, no traceback;
set DIFFLORA_DEBUG=1 to see the traceback. Options are declared with cli/options.py, so a bad
option value is a one-line error (exit code 1) before any work starts; a command line argparse
cannot read (unknown option, missing argument) is one line too, with exit code 2.
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
    "difflora.cli.export",      # export (standalone transformers folder)
    "difflora.cli.fetch",       # fetch (a real pretrained base, converted once for offline use)
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from .options import Parser

    parser = Parser(prog="difflora", description="Differential-attention LoRA for Hugging Face LLMs.")
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
    from .options import check_options

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option (already printed as one line)
        return exc.code if isinstance(exc.code, int) else 0
    args.argv = argv  # what was typed, for messages that repeat the command (e.g. how to resume)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_options(parser, args)  # every option's kind (cli/options.py), before any work
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("DIFFLORA_DEBUG"):
            raise
        print(f"difflora {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        how = str(exc)  # a command may say how to continue (Interrupted)
        print(f"difflora {args.command}: interrupted" + (f"; {how}" if how else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
