"""`difflora train` with `quantization:`: the config key, its one-line errors, and a run on a 4-bit base
that evaluates mid-training (eval mode, no gradients) and still ends with the adapter a run on the
dequantized float32 base ends with."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from difflora.errors import UserError
from difflora.quantization import Quantization, bitsandbytes_config, parse_quantization
from difflora.train.config import load_train_config


def chat_rows(n):
    rows = []
    for i in range(n):
        a, b = i % 7, (3 * i) % 11
        rows.append({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                  {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(base, out, train, **extra):
    return {"model": str(base), "output_dir": str(out),
            "method": {"type": "difflora", "preset": "difflora-32", "r": 4, "positive_r": 4, "lora_dropout": 0.0},
            "data": {"train": str(train), "max_length": 48, "eval_fraction": 0.25},
            "training": {"max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 1, "eval_steps": 2,
                         "save_steps": 100, "learning_rate": 1e-2, "report_to": []},
            **extra}


@pytest.mark.parametrize("value, want", [
    ("nf4", Quantization(4, "nf4", True)),
    ("fp4", Quantization(4, "fp4", True)),
    ("int8", Quantization(bits=8)),
    ({"bits": 4, "quant_type": "fp4", "double_quant": False, "compute_dtype": "bfloat16"},
     Quantization(4, "fp4", False, "bfloat16")),
    (None, None),
])
def test_quantization_settings(value, want):
    assert parse_quantization(value) == want


@pytest.mark.parametrize("value, message", [
    ("nf3", "unknown quantization 'nf3': choose from nf4, fp4, int8"),
    ({"bits": 3}, "quantization.bits must be 4 or 8, got 3"),
    ({"bits": 4, "quant_type": "int4"}, "quant_type must be one of nf4, fp4, got 'int4'"),
    ({"bits": 4, "double_quant": "yes"}, "double_quant must be true or false"),
    ({"bits": 4, "compute_dtype": "float64"}, "compute_dtype must be one of float32, bfloat16, float16"),
    ({"bits": 4, "blocksize": 64}, "unknown key(s) ['blocksize']"),
    (4, "must be one of nf4, fp4, int8 or a mapping"),
])
def test_bad_quantization_is_a_one_line_error(value, message, tiny_base_dir, tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", chat_rows(4))
    with pytest.raises(UserError) as info:
        load_train_config(config(tiny_base_dir, tmp_path / "out", train, quantization=value))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_quantized_base_cannot_be_fully_fine_tuned(tiny_base_dir, tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", chat_rows(4))
    raw = {**config(tiny_base_dir, tmp_path / "out", train, quantization="nf4"), "method": {"type": "full"}}
    with pytest.raises(UserError, match="cannot be fully fine-tuned"):
        load_train_config(raw)


def test_missing_bitsandbytes_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes now raises ImportError
    with pytest.raises(UserError, match="pip install bitsandbytes"):
        bitsandbytes_config(parse_quantization("nf4"))


def test_compute_dtype_defaults_to_the_model_dtype():
    pytest.importorskip("bitsandbytes")
    assert bitsandbytes_config(parse_quantization("nf4"), torch.bfloat16).bnb_4bit_compute_dtype == torch.bfloat16
    explicit = parse_quantization({"bits": 4, "compute_dtype": "float32"})
    assert bitsandbytes_config(explicit, torch.bfloat16).bnb_4bit_compute_dtype == torch.float32
    assert bitsandbytes_config(parse_quantization("int8")).load_in_8bit


def test_training_on_a_4bit_base_matches_the_dequantized_base(tmp_path, tiny_tokenizer):
    """Mid-training evaluations (the repack trap) included, both runs end with the same adapter."""
    pytest.importorskip("bitsandbytes")
    from peft.utils import load_peft_weights

    from difflora.testing import tiny_model
    from difflora.train import run_training

    from .test_quantized_base import dequantized_copy, quantized

    base = tmp_path / "base"
    model = tiny_model("llama", vocab_size=len(tiny_tokenizer), hidden_size=64, layers=2, intermediate_size=128)
    model.save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    reference = tmp_path / "dequantized"
    dequantized_copy(quantized(base, "nf4"), base).save_pretrained(reference)
    tiny_tokenizer.save_pretrained(reference)
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(24))

    q = run_training(config(base, tmp_path / "q", train, quantization="nf4"), quiet=True)
    r = run_training(config(reference, tmp_path / "r", train), quiet=True)
    assert sum("eval_loss" in h for h in q.log_history) >= 2  # evaluated mid-run and at the end
    got, want = load_peft_weights(q.output_dir), load_peft_weights(r.output_dir)
    assert set(got) == set(want) and want
    scale = max(w.abs().max().item() for w in want.values())
    for name in want:
        assert (got[name] - want[name]).abs().max().item() <= 1e-5 * scale, name
    assert [step for step, _ in q.losses] == [step for step, _ in r.losses]
    assert [loss for _, loss in q.losses] == pytest.approx([loss for _, loss in r.losses], rel=1e-5)
