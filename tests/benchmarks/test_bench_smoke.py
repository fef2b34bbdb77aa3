"""The benchmark runner end to end at the tiny shape (--quick): every row printed, files written.
No timing assertions: the figures on a shared CI machine mean nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from setups import CONFIGS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

QUICK_LENGTHS = (64, 128)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, out


def test_every_training_row_is_printed(quick_run):
    stdout, _ = quick_run
    lines = stdout.splitlines()
    for tokens in QUICK_LENGTHS:
        for config in CONFIGS:
            rows = [ln.split() for ln in lines if ln.split()[:2] == [str(tokens), config]]
            assert len(rows) == 1, f"no single row for {config} at {tokens} tokens"
            step_ms, spread, ratio, bound = rows[0][2:6]
            assert float(step_ms) > 0 and spread.endswith("%") and float(ratio) > 0 and float(bound) > 0
            if config.startswith("difflora") or config == "shared-diff":
                assert rows[0][7] in ("ok", "MISS")  # time verdict beside the bound


def test_every_decode_row_and_the_summary_are_printed(quick_run):
    stdout, _ = quick_run
    decode = stdout.split("Decoding with the KV cache", 1)[1]
    for config in CONFIGS:
        assert any(line.split()[:1] == [config] and float(line.split()[1]) > 0 for line in decode.splitlines())
    assert "targets met: step time" in stdout
    assert "FLOP bound (DiffLoRA / lora-8 step) on the Llama-3.2-1B shape" in stdout


def test_json_record_and_plot_are_written(quick_run):
    _, out = quick_run
    record = json.loads((out / "cpu-tiny.json").read_text())
    assert set(record["train"]) == {str(n) for n in QUICK_LENGTHS}
    for per_config in record["train"].values():
        assert set(per_config) == set(CONFIGS)
        for m in per_config.values():
            assert m["step_s"] > 0 and len(m["step_s_all"]) == 2 and m["peak_mib"] is not None
    assert (out / "cpu-tiny.png").stat().st_size > 0


def test_bad_arguments_give_one_line_errors():
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--configs", "difflora-64"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "must include lora-8" in proc.stderr and "Traceback" not in proc.stderr
