"""benchmarks/shared_kv.py: the cache-size figure on built models, and the verdicts of its report
(no timing assertions)."""

import pytest
import torch
from flops import SHAPES
from setups import build, random_ids
from shared_kv import cache_bytes, parse_args, report

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")


def test_cache_bytes_of_the_built_configurations():
    shape = SHAPES["tiny"]
    ids = random_ids(shape, 48, "cpu")
    sizes = {name: cache_bytes(build(name, shape, "cpu", torch.float32).model, ids)
             for name in ("base", "lora-8", "difflora-64", "difflora-shared-kv")}
    # layers x (K + V) x tokens x kv width x 4 bytes
    assert sizes["base"] == shape.layers * 2 * 48 * shape.kv_width * 4
    assert sizes["lora-8"] == sizes["difflora-shared-kv"] == sizes["base"]
    assert sizes["difflora-64"] * 2 == sizes["base"] * 3


def test_report_gives_each_target_its_verdict():
    record = {
        "meta": {"shape": "hidden-512", "load_before": (1, 1, 1), "load_after": (1, 1, 1)},
        "cache_bytes": {"base": 100, "lora-8": 100, "difflora-64": 150, "difflora-shared-kv": 100},
        "decode": {"128": {"lora-8": 10.0, "difflora-64": 6.0, "difflora-shared-kv": 9.6},
                   "2048": {"lora-8": 10.0, "difflora-64": 6.0, "difflora-shared-kv": 9.4}},
        "train": {"4096": {"lora-8": {"median_s": 1.0, "all_s": [1.0]},
                           "difflora-64": {"median_s": 1.7, "all_s": [1.7]},
                           "difflora-shared-kv": {"median_s": 1.5, "all_s": [1.4, 1.5, 1.6]}}},
    }
    text = report(record)
    assert "| difflora-64 | 150 | 1.50x |" in text and "| difflora-shared-kv | 100 | 1.00x |" in text
    assert "9.6 (0.96x ok)" in text and "9.4 (0.94x MISS)" in text
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| 4096 |")}
    assert "| ok |" in rows["difflora-shared-kv"]  # 1.5 <= 1.1 x 1.524
    assert "| MISS |" in rows["difflora-64"]  # 1.7 > 1.1 x 1.438
    assert "| 13% |" in rows["difflora-shared-kv"]  # spread (max - min) / median


def test_quick_arguments():
    args = parse_args(["--quick"])
    assert args.shape == "tiny" and args.repeats == 1
    with pytest.raises(SystemExit):
        parse_args(["--decode-tokens", "1"])
