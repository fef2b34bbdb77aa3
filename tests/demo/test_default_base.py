"""The shipped default base model: its files match the manifest, it is the default recipe's model, it
retrieves (greedy MK-2 at 256 tokens, scored by the evaluation suite); and a missing, truncated or
altered file of a base folder is a one-line error that names the file and says how to rebuild."""

import hashlib
import json
import os
import shutil

import pytest
import torch

from difflora.demo import default_base_path
from difflora.demo.base import BaseRecipe, ensure_base, verify_base
from difflora.demo.base.store import MANIFEST, write_manifest
from difflora.errors import UserError

FILES = {"model.safetensors": bytes(range(256)) * 8, "tokenizer.json": b'{"model": "x"}' * 20, "config.json": b"{}"}


@pytest.fixture(scope="module")
def shipped():
    if not os.path.isdir(default_base_path(verify=False)):
        pytest.skip("this checkout ships no default base model yet (see docs/demo-base.md)")
    return default_base_path()  # verifies every checksum first


@pytest.fixture
def base_folder(tmp_path):
    """A base folder with a manifest: a copy of the shipped base when there is one, else stand-in files."""
    target = tmp_path / "base"
    if os.path.isdir(default_base_path(verify=False)):
        shutil.copytree(default_base_path(), target)
    else:
        target.mkdir()
        for name, data in FILES.items():
            (target / name).write_bytes(data)
        write_manifest(str(target))
    return target


def test_shipped_base_is_the_default_recipes_model(shipped):
    recipe = json.loads(open(os.path.join(shipped, "recipe.json")).read())
    expected = json.loads(json.dumps(BaseRecipe().to_dict()))
    assert {k: recipe[k] for k in expected} == expected
    files = json.loads(open(os.path.join(shipped, MANIFEST)).read())["files"]
    assert {"model.safetensors", "config.json", "tokenizer.json", "recipe.json", "pretraining_log.json"} <= set(files)
    assert sum(f["bytes"] for f in files.values()) <= 50 * 2**20


def test_recipe_digests_and_recipe_json_do_not_change_when_a_field_is_retired(shipped):
    """A recipe's digest names its cache folder and enters the demo's stage fingerprints: fields retired
    from BaseRecipe and CorpusMix are still written with their one value (recipe.RETIRED, RETIRED_MIX)."""
    from difflora.demo.base import QUICK_RECIPE

    assert (BaseRecipe().digest(), QUICK_RECIPE.digest()) == ("a3486b1439f2", "ac2f7461cffc")
    recipe = json.loads(open(os.path.join(shipped, "recipe.json")).read())
    recipe.pop("build_seconds")
    assert json.loads(json.dumps(BaseRecipe().to_dict())) == recipe


def test_default_recipe_loads_the_shipped_base_without_pretraining(shipped, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLORA_CACHE", str(tmp_path / "cache"))
    path, built = ensure_base(BaseRecipe())
    assert path == shipped and not built and not (tmp_path / "cache").exists()


def test_shipped_base_retrieves(shipped):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from difflora.evaluation import run_nih

    model = AutoModelForCausalLM.from_pretrained(shipped, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(shipped)
    with torch.no_grad():  # seed 20: not the seed the build's probes used (7)
        summary = run_nih({"base": (model, tokenizer)}, ("mk2",), (256,), 20, seed=20, show_progress=False)
    assert summary["base"]["mk2"][256]["mean"] >= 0.8


def _one_line_error_naming(path, name: str, what: str) -> None:
    with pytest.raises(UserError) as err:
        verify_base(str(path))
    message = str(err.value)
    assert "\n" not in message and os.path.join(str(path), name) in message and what in message
    assert "--rebuild-base" in message


def test_intact_folder_verifies(base_folder):
    verify_base(str(base_folder))


def test_altered_file_is_a_one_line_error(base_folder):
    weights = base_folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    weights.write_bytes(bytes(data))
    _one_line_error_naming(base_folder, "model.safetensors", "altered")


def test_truncated_file_is_a_one_line_error(base_folder):
    tokenizer = base_folder / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:100])
    _one_line_error_naming(base_folder, "tokenizer.json", "truncated")


def test_missing_file_is_a_one_line_error(base_folder):
    (base_folder / "config.json").unlink()
    _one_line_error_naming(base_folder, "config.json", "missing")


def test_missing_or_broken_manifest_is_a_one_line_error(base_folder):
    (base_folder / MANIFEST).write_text("{not json")
    _one_line_error_naming(base_folder, MANIFEST, "unreadable")
    (base_folder / MANIFEST).unlink()
    _one_line_error_naming(base_folder, MANIFEST, "missing")


def test_manifest_lists_sizes_and_sha256(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x00\x01" * 10)
    files = write_manifest(str(tmp_path))
    assert files == {"a.bin": {"bytes": 20, "sha256": hashlib.sha256(b"\x00\x01" * 10).hexdigest()}}


def test_a_build_folder_refuses_another_recipes_checkpoints(tmp_path):
    import dataclasses

    from difflora.demo.base.build import claim_build_dir

    claim_build_dir(BaseRecipe(), str(tmp_path))
    claim_build_dir(BaseRecipe(), str(tmp_path))  # the same recipe resumes
    with pytest.raises(UserError, match="another recipe"):
        claim_build_dir(dataclasses.replace(BaseRecipe(), steps=1), str(tmp_path))


def test_a_rebuild_is_compared_with_the_shipped_base_on_retrieval_and_icl(shipped, tmp_path):
    """--rebuild-base ends with this line; the shipped model against a copy of itself: no gap."""
    from difflora.demo.base.store import compare_with_shipped

    torch.set_num_threads(1)
    rebuilt = shutil.copytree(shipped, tmp_path / "rebuilt")
    line = compare_with_shipped(str(rebuilt), shipped, samples=4)
    assert "greedy MK-2 on 4 samples 256 tokens" in line and "many-shot ICL on 60 samples 8 shots" in line
    assert line.endswith("(largest gap 0.00)")
    saved = json.loads((rebuilt / "comparison.json").read_text())
    assert saved["rebuilt"] == saved["shipped"] and set(saved["rebuilt"]) == {"mk2", "icl"}
    assert saved["rebuilt"]["icl"]["8"] > 0.5  # the shipped base classifies in context


def test_an_interrupted_rebuild_resumes_its_checkpoints(tmp_path, monkeypatch):
    """--rebuild-base drops the finished model, not the build folder of the same recipe: running the
    command again after an interruption goes on from the last checkpoint."""
    from difflora.demo.base import QUICK_RECIPE, build, store

    monkeypatch.setenv("DIFFLORA_CACHE", str(tmp_path / "cache"))
    recipe = QUICK_RECIPE
    path = store.base_dir(recipe)
    os.makedirs(os.path.join(path + ".partial", "trainer", "checkpoint-6"))
    os.makedirs(path)
    seen = []

    def fake_build(recipe, work, log=print, callbacks=None):
        seen.append(os.listdir(os.path.join(work, "trainer")))
        os.makedirs(os.path.join(work, "model"))
        return os.path.join(work, "model")

    monkeypatch.setattr(build, "build_base", fake_build)
    monkeypatch.setattr(store, "is_built", lambda p: os.path.isfile(os.path.join(p, "recipe.json")))
    assert ensure_base(recipe, rebuild=True, log=lambda *_: None) == (path, True)
    assert seen == [["checkpoint-6"]] and not os.path.exists(path + ".partial")
