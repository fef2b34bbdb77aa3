"""difflora export: the exported folder loads with plain transformers in a process where difflora and
peft cannot be imported (offline, fresh HF_HOME), and gives the PeftModel's logits (fp32, within 1e-5,
left and right padded) and its cached greedy tokens, for every family x preset."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM

import difflora
from difflora import DiffLoRAConfig
from difflora.cli.main import main as cli_main
from difflora.export import export_standalone
from difflora.testing import TINY_SHAPES, tiny_model

FAMILY_SHAPES = {
    "llama": {},
    "mistral": {"sliding_window": 8},  # T > window: the window is exercised in both terms
    "qwen2": {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1},
    "qwen3": {},
}
# The families whose attention differs in more than the window: soft-cap (Gemma 2), (1 + w) per-head norms and
# local/global rotary (Gemma 3), fused qkv_proj (Phi-3), whole-projection norms (OLMo 2), and the MoE models.
# (their tiny shapes in difflora.loading already have windows shorter than the batch)
MORE_FAMILY_SHAPES = {family: {} for family in TINY_SHAPES if family not in FAMILY_SHAPES}
# positive folding, the shared base's correction, and shared keys with a per-token lambda
MORE_FAMILY_PRESETS = ("difflora-32", "shared-diff", "difflora-shared-kv")
CLASS_NAMES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma2": "Gemma2",
               "gemma3_text": "Gemma3", "phi3": "Phi3", "olmo2": "Olmo2", "mixtral": "Mixtral",
               "qwen2_moe": "Qwen2Moe", "qwen3_moe": "Qwen3Moe"}
# every family x every preset, plus adapters on some layers only (the others stay the family's attention)
CASES = [(family, preset, None) for family in FAMILY_SHAPES for preset in difflora.PRESETS]
CASES += [(family, preset, None) for family in MORE_FAMILY_SHAPES for preset in MORE_FAMILY_PRESETS]
FAMILY_SHAPES = {**FAMILY_SHAPES, **MORE_FAMILY_SHAPES}
CASES += [("llama", "difflora-32", [1]), ("qwen3", "shared-diff", [0])]
T, NEW_TOKENS = 20, 12
TOLERANCE = 1e-5

LOADER = textwrap.dedent(r'''
    import importlib.abc, json, sys
    BLOCKED = ("difflora", "difflora_autoload", "peft")
    # A pip-installed difflora leaves a .pth in site-packages that imports the (inert, with
    # DIFFLORA_NO_AUTOLOAD=1) difflora_autoload hook at interpreter start; a machine without difflora
    # has none, so take it out before checking that nothing of difflora or peft is loaded.
    sys.modules.pop("difflora_autoload", None)
    assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED], "imported before the block"

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the export test)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    for name in BLOCKED:
        sys.modules[name] = None  # and importlib.util.find_spec (transformers' availability checks) says None
    for name in BLOCKED:
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} is importable: the block does not work")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    jobs = json.load(open(sys.argv[1]))
    for job in jobs:
        inputs = torch.load(job["inputs"])
        model = AutoModelForCausalLM.from_pretrained(job["folder"], trust_remote_code=True, dtype=torch.float32)
        model.eval()
        result = {"class": type(model).__name__, "module": type(model).__module__}
        with torch.no_grad():
            for side in ("left", "right"):
                ids, mask = inputs[side]
                result[side] = model(input_ids=ids, attention_mask=mask).logits
            ids, mask = inputs["left"]
            result["generated"] = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=job["new_tokens"],
                                                 do_sample=False, use_cache=True, pad_token_id=0)
            cache = model(input_ids=ids, attention_mask=mask, use_cache=True).past_key_values
            result["cache_shapes"] = [(tuple(layer.keys.shape[1::2]), tuple(layer.values.shape[1::2]))
                                      for layer in cache.layers]  # (kv heads, head_dim) of keys and of values
        tokenizer = AutoTokenizer.from_pretrained(job["folder"])
        result["tokens"] = tokenizer(job["text"])["input_ids"]
        torch.save(result, job["result"])
    leaked = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in BLOCKED and mod is not None)
    assert not leaked, leaked
''')
TEXT = "One of the special magic numbers for apple is: 1234567."


def randomize(model, seed):
    """Non-trivial adapters: B factors (zero at init in the LoRA parts), lambda and norm weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".B." in name or "difflora_lambda" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "difflora_norm" in name:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.2)


def batches():
    ids = torch.randint(3, 300, (3, T), generator=torch.Generator().manual_seed(3))
    out = {}
    for side in ("left", "right"):
        mask = torch.ones(3, T, dtype=torch.long)
        pad = slice(0, 7) if side == "left" else slice(T - 7, T)
        mask[1, pad] = 0
        mask[2, slice(0, 2) if side == "left" else slice(T - 2, T)] = 0
        out[side] = (ids, mask)
    return out


def peft_outputs(model, inputs):
    with torch.no_grad():
        out = {side: model(input_ids=ids, attention_mask=mask).logits for side, (ids, mask) in inputs.items()}
        ids, mask = inputs["left"]
        out["generated"] = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                                          do_sample=False, use_cache=True, pad_token_id=0)
    return out


def case_config(preset, layers):
    positive = {"positive_r": 8, "positive_alpha": 16} if difflora.PRESETS[preset].get("positive_r") else {}
    return DiffLoRAConfig.from_preset(preset, r=8, lora_alpha=16, layers_to_transform=layers, **positive)


def run_blocked(jobs, tmp_path):
    job_file = tmp_path / "jobs.json"
    job_file.write_text(json.dumps(jobs))
    script = tmp_path / "load_exported.py"
    script.write_text(LOADER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "DIFFLORA_NO_AUTOLOAD": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, str(script), str(job_file)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_tokenizer):
    """Every case exported from a saved adapter folder, then loaded by ONE blocked subprocess."""
    root = tmp_path_factory.mktemp("export")
    inputs = batches()
    torch.save(inputs, root / "inputs.pt")
    bases = {}
    for family, shape in FAMILY_SHAPES.items():
        bases[family] = root / f"base-{family}"
        tiny_model(family, vocab_size=len(tiny_tokenizer), **shape).save_pretrained(bases[family])
        tiny_tokenizer.save_pretrained(bases[family])
    cases, jobs = {}, []
    for i, (family, preset, layers) in enumerate(CASES):
        name = f"{family}-{preset}-{layers or 'all'}"
        base = AutoModelForCausalLM.from_pretrained(bases[family]).eval()
        with torch.no_grad():
            base_logits = base(input_ids=inputs["left"][0], attention_mask=inputs["left"][1]).logits
        model = get_peft_model(base, case_config(preset, layers)).eval()
        randomize(model, seed=i)
        model.save_pretrained(root / f"adapter-{name}")
        reference = peft_outputs(model, inputs)
        reference["base_left"] = base_logits
        out = root / f"out-{name}"
        if i == 0:  # the command itself once; the others through the function it calls
            assert cli_main(["export", str(root / f"adapter-{name}"), str(out)]) == 0
        else:
            export_standalone(root / f"adapter-{name}", out)
        cases[(family, preset, str(layers))] = (reference, out, root / f"result-{name}.pt", model)
        jobs.append({"folder": str(out), "inputs": str(root / "inputs.pt"), "result": str(root / f"result-{name}.pt"),
                     "new_tokens": NEW_TOKENS, "text": TEXT})
    run_blocked(jobs, root)
    return {key: (ref, out, torch.load(result), model) for key, (ref, out, result, model) in cases.items()}


@pytest.mark.parametrize("family,preset,layers", CASES, ids=lambda v: str(v))
def test_exported_model_matches_peft_model(exported, tiny_tokenizer, family, preset, layers):
    reference, out, got, model = exported[(family, preset, str(layers))]
    assert got["class"] == f"DiffLoRA{CLASS_NAMES[family]}ForCausalLM"
    assert got["module"].startswith("transformers_modules."), "loaded from the folder's own modeling file"
    inputs = batches()
    for side in ("left", "right"):
        rows = inputs[side][1].bool()
        err = (got[side] - reference[side])[rows].abs().max().item()
        assert err <= TOLERANCE, f"{side} padding: max |logit difference| {err:.2e}"
    # the adapters matter far beyond the tolerance, so a wrong fold would show
    rows = inputs["left"][1].bool()
    assert (reference["left"] - reference["base_left"])[rows].abs().max().item() > 100 * TOLERANCE
    assert torch.equal(got["generated"], reference["generated"])
    assert got["tokens"] == tiny_tokenizer(TEXT)["input_ids"]
    # one attention call per layer, every layer alike: 2H query heads over the base's kv heads (shared keys)
    # or over K1 and K2 as 2 x kv heads with V given to both (own keys); config.json says so
    written = json.loads((out / "config.json").read_text())
    own_keys = model.peft_config["default"].negative_keys == "own"
    config = model.base_model.model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = (2 if own_keys else 1) * config.num_key_value_heads
    assert (written["num_attention_heads"], written["num_key_value_heads"], written["head_dim"]) == (
        2 * config.num_attention_heads, kv_heads, head_dim)
    assert (written["difflora"]["attention_heads"], written["difflora"]["key_value_heads"]) == (
        config.num_attention_heads, config.num_key_value_heads)
    assert got["cache_shapes"] == [((kv_heads, head_dim), (kv_heads, head_dim))] * config.num_hidden_layers


def test_folder_layout_and_model_card(exported):
    _, out, _, _ = exported[("llama", "difflora-32", "None")]
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "configuration_difflora.py", "modeling_difflora.py", "model.safetensors",
            "tokenizer.json", "tokenizer_config.json", "README.md", "generation_config.json"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_difflora.DiffLoRALlamaConfig",
                                  "AutoModel": "modeling_difflora.DiffLoRALlamaModel",
                                  "AutoModelForCausalLM": "modeling_difflora.DiffLoRALlamaForCausalLM"}
    assert config["model_type"] == "difflora_llama"
    card = (out / "README.md").read_text()
    assert "preset `difflora-32` with r=8, lora_alpha=16, positive_r=8, positive_alpha=16" in card
    assert f"difflora {difflora.__version__}" in card and "5.23.0 and 5.24.0" in card
    assert "base-llama" in card and "adapter-llama-difflora-32" in card
    assert "vllm serve PATH --model-impl transformers --trust-remote-code" in card
    assert "KV cache: 2x the base model's" in card  # own keys: K1 and K2 as kv heads, V for both
    _, out, _, _ = exported[("llama", "difflora-shared-kv", "None")]
    assert "KV cache: 1x the base model's" in (out / "README.md").read_text()


def test_config_checks_written_for_the_base_run_with_its_head_counts(tmp_path):
    """config.json states the attention call's heads (2H); the family config's own checks, such as Phi-3's
    longrope factor lengths (head_dim / 2), still see the base's and pass."""
    rope = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
            "original_max_position_embeddings": 16, "partial_rotary_factor": 1.0}
    model = get_peft_model(tiny_model("phi3", vocab_size=384, rope_parameters=rope), case_config("difflora-32", None))
    model.eval()
    randomize(model, seed=11)
    loaded = AutoModelForCausalLM.from_pretrained(export_standalone(model, tmp_path / "out"), trust_remote_code=True)
    assert (loaded.config.num_attention_heads, loaded.config.difflora["attention_heads"]) == (8, 4)
    ids = torch.randint(3, 300, (1, 24), generator=torch.Generator().manual_seed(1))  # past 16: long factors
    with torch.no_grad():
        assert (loaded.eval()(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item() <= TOLERANCE


def test_shipped_source_files_import_only_torch_and_transformers():
    folder = Path(difflora.__file__).parent / "export" / "standalone"
    allowed = {"torch", "transformers", "inspect", "math"}
    for name in ("configuration_difflora.py", "modeling_difflora.py"):
        tree = ast.parse((folder / name).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
        assert imported <= allowed, f"{name} imports {imported - allowed}"


def test_export_from_a_peft_model_object_with_modules_to_save(tmp_path, tiny_base_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir).eval()
    config = case_config("shared-diff", None)
    config.modules_to_save = ["lm_head"]  # a fully trained copy: the export must take it, not the original
    model = get_peft_model(base, config).eval()
    randomize(model, seed=99)
    with torch.no_grad():
        model.base_model.model.lm_head.modules_to_save["default"].weight.mul_(1.5)
    out = export_standalone(model, tmp_path / "out")
    assert (out / "tokenizer.json").is_file(), "the base folder's tokenizer is shipped"
    loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    ids, mask = batches()["left"]
    with torch.no_grad():
        err = (loaded(input_ids=ids, attention_mask=mask).logits - model(input_ids=ids, attention_mask=mask).logits)
    assert err[mask.bool()].abs().max().item() <= TOLERANCE


# ------------------------------------------------------------------------------------------------
# bad input: one line, nothing written
def run_cli(capsys, *args):
    code = cli_main(["export", *map(str, args)])
    err = capsys.readouterr().err.strip()
    return code, err


def test_a_folder_that_is_not_a_difflora_adapter(capsys, tmp_path, tiny_base_dir):
    code, err = run_cli(capsys, tiny_base_dir, tmp_path / "out")
    assert code == 1 and len(err.splitlines()) == 1 and "no adapter_config.json" in err
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    code, err = run_cli(capsys, lora, tmp_path / "out")
    assert code == 1 and len(err.splitlines()) == 1 and "holds a LORA adapter, not a DiffLoRA one" in err
    code, err = run_cli(capsys, tmp_path / "missing", tmp_path / "out")
    assert code == 1 and len(err.splitlines()) == 1 and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_new_or_empty_folder(capsys, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "DIFFLORA"}))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    code, err = run_cli(capsys, adapter, a_file)
    assert code == 1 and len(err.splitlines()) == 1 and "is a file" in err
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    code, err = run_cli(capsys, adapter, full)
    assert code == 1 and len(err.splitlines()) == 1 and "is not empty" in err
    assert [p.name for p in full.iterdir()] == ["keep.txt"] and a_file.read_text() == "x"


def test_cli_help_names_every_default(capsys):
    assert cli_main(["export", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "ADAPTER_DIR" in text and "default: the base named in" in text and "default: auto" in text


def test_half_precision_export_keeps_adapters_float32_and_static_cache_works(tmp_path):
    """A bf16 base exports bf16 base weights and float32 adapter weights (as trained, kept by
    _keep_in_fp32_modules_strict on load); eager backend + static cache give the PeftModel's tokens."""
    model = get_peft_model(tiny_model("llama", vocab_size=384, attn_implementation="eager").to(torch.bfloat16),
                           case_config("difflora-32-gn", None)).eval()
    randomize(model, seed=5)
    loaded = AutoModelForCausalLM.from_pretrained(export_standalone(model, tmp_path / "out"),
                                                  trust_remote_code=True, attn_implementation="eager").eval()
    dtypes = {name.split("self_attn.")[1]: p.dtype for name, p in loaded.named_parameters()
              if "layers.0.self_attn" in name}
    assert dtypes["q_proj.weight"] == torch.bfloat16 and loaded.config._attn_implementation == "eager"
    negative = ("q2_proj", "k2_proj", "diff_lambda", "diff_norm")
    assert {dtypes[n] for n in dtypes if n.split(".")[0] in negative} == {torch.float32}
    ids, mask = batches()["left"]
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0,
              cache_implementation="static")
    with torch.no_grad():
        assert torch.equal(loaded.generate(**kw), model.generate(**kw))
