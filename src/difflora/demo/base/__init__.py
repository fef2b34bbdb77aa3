"""The demo's base model: a small Llama-architecture model and its tokenizer, pretrained by the project
on its generated corpus (corpus.py) with attention supervision (copy_supervision.py), then finished on
many-shot in-context classification (icl_finish.py).

The rest of the demo uses only what this module exports: the recipe (recipe.py), and where its model
is (store.py: the shipped default base, checked against its manifest, or a cached build). Building a
base (build.py and the modules under it) runs only for `difflora demo --rebuild-base`, a recipe other
than the shipped one, and the probes in benchmarks/. docs/demo-base.md tells how the shipped base was
made.
"""

from .recipe import QUICK_RECIPE, BaseRecipe
from .store import default_base_path, ensure_base, needs_build, verify_base

__all__ = ["QUICK_RECIPE", "BaseRecipe", "default_base_path", "ensure_base", "needs_build", "verify_base"]
