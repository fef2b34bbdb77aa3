"""The device rule, checked on the source: every tensor a module above the method builds (analysis,
evaluation, introspection, demo, select, train, export) is built on a device it names, the model's
(devices.device_of(model)) or the other operand's, so nothing breaks when the model is on a GPU. A
tensor factory call without device= is an error unless the allow-list below says why it is CPU-only.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "difflora"
CHECKED = ("analysis", "evaluation", "introspection.py", "demo", "select", "train", "export")
NOT_CHECKED = ("export/standalone",)  # the exported model's own code: it runs without difflora
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "eye",
             "rand", "randn", "randint", "randperm"}
LEGACY = {"Tensor", "LongTensor", "FloatTensor", "BoolTensor", "IntTensor"}  # always CPU: never used

# (file under src/difflora, function) -> why its tensors are CPU tensors by design
ALLOWED = {
    ("train/chat_data.py", "ChatCollator.__call__"):
        "a collator builds CPU batches; Trainer's data loader (or select's _to) moves them to the model",
    ("select/data.py", "split_off"):
        "a seeded shuffle of example indices, read back as a list (a CPU generator: the same split on any device)",
    ("select/relaxation.py", "ArchitectureWeights.__init__"):
        "an nn.Parameter of a module that build_search_model moves to device_of(model)",
    ("demo/base/copy_supervision.py", "copy_pairs"): "index lists of a collator batch; the losses move them (.to)",
    ("demo/base/copy_supervision.py", "unambiguous"): "index lists of a collator batch; the losses move them (.to)",
    ("demo/base/copy_supervision.py", "gather_pairs"): "index lists of a collator batch; the losses move them (.to)",
    ("demo/base/copy_supervision.py", "icl_pairs"): "index lists of a collator batch; the losses move them (.to)",
}


def _sources():
    for entry in CHECKED:
        path = SRC / entry
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            rel = file.relative_to(SRC).as_posix()
            if not rel.startswith(NOT_CHECKED):
                yield rel, file


class _Calls(ast.NodeVisitor):
    """Tensor factory calls (torch.NAME(...)) with no device= keyword, with the function they are in."""

    def __init__(self):
        self.scope, self.found = [], []

    def _enter(self, node):
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _enter

    def visit_Call(self, node):
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "torch":
            no_device = func.attr in FACTORIES and not any(k.arg == "device" for k in node.keywords)
            if no_device or func.attr in LEGACY:
                self.found.append((".".join(self.scope) or "<module>", node.lineno, func.attr))
        self.generic_visit(node)


def _unplaced() -> dict[tuple[str, str], list[str]]:
    out = {}
    for rel, file in _sources():
        calls = _Calls()
        calls.visit(ast.parse(file.read_text(), str(file)))
        for scope, line, name in calls.found:
            out.setdefault((rel, scope), []).append(f"{rel}:{line} torch.{name} in {scope}")
    return out


def test_every_tensor_is_built_on_a_named_device():
    unplaced = _unplaced()
    bad = [where for key, wheres in unplaced.items() if key not in ALLOWED for where in wheres]
    assert not bad, ("tensors built without device= (give device=device_of(model) or the other operand's "
                     "device, or add the function to ALLOWED with the reason it is CPU-only):\n" + "\n".join(bad))


def test_the_allow_list_has_no_stale_entries():
    stale = set(ALLOWED) - set(_unplaced())
    assert not stale, f"ALLOWED entries that build no unplaced tensor any more (remove them): {sorted(stale)}"


@pytest.mark.parametrize("source,flagged", [
    ("def f(ids):\n    return torch.tensor(ids)\n", True),
    ("def f(ids, m):\n    return torch.tensor(ids, device=m.device)\n", False),
    ("def f(n):\n    return torch.zeros(n, dtype=torch.long)\n", True),
    ("def f(x):\n    return torch.zeros_like(x)\n", False),  # *_like keeps x's device
    ("def f(x):\n    return torch.LongTensor(x)\n", True),
])
def test_the_checker_sees_what_it_should(source, flagged):
    calls = _Calls()
    calls.visit(ast.parse(source))
    assert bool(calls.found) == flagged
