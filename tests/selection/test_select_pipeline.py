"""run_selection / `difflora select` end to end on a tiny saved model and chat JSONL data."""

import json
import random

import pytest
import torch
import yaml
from peft import PeftModel, get_peft_model

from difflora.cli.main import main
from difflora.errors import UserError
from difflora.loading import load_base
from difflora.select import keep_count, run_selection
from difflora.train import load_train_config


def _write_chat(path, n, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            a, b = rng.randint(0, 50), rng.randint(0, 50)
            f.write(json.dumps({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                             {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}) + "\n")
    return str(path)


@pytest.fixture
def config(tiny_base_dir, tmp_path):
    train = _write_chat(tmp_path / "train.jsonl", 40)

    def make(method=None, **data):
        return {"model": str(tiny_base_dir), "output_dir": str(tmp_path / "out"),
                "method": method or {"type": "lora", "r": 4},
                "data": {"train": train, "max_length": 48, **data},
                "training": {"learning_rate": 1e-3, "per_device_train_batch_size": 4, "max_steps": 2,
                             "save_steps": 2, "report_to": []}}
    return make


def _trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_lora_selection_writes_a_config_the_trainer_reads(config, tiny_base_dir, tmp_path):
    result = run_selection(config(), sampling_rate=0.5, search_steps=6, progress=False)
    assert result.method == "lora"
    assert len(result.dam.candidates) == 2 * 7
    assert len(result.kept) == keep_count(14, 0.5) == 7
    assert result.trainable_params == sum(c.params for c in result.kept)
    assert result.folded and result.out_dir == str(tmp_path / "out")

    cfg = load_train_config(result.config_path)  # the shared training-config format
    assert cfg.method.options["target_modules"] == [c.module_name for c in result.kept]
    assert cfg.output_dir == str(tmp_path / "out" / "train")
    base, _ = load_base(str(tiny_base_dir))
    assert _trainable(get_peft_model(base, cfg.method.peft_config())) == result.trainable_params

    base, _ = load_base(str(tiny_base_dir))
    adapter = PeftModel.from_pretrained(base, result.adapter_dir, is_trainable=True)
    assert _trainable(adapter) == result.trainable_params
    assert any(p.abs().sum() > 0 for n, p in adapter.named_parameters() if "lora_B" in n)  # inherited, not fresh

    dam = json.load(open(result.dam_json))
    assert dam["kept"] == [c.module_name for c in result.kept]
    assert len(dam["weights"]) == 2 and len(dam["weights"][0]) == 7
    assert dam["kept_params"] == result.trainable_params and dam["sampling_rate"] == 0.5
    with open(result.heatmap, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_difflora_selection_within_a_budget(config):
    method = {"type": "difflora", "preset": "difflora-64-fixed", "r": 4, "lora_alpha": 8}
    result = run_selection(config(method), budget=10**9, search_steps=4, progress=False)
    assert len(result.kept) == 2  # everything fits
    one_layer = result.kept[0].params
    result = run_selection(config(method), budget=one_layer + 1, search_steps=4, progress=False,
                           out_dir=str(result.out_dir) + "-one")
    assert len(result.kept) == 1 and result.trainable_params == one_layer
    cfg = load_train_config(result.config_path)
    assert cfg.method.options["layers_to_transform"] == [result.kept[0].layer]
    assert cfg.method.preset == "difflora-64-fixed"
    assert not result.folded and result.equivalent_gates[result.kept[0].index] == 1.0


def test_method_can_be_chosen_over_the_config(config):
    result = run_selection(config({"type": "lora"}), method="difflora", search_steps=2, sampling_rate=1.0,
                           progress=False)
    assert result.method == "difflora" and len(result.kept) == 2


def test_cli_select_then_train(config, tmp_path, capsys):
    path = tmp_path / "select.yaml"
    path.write_text(yaml.safe_dump(config()))
    assert main(["select", str(path), "--search-steps", "4", "--sampling-rate", "0.25", "--out",
                 str(tmp_path / "sel"), "--quiet"]) == 0
    config_path = capsys.readouterr().out.strip().splitlines()[-1]
    from difflora.train import run_training

    trained = run_training(config_path, quiet=True)
    base, _ = load_base(config(method=None)["model"])
    model = PeftModel.from_pretrained(base, trained.output_dir)
    assert _trainable(model) == 0 and len([n for n, _ in model.named_modules() if n.endswith("lora_A")]) == 4


def test_training_starts_from_the_inherited_weights(config):
    """The selected config's init_from: with a learning rate of 0 the trained adapter is exactly
    the one the search exported (weight sharing carried into `difflora train`)."""
    from peft.utils import load_peft_weights

    from difflora.train import run_training

    result = run_selection(config(), sampling_rate=0.5, search_steps=4, progress=False)
    assert load_train_config(result.config_path).init_from == result.adapter_dir
    trained = run_training(result.config_path, overrides=["training.learning_rate=0", "training.max_steps=1"],
                           quiet=True)
    inherited, final = load_peft_weights(result.adapter_dir), load_peft_weights(trained.output_dir)
    assert inherited.keys() == final.keys()
    assert all(torch.equal(inherited[k], final[k]) for k in inherited)
    assert any(v.abs().sum() > 0 for k, v in final.items() if "lora_B" in k)  # not the fresh init (B = 0)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("rate", [0, -0.5, 1.5])
def test_bad_sampling_rate(config, rate):
    with pytest.raises(UserError, match=r"sampling rate must be in \(0, 1\]"):
        run_selection(config(), sampling_rate=rate, progress=False)


def test_budget_smaller_than_one_adapter(config):
    with pytest.raises(UserError, match="smaller than one adapter"):
        run_selection(config(), budget=10, progress=False)


def test_empty_heldout_split(config, tmp_path):
    small = _write_chat(tmp_path / "small.jsonl", 3)
    with pytest.raises(UserError, match="held-out split is empty"):
        run_selection(config(train=small), heldout_fraction=0.2, progress=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match=r"held-out split \(data.eval\)"):
        run_selection(config(eval=str(empty)), progress=False)


def test_other_bad_requests(config):
    with pytest.raises(UserError, match="either a sampling rate or a parameter budget"):
        run_selection(config(), sampling_rate=0.5, budget=10**6, progress=False)
    with pytest.raises(UserError, match="lora or difflora"):
        run_selection(config({"type": "full"}), progress=False)
    with pytest.raises(UserError, match="unknown select key"):
        run_selection({**config(), "select": {"sampling_rat": 0.5}}, progress=False)
    with pytest.raises(UserError, match="held-out fraction must be in"):
        run_selection(config(), heldout_fraction=1.0, progress=False)


def test_cli_reports_bad_input_in_one_line(config, tmp_path, capsys):
    path = tmp_path / "select.yaml"
    path.write_text(yaml.safe_dump(config()))
    assert main(["select", str(path), "--sampling-rate", "1.5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("difflora select: error: --sampling-rate must be in (0, 1]") and "\n" not in err


def test_select_section_in_the_config(config):
    cfg = {**config(), "select": {"sampling_rate": 0.25, "search_steps": 2}}
    result = run_selection(cfg, progress=False)
    assert len(result.kept) == keep_count(14, 0.25) and result.history.steps[-1] == 2
    assert "select" not in yaml.safe_load(open(result.config_path))
    assert len(result.dam.weights) == 14 and all(0 < w < 1 for w in result.dam.weights)
    # YAML 1.1 reads 1e9 as a string; a rate given as an argument replaces the section's budget
    cfg = {**config(), "select": {"budget": "1e9", "search_steps": 2}}
    assert len(run_selection(cfg, progress=False).kept) == 14
    assert len(run_selection(cfg, sampling_rate=0.25, progress=False).kept) == 4
