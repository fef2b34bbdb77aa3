"""Where a base model is: the shipped default one, or one built into the cache.

The default recipe's model is built once by the project and shipped inside the package
(difflora/demo/default_base/, with a manifest of sha256 checksums that is checked before it is used);
the demo loads it and pretrains nothing. Any other recipe (--quick's, a changed one) and --rebuild-base
build into a cache folder named by the recipe's digest, so a changed recipe is a new folder. A build
works in `<folder>.partial` (an interrupted build resumes there); the finished model is saved with
save_pretrained and the folder renamed into place, so a half-made model is never loaded. Both are
ordinary Hugging Face checkpoint folders, loaded with from_pretrained like any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from importlib import resources

from ...errors import UserError
from ...real_bases import cache_root, sha256_of
from .recipe import BaseRecipe

SHIPPED_FOLDER = "default_base"  # package data of difflora.demo: the default recipe's model
MANIFEST = "manifest.json"       # {"files": {name: {"bytes": n, "sha256": hex}}}
REBUILD_HINT = "reinstall difflora (pip install .) or rebuild the base with `difflora demo --rebuild-base`"


def base_dir(recipe: BaseRecipe) -> str:
    return os.path.join(cache_root(), f"base-{recipe.digest()}")


def is_built(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "recipe.json"))


def default_base_path(verify: bool = True) -> str:
    """The folder of the shipped default base model (a transformers checkpoint folder), its files
    checked against its manifest first (a one-line UserError names a missing or altered file)."""
    path = str(resources.files("difflora.demo").joinpath(SHIPPED_FOLDER))
    if verify:
        verify_base(path)
    return path


def verify_base(path: str) -> None:
    """Every file the manifest lists is there, whole (its size) and unaltered (its sha256)."""
    manifest = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest):
        raise UserError(f"the default base model's manifest {manifest} is missing: {REBUILD_HINT}")
    try:
        with open(manifest) as f:
            files = {name: (int(e["bytes"]), str(e["sha256"])) for name, e in json.load(f)["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"the default base model's manifest {manifest} is unreadable ({err}): {REBUILD_HINT}") from None
    for name, (size, digest) in sorted(files.items()):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            problem = "is missing"
        elif os.path.getsize(file) != size:
            problem = f"is truncated ({os.path.getsize(file)} of {size} bytes)" if os.path.getsize(file) < size \
                else f"has {os.path.getsize(file)} bytes, not {size}"
        elif sha256_of(file) != digest:
            problem = "is altered (its sha256 differs from the manifest's)"
        else:
            continue
        raise UserError(f"default base model file {file} {problem}: {REBUILD_HINT}")


def write_manifest(path: str) -> dict:
    """Write the manifest of every file in `path` (the manifest itself excepted)."""
    files = {name: {"bytes": os.path.getsize(os.path.join(path, name)), "sha256": sha256_of(os.path.join(path, name))}
             for name in sorted(os.listdir(path)) if name != MANIFEST and os.path.isfile(os.path.join(path, name))}
    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump({"files": files}, f, indent=1)
    return files


def ship_base(model_dir: str, recipe: BaseRecipe, build_seconds: float, dest: str | None = None,
              extra_files: tuple[str, ...] = ()) -> dict:
    """Copy a finished build of `recipe` (build_base's model folder) into the package's default_base
    folder (or dest) with its recipe.json, pretraining log, `extra_files` and a manifest; returns the manifest."""
    dest = dest or default_base_path(verify=False)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(model_dir, dest)
    for file in extra_files:
        shutil.copy(file, dest)
    with open(os.path.join(dest, "recipe.json"), "w") as f:
        json.dump({**recipe.to_dict(), "build_seconds": round(build_seconds, 1)}, f, indent=1)
    return write_manifest(dest)


def shipped_base(recipe: BaseRecipe) -> str | None:
    """The shipped default base folder when `recipe` is the default recipe (the one it was built from)
    and the package has that folder, else None (the base is then built into the cache)."""
    if recipe != BaseRecipe():
        return None
    path = default_base_path(verify=False)
    return path if os.path.isdir(path) else None


def needs_build(recipe: BaseRecipe) -> bool:
    """Whether ensure_base(recipe) would pretrain (no shipped model and no cached one)."""
    return shipped_base(recipe) is None and not is_built(base_dir(recipe))


def ensure_base(recipe: BaseRecipe, rebuild: bool = False, log=print) -> tuple[str, bool]:
    """The base model folder for `recipe`: the shipped one (checked against its manifest) for the
    default recipe, else the cached one, pretrained first when missing. `rebuild`: pretrain again
    into the cache (and, for the default recipe, compare the rebuilt model with the shipped one).
    Returns (path, built_now)."""
    shipped = shipped_base(recipe)
    if shipped and not rebuild:
        verify_base(shipped)
        return shipped, False
    path = base_dir(recipe)
    if rebuild:  # the finished model only: an interrupted rebuild resumes from the same recipe's checkpoints
        shutil.rmtree(path, ignore_errors=True)
    if is_built(path):
        return path, False
    from . import build

    work = path + ".partial"  # survives an interruption: pretraining resumes from its checkpoints
    started = time.time()
    build.build_base(recipe, work, log)
    with open(os.path.join(work, "model", "recipe.json"), "w") as f:
        json.dump({**recipe.to_dict(), "build_seconds": round(time.time() - started, 1)}, f, indent=1)
    if not is_built(path):  # else a concurrent build finished first; keep it
        shutil.rmtree(path, ignore_errors=True)
        os.replace(os.path.join(work, "model"), path)
    shutil.rmtree(work, ignore_errors=True)
    if shipped:
        log(compare_with_shipped(path, shipped))
    return path, True


def retrieval_scores(path: str, samples: int = 100, seed: int = 0, lengths=(256, 512, 1024)) -> dict:
    """Greedy MK-2 accuracy of the model in `path` at each length (the evaluation's own run_nih)."""
    from ...evaluation import run_nih

    with _loaded(path) as model_and_tokenizer:
        summary = run_nih({"m": model_and_tokenizer}, ("mk2",), lengths, samples, seed=seed, show_progress=False)
    return {n: summary["m"]["mk2"][n]["mean"] for n in lengths}


def icl_scores(path: str, samples: int = 60, seed: int = 0, shots=(8, 16, 24)) -> dict:
    """Many-shot ICL accuracy of the model in `path` at each shot count (the evaluation's run_icl)."""
    from ...evaluation import run_icl

    with _loaded(path) as model_and_tokenizer:
        summary = run_icl({"m": model_and_tokenizer}, shots, samples, seed=seed, show_progress=False)
    return {n: summary["m"][n]["mean"] for n in sorted(int(k) for k in shots)}


@contextlib.contextmanager
def _loaded(path: str):
    """(model, tokenizer) from `path` in float32, evaluation mode, without gradients."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        yield model, AutoTokenizer.from_pretrained(path)


def compare_with_shipped(rebuilt: str, shipped: str, samples: int = 100) -> str:
    """One line: how the rebuilt base scores against the shipped one on the same samples (greedy MK-2 at
    256/512/1024 tokens, `samples` each; many-shot ICL at 8/16/24 shots, 60 each), also written to
    rebuilt/comparison.json."""
    try:
        verify_base(shipped)
    except UserError as err:
        return f"rebuilt base at {rebuilt}; not compared with the shipped one ({err})"
    ours = {"mk2": retrieval_scores(rebuilt, samples), "icl": icl_scores(rebuilt)}
    theirs = {"mk2": retrieval_scores(shipped, samples), "icl": icl_scores(shipped)}
    with open(os.path.join(rebuilt, "comparison.json"), "w") as f:
        json.dump({"samples": samples, "icl_samples": 60, "rebuilt": ours, "shipped": theirs}, f, indent=1)
    mk2 = ", ".join(f"{n} tokens {ours['mk2'][n]:.2f} vs {theirs['mk2'][n]:.2f}" for n in ours["mk2"])
    icl = ", ".join(f"{n} shots {ours['icl'][n]:.2f} vs {theirs['icl'][n]:.2f}" for n in ours["icl"])
    gap = max(abs(ours[task][n] - theirs[task][n]) for task in ours for n in ours[task])
    return (f"rebuilt base vs shipped base: greedy MK-2 on {samples} samples {mk2}; many-shot ICL on 60 samples "
            f"{icl} (largest gap {gap:.2f})")
