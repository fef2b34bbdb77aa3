"""Imported at interpreter start by difflora-autoload.pth, which `pip install .` (not an editable
install) puts into site-packages.

It costs nothing until `peft` is imported: then it imports difflora right after peft is executed,
so that a DiffLoRA adapter loads with plain `PeftModel.from_pretrained`, or with the plain `lm_eval`
executable's `--model hf --model_args pretrained=BASE,peft=ADAPTER`, in a program that never wrote
`import difflora`. A probe for peft that does not execute it (transformers' is_peft_available
calls find_spec) leaves the hook in place for the real import. Set DIFFLORA_NO_AUTOLOAD=1 to
switch it off.
"""

import importlib.abc
import importlib.util
import os
import sys


class _ImportDiffloraAfterPeft(importlib.abc.MetaPathFinder):
    """Stays on sys.meta_path until peft is really executed: find_spec("peft") alone (as
    transformers' is_peft_available() does) must not use the hook up."""

    def __init__(self):
        self._searching = False

    def find_spec(self, name, path=None, target=None):
        if name != "peft" or self._searching:
            return None
        self._searching = True  # the find_spec below must not come back here
        try:
            spec = importlib.util.find_spec("peft")
        finally:
            self._searching = False
        if spec is None or spec.loader is None:
            return spec
        exec_peft = spec.loader.exec_module

        def exec_module(module):
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            exec_peft(module)
            try:
                import difflora  # noqa: F401
            except Exception as exc:  # never break `import peft` for a difflora problem
                print(f"difflora autoload skipped: {exc}", file=sys.stderr)

        spec.loader.exec_module = exec_module
        return spec


if not os.environ.get("DIFFLORA_NO_AUTOLOAD") and "peft" not in sys.modules:
    sys.meta_path.insert(0, _ImportDiffloraAfterPeft())
