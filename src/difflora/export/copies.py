"""The copies of core/ in the standalone modeling file, kept identical to their originals.

The exported folder cannot import difflora, so `standalone/modeling_difflora.py` carries its own copy of
each piece of the method it runs (head pairing, the combination, lambda, the GroupNorm variant). As in
transformers (utils/check_copies.py), each copy is marked on the line above it:

    # Copied from difflora.core.attention.stack_head_pairs
    # Copied from difflora.core.lambda_param.LearnedLambda.forward        (a method, inside its class)
    # Copied from difflora.core.attention.combine with out_pos->positive, out_neg->negative

and is the original's source (inspect.getsource) with the renames applied, re-indented to the marker.
`check()` lists every copy that drifted, every marker whose original is gone, and every definition of the
standalone file that has a namesake in core/ but neither a marker nor an entry in DIFFERS (a piece that
must differ, with the test that the two compute the same); `fix()` rewrites the drifted copies.

    python -m difflora.export.copies          # report (exit status 1 on drift)
    python -m difflora.export.copies --fix    # rewrite the copies from core/
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

STANDALONE_MODELING = Path(__file__).parent / "standalone" / "modeling_difflora.py"
CORE_MODULES = ("difflora.core.attention", "difflora.core.lambda_param", "difflora.core.lowrank")
MARKER = re.compile(r"^(?P<indent>\s*)# Copied from (?P<target>[\w.]+)(?:\s+with\s+(?P<renames>.+?))?\s*$")

# Standalone definitions with a namesake in core/ that are not copies, why, and the test that they agree.
DIFFERS = {
    "LowRank": "alpha / r is folded into B at export and the input is cast to the factors' dtype in the "
               "module (the tuner casts around core's LowRank): tests/export/test_copies.py::"
               "test_standalone_lowrank_computes_what_core_computes",
    "LearnedLambda": "its __init__, reset_parameters and forward are marked copies; core's rescale_ "
                     "(a DiffoRA selection's fold) is not shipped",
}


@dataclass(frozen=True)
class Copy:
    """One marked block of the standalone file: lines [start, end) (0-based), the marker on start - 1."""

    target: str
    renames: tuple[tuple[str, str], ...]
    indent: str
    start: int
    end: int

    def expected(self) -> str:
        """The original's source with the renames applied, indented as the marker."""
        code = textwrap.dedent(inspect.getsource(resolve(self.target))).rstrip() + "\n"
        for old, new in self.renames:
            code = code.replace(old, new)
        return textwrap.indent(code, self.indent, lambda line: line.strip() != "")


def resolve(target: str):
    """The object a dotted path names: the longest importable module prefix, then attributes."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module in {target!r}")


def parse_renames(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        old, sep, new = item.strip().partition("->")
        if not sep or not old.strip():
            raise ValueError(f"bad rename {item!r}: write 'old->new'")
        pairs.append((old.strip(), new.strip()))
    return tuple(pairs)


def find_copies(source: str) -> list[Copy]:
    """Every marked definition of `source`, with its extent (decorators to the last line of its body)."""
    lines = source.splitlines(keepends=True)
    starts = {}  # first line (decorators included, 1-based) -> last line of every def/class
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            starts[first] = node.end_lineno
    copies = []
    for i, line in enumerate(lines):
        match = MARKER.match(line)
        if match is None:
            continue
        if i + 2 not in starts:
            raise ValueError(f"line {i + 1}: '# Copied from' must stand right above a def or class")
        renames = parse_renames(match["renames"])
        copies.append(Copy(match["target"], renames, match["indent"], i + 1, starts[i + 2]))
    return copies


def check(path: str | Path = STANDALONE_MODELING) -> list[str]:
    """One line per problem: a copy that differs from its original, a marker whose original cannot be
    found, an unmarked namesake of a core/ object that DIFFERS does not explain. Empty: no drift."""
    source = Path(path).read_text()
    lines = source.splitlines(keepends=True)
    try:
        copies = find_copies(source)
    except ValueError as err:
        return [f"{path}: {err}"]
    problems = []
    for copy in copies:
        try:
            expected = copy.expected()
        except (ImportError, AttributeError, OSError, TypeError) as err:
            problems.append(f"{path}:{copy.start}: '# Copied from {copy.target}': the original is not found "
                            f"({err})")
            continue
        if "".join(lines[copy.start:copy.end]) != expected:
            problems.append(f"{path}:{copy.start + 1}: differs from {copy.target} "
                            "(python -m difflora.export.copies --fix rewrites it)")
    problems += _unmarked_namesakes(path, source, copies)
    return problems


def _unmarked_namesakes(path, source: str, copies: list[Copy]) -> list[str]:
    core_names = set()
    for name in CORE_MODULES:
        module = importlib.import_module(name)
        core_names |= {n for n, obj in vars(module).items()
                       if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == name}
    problems = []
    for node in ast.parse(source).body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name not in core_names:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1  # 0-based
        marked = any(first <= c.start <= node.end_lineno for c in copies)  # itself or something inside
        if not marked and node.name not in DIFFERS:
            problems.append(f"{path}:{node.lineno}: {node.name} has a namesake in difflora.core but no "
                            "'# Copied from' marker and no entry in difflora.export.copies.DIFFERS")
    return problems


def fix(path: str | Path = STANDALONE_MODELING) -> list[str]:
    """Rewrite every drifted copy of `path` from its original; returns the targets rewritten."""
    path = Path(path)
    source = path.read_text()
    lines = source.splitlines(keepends=True)
    fixed = []
    for copy in reversed(find_copies(source)):  # bottom up: earlier line numbers stay valid
        expected = copy.expected()
        if "".join(lines[copy.start:copy.end]) != expected:
            lines[copy.start:copy.end] = expected.splitlines(keepends=True)
            fixed.append(copy.target)
    if fixed:
        path.write_text("".join(lines))
    return fixed[::-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m difflora.export.copies",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(STANDALONE_MODELING), help="the file with the copies")
    parser.add_argument("--fix", action="store_true", help="rewrite the drifted copies from their originals")
    args = parser.parse_args(argv)
    if args.fix:
        for target in fix(args.path):
            print(f"rewrote the copy of {target}")
    problems = check(args.path)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
