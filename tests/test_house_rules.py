"""House rules, checked on the source of src/difflora:

- comments and docstrings say why, not which experiment it was: no narrated run names ("run r9",
  "(r7, r8)", "probe f2", "icl8"); the record of the runs is docs/notes/;
- no import cycle among the modules (an import inside a function counts: it is a cycle all the same);
- a module imports only from its own floor or the floors below it (FLOORS mirrors docs/architecture.md);
- the demo's base-model room (difflora.demo.base) is used through its face only: the rest of the demo
  imports `difflora.demo.base`, never a module inside it, and the room imports nothing of the demo
  above it but state.py and conversations.py.

Each failure names file:line.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "difflora"

# -- narrated run names ---------------------------------------------------------------------------

_RUN = r"(?:r\d{1,2}|icl\d+|f\d|s\d[a-z]?|p\d|e\d|x\d|ro|d[AB])"  # the names runs were given in docs/notes/
RUN_NAMES = [
    re.compile(rf"\b(?:runs?|probes?|recipes?)\s+{_RUN}\b", re.IGNORECASE),  # "run r9", "probes icl1-icl8"
    re.compile(r"\bicl\d+\b"),                                              # "icl8"
    re.compile(r"\br\d{1,2}\b"),                                            # "r12", "(r7, r8)"
    re.compile(r"\bf\d\b(?=\s*\))"),                                        # "(f2)", "(..., f1)"
]


def test_the_run_name_patterns_catch_narration_and_leave_notation_alone():
    narrated = ["the model never reads them: run r9", "slowed the key match (r7, r8)", "brings MK-2 back (f2)",
                "(docs/notes/demo-base-model.md, f1)", "probes icl1-icl8", "runs r9 and s4b", "recipe r12 ships"]
    notation = ["W_Q + s1 B1 A1 x", "lora r=8 on q and v", "bf16 runs on the GPU", "MK-2 and mk3", "the F1 score",
                "Q1/K1 and Q2/K2", "e1 - e2 + lambda_init", "an int8 or nf4 base", "lora-8 (rank 8)"]
    assert all(any(p.search(text) for p in RUN_NAMES) for text in narrated)
    assert not [text for text in notation if any(p.search(text) for p in RUN_NAMES)]


def _comments_and_docstrings(path: Path):
    """(line, text) of every comment and every line of every docstring in the file."""
    text = path.read_text(encoding="utf-8")
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                for offset, line in enumerate(doc.split("\n")):
                    yield node.body[0].lineno + offset, line


def test_comments_and_docstrings_do_not_narrate_runs():
    found = [f"{path.relative_to(SRC.parent)}:{line}: {text.strip()}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for line, text in _comments_and_docstrings(path)
             if any(p.search(text) for p in RUN_NAMES)]
    assert not found, ("say why, not which run showed it (the runs are in docs/notes/):\n" + "\n".join(found))


# -- imports ------------------------------------------------------------------------------------

# docs/architecture.md's floors: a module imports only from its own floor or the ones below it.
FLOORS = {
    "cli": 3, "demo": 3,
    "train": 2, "select": 2, "evaluation": 2, "analysis": 2, "export": 2,
    "loading": 1, "introspection": 1, "devices": 1, "quantization": 1, "validation": 1, "textfiles": 1,
    "errors": 1, "data": 1, "resources": 1, "real_bases": 1, "testing": 1,
    "tuner": 0, "core": 0, "compat": 0,
}
ROOT_FLOOR = 1  # difflora/__init__.py: the method's public face (tuner, compat, introspection)

# The face of the demo's base-model room, and what the room may use of the demo around it.
ROOM = "difflora.demo.base"
ROOM_MAY_USE = {"difflora.demo.state", "difflora.demo.conversations"}

# Cycles that exist today and are being taken apart elsewhere; each is the exact set of modules in it.
# A cycle not listed fails; so does a listed one that is gone (take it off the list).
KNOWN_CYCLES: list[set[str]] = []
# Imports from a higher floor that exist today, (importer, imported): each is a debt, not a precedent.
KNOWN_UPWARD = {
    ("difflora.tuner.model", "difflora.quantization"),  # the tuner guards a 4-bit base (protect_quantized_base)
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path):
    """(line, imported difflora module) for every import in the module, relative ones resolved; `from X
    import y` is an import of X.y when that is a module, else of X."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "difflora" or target.startswith("difflora."):
                while target not in MODULES:  # `import difflora.x.y` of a name inside a module
                    target = target.rpartition(".")[0]
                yield node.lineno, target


GRAPH = {name: sorted(set(_imports(name, path))) for name, path in MODULES.items()}


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(SRC.parent)}:{line}"


def _cycles() -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    edges = {m: {t for _, t in GRAPH[m] if t != m} for m in GRAPH}
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    cycles = _cycles()
    new = [c for c in cycles if c not in KNOWN_CYCLES]
    detail = ["; ".join(f"{m} imports {t} ({_where(m, line)})" for m in sorted(c) for line, t in GRAPH[m] if t in c)
              for c in new]
    assert not new, "import cycles:\n" + "\n".join(detail)
    gone = [c for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, f"these cycles are gone: take them off KNOWN_CYCLES: {gone}"


def _floor(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return ROOT_FLOOR
    assert parts[1] in FLOORS, f"{module} has no floor: add it to docs/architecture.md and to FLOORS here"
    return FLOORS[parts[1]]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_come_from_the_same_floor_or_below(module):
    upward = [f"{_where(module, line)}: {module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})"
              for line, target in GRAPH[module]
              if _floor(target) > _floor(module) and (module, target) not in KNOWN_UPWARD]
    assert not upward, "\n".join(upward)


def test_every_known_upward_import_still_exists():
    gone = [pair for pair in KNOWN_UPWARD if pair[1] not in {t for _, t in GRAPH.get(pair[0], [])}]
    assert not gone, f"these imports are gone: take them off KNOWN_UPWARD: {gone}"


def test_the_demo_uses_the_base_model_room_through_its_face():
    wrong = []
    for module, imports in GRAPH.items():
        inside = module == ROOM or module.startswith(ROOM + ".")
        for line, target in imports:
            if not inside and target.startswith(ROOM + "."):
                wrong.append(f"{_where(module, line)}: {module} imports {target}: use {ROOM} (its __init__)")
            if inside and target.startswith("difflora.demo") and not target.startswith(ROOM) \
                    and target not in ROOM_MAY_USE:
                wrong.append(f"{_where(module, line)}: {module} imports {target}, above the room")
    assert not wrong, "\n".join(wrong)
