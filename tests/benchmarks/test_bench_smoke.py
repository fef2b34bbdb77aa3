"""The benchmark runner end to end at the tiny shape (--quick): every row printed, files written;
compiled static-cache decoding with the cheap `eager` backend (Dynamo traces, no code generation);
a recompile-limit hit reported as a row; the CUDA defaults, the MFU column and the time budget.
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


def run_quick(out, *extra, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--threads", "1", "--out", str(out),
                           *extra], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return run_quick(out), out


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
    assert "Compiled decoding: not measured (--quick on cpu" in stdout  # off by default there: minutes of inductor
    assert "MFU '-': no peak FLOP/s for CPUs" in stdout


def test_json_record_and_plot_are_written(quick_run):
    _, out = quick_run
    record = json.loads((out / "cpu-tiny.json").read_text())
    assert set(record["train"]) == {str(n) for n in QUICK_LENGTHS}
    assert set(record["decode"]) == {"1"} and set(record["decode"]["1"]) == set(CONFIGS)
    assert record["meta"]["configs"] == list(CONFIGS) and "decode_compiled" not in record
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


def test_compiled_static_cache_decoding_rows(tmp_path):
    """Two configurations, two batch sizes, the `eager` backend: seconds, not minutes of inductor."""
    stdout = run_quick(tmp_path, "--configs", "lora-8", "difflora-64", "--no-memory", "--lengths", "32",
                       "--decode-tokens", "4", "--decode-batch", "1", "2", "--compiled-decode", "--compile-backend",
                       "eager")
    compiled = stdout.split("Compiled decoding: generate(cache_implementation=\"static\")", 1)[1]
    assert "backend eager" in compiled and "fail_on_recompile_limit_hit on" in compiled
    for batch in ("1", "2"):
        table = compiled.split(f"batch {batch}, prompt", 1)[1].split("batch", 1)[0]
        for config in ("lora-8", "difflora-64"):
            (row,) = [line.split() for line in table.splitlines() if line.split()[:1] == [config]]
            assert float(row[1]) > 0 and float(row[3]) > 0 and int(row[4]) >= 1, row  # tok/s, compile s, graphs
    assert "compiled decoding" in stdout.split("targets met:", 1)[1]
    record = json.loads((tmp_path / "cpu-tiny.json").read_text())
    assert set(record["decode"]) == {"1", "2"}
    for batch in ("1", "2"):
        rows = record["decode_compiled"][batch]
        assert set(rows) == {"lora-8", "difflora-64"}
        assert rows["lora-8"]["error"] is None and len(rows["lora-8"]["tok_s_all"]) == 2
    assert record["meta"]["compiled_decode"]["backend"] == "eager"


@pytest.mark.slow
def test_compiled_decoding_with_inductor(tmp_path):
    """The default backend, as on a GPU (inductor compiles each configuration on the CPU: a minute or two)."""
    stdout = run_quick(tmp_path, "--configs", "lora-8", "difflora-64", "--no-memory", "--lengths", "32",
                       "--decode-tokens", "4", "--compiled-decode", timeout=900)
    assert "backend inductor, mode default" in stdout


def test_a_recompile_limit_hit_is_a_row_not_a_crash(monkeypatch):
    """A graph break in every attention module makes Dynamo recompile the attention per layer (it guards on
    layer_idx); past the recompile limit the configuration's row says so and the next one still runs."""
    import torch
    import torch._dynamo
    import transformers.models.llama.modeling_llama as llama
    from flops import SHAPES, ModelShape
    from report import compiled_rows
    from setups import build
    from timing import RECOMPILE_LIMIT_HIT, compiled_decode_rates

    deep = ModelShape(**{**SHAPES["tiny"].__dict__, "layers": torch._dynamo.config.recompile_limit + 2})
    setups = {"lora-8": build("lora-8", deep, "cpu", torch.float32, 64),
              "difflora-64": build("difflora-64", SHAPES["tiny"], "cpu", torch.float32, 64)}  # 2 layers: no limit hit
    plain = llama.LlamaAttention.forward

    def breaking(self, *args, **kwargs):
        torch._dynamo.graph_break()
        return plain(self, *args, **kwargs)

    monkeypatch.setattr(llama.LlamaAttention, "forward", breaking)  # after wrapping: difflora checks the signature
    rows = compiled_decode_rates(setups, deep, prompt=8, new_tokens=3, device="cpu", warmup=1, repeats=1,
                                 backend="eager")
    assert rows["lora-8"]["error"] == RECOMPILE_LIMIT_HIT and rows["lora-8"]["tok_s"] is None
    assert rows["difflora-64"]["error"] is None and rows["difflora-64"]["tok_s"] > 0
    record = {"meta": {}, "decode_compiled": {"1": rows}}
    (lora_row,) = [r for r in compiled_rows(record, "1") if r["config"] == "lora-8"]
    assert lora_row["status"] == RECOMPILE_LIMIT_HIT


def test_cuda_defaults_and_options(monkeypatch):
    import run
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    args = run.parse_args(["--device", "cuda"])
    assert args.lengths == [2048, 8192, 16384] and args.decode_batch == [1, 32] and args.dtype == "bfloat16"
    assert args.compiled_decode and args.compiled_configs == list(CONFIGS)
    args = run.parse_args(["--device", "cuda", "--quick", "--compiled-configs", "difflora-64", "lora-8"])
    assert args.compiled_decode and args.compiled_configs == ["lora-8", "difflora-64"]  # the run's order
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = run.parse_args([])
    assert args.lengths == [512, 1024, 2048, 4096] and args.decode_batch == [1] and args.compiled_decode
    assert not run.parse_args(["--quick"]).compiled_decode
    for bad in (["--compiled-configs", "difflora-64"], ["--decode-batch", "0"], ["--peak-tflops", "0"],
                ["--configs", "lora-8", "--compiled-configs", "lora-8", "difflora-64"], ["--time-budget", "-1"]):
        with pytest.raises(SystemExit):
            run.parse_args(bad)


def test_peak_flops_table():
    from hardware import peak_flops

    assert peak_flops("NVIDIA H200", "bfloat16")[0] == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H100 80GB HBM3", "bfloat16")[0] == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H100 PCIe", "bfloat16")[0] == pytest.approx(756.5e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bfloat16")[0] == pytest.approx(312e12)
    assert peak_flops("NVIDIA L4", "float32")[0] == pytest.approx(30.3e12)
    assert peak_flops("NVIDIA L40S", "bfloat16")[0] == pytest.approx(362.05e12)
    value, why = peak_flops("NVIDIA B300 Imaginary", "bfloat16")
    assert value is None and "pass --peak-tflops" in why
    assert peak_flops("NVIDIA B300 Imaginary", "bfloat16", override_tflops=2000)[0] == pytest.approx(2e15)


def test_mfu_and_the_memory_target_beyond_4096_tokens():
    from flops import SHAPES, step_flops
    from report import format_tables, training_rows

    def step(seconds, mib):
        return {"step_s": seconds, "step_s_all": [seconds], "peak_mib": mib}

    record = {"meta": {"shape": "tiny", "shape_detail": "", "device": "cuda", "device_name": "NVIDIA H200",
                       "dtype": "bfloat16", "torch": "x", "threads": 1, "repeats": 1, "warmup": 1,
                       "decode_prompt": 4, "decode_tokens": 4, "memory_measure": "m", "peak_flops": 1e15,
                       "peak_flops_source": "test", "configs": ["lora-8", "difflora-64"]},
              "train": {"8192": {"lora-8": step(1.0, 100.0), "difflora-64": step(1.1, 200.0)}},
              "decode": {}}
    rows = {r["config"]: r for r in training_rows(record)}
    assert rows["lora-8"]["mfu"] == pytest.approx(step_flops(SHAPES["tiny"], "lora-8", 8192).total / 1.0 / 1e15)
    assert rows["difflora-64"]["mem_ok"] is False  # 2.0x LoRA at 8192 tokens: checked beyond 4096 too
    text = format_tables(record)
    assert "peak memory 0/1" in text and "%" in text.splitlines()[5]


def test_time_budget_skips_phases_and_still_reports(tmp_path):
    import run
    from report import format_tables, save

    args = run.parse_args(["--quick", "--threads", "1", "--configs", "lora-8", "difflora-64", "--no-memory",
                           "--compiled-decode", "--compile-backend", "eager", "--time-budget", "1e-9"])
    record = run.run(args)
    assert record["train"] == {} and record["decode"] == {}
    assert all(m["error"] == "skipped (time budget)" for m in record["decode_compiled"]["1"].values())
    text = format_tables(record)
    assert "skipped: training step at 64 tokens" in text and "skipped (time budget)" in text
    assert "compiled decoding 0/0" in text  # skipped rows are not counted as misses
    json_path, png = save(record, tmp_path)  # the plot copes with no training row
    assert json_path.is_file() and png.stat().st_size > 0


def test_models_are_built_on_the_device_in_the_dtype():
    """No float32 CPU copy first: on the meta device nothing can be made elsewhere and then moved."""
    import torch
    from flops import SHAPES
    from setups import build_base

    model = build_base(SHAPES["llama-1b"], "meta", torch.bfloat16, 16384)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.bfloat16)}
    assert torch.get_default_dtype() == torch.float32
