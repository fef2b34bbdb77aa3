"""Benchmark DiffLoRA against PEFT LoRA and full fine-tuning: training-step time, peak memory and
cached decoding speed (eager, and compiled with a static cache), all configurations measured side by
side in one run.

    python benchmarks/run.py                                  # hidden-512 shape, 512..4096 tokens (CPU)
    python benchmarks/run.py --lengths 512 1024 --repeats 5
    python benchmarks/run.py --device cuda --shape llama-1b   # on a GPU: 2048 8192 16384 tokens, bf16,
                                                              # decoding at batch 1 and 32, eager and compiled
    python benchmarks/run.py --quick                          # tiny shape, < 60 s on 2 cores
    python benchmarks/run.py --quick --compiled-decode --compile-backend eager --configs lora-8 difflora-64

Models are built once per configuration, directly on the device in the target dtype. Peak memory:
forked processes on CPU (the resident set is the process's), in-process on CUDA. Prints the tables
(with the FLOP bound of benchmarks/flops.py beside each DiffLoRA/LoRA ratio, the MFU on a GPU whose
peak is known, and the verdict on each target) and writes OUT/DEVICE-SHAPE.json and .png.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # raised inside PEFT, not ours

import report  # noqa: E402
import torch  # noqa: E402
import torch._dynamo  # noqa: E402
from flops import SHAPES  # noqa: E402
from hardware import peak_flops  # noqa: E402
from memory import peak_memory, peak_memory_in_process  # noqa: E402
from setups import CONFIGS, DTYPES, build, synchronize  # noqa: E402
from timing import SKIPPED, compiled_decode_rates, decode_rates, step_times  # noqa: E402
from tqdm import tqdm  # noqa: E402

QUICK = dict(shape="tiny", lengths=[64, 128], warmup=1, repeats=2, decode_prompt=16, decode_tokens=8, memory_steps=1,
             decode_batch=[1])
DEFAULTS = dict(shape="hidden-512", lengths=[512, 1024, 2048, 4096], warmup=1, repeats=3, decode_prompt=128,
                decode_tokens=64, memory_steps=2, decode_batch=[1])
CUDA_DEFAULTS = dict(DEFAULTS, lengths=[2048, 8192, 16384], decode_batch=[1, 32])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default=None, help="model shape (default hidden-512)")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="sequence lengths (default 512 1024 2048 4096 on cpu, 2048 8192 16384 on cuda)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (fixed for the run)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), help=f"subset of {', '.join(CONFIGS)}")
    p.add_argument("--warmup", type=int, default=None, help="uncounted runs per configuration (default 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per configuration; median (default 3)")
    p.add_argument("--decode-prompt", type=int, default=None, help="prompt tokens before decoding (default 128)")
    p.add_argument("--decode-tokens", type=int, default=None, help="new tokens per generate call (default 64)")
    p.add_argument("--decode-batch", type=int, nargs="+", default=None,
                   help="decoding batch sizes, eager and compiled (default 1 on cpu, 1 32 on cuda)")
    p.add_argument("--compiled-decode", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure generate(cache_implementation='static') compiled by transformers (default: "
                        "on, except --quick on cpu, where compiling every configuration takes minutes)")
    p.add_argument("--compiled-configs", nargs="+", default=None,
                   help="configurations of the compiled decoding (default: every one of --configs; must include "
                        "lora-8)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compiled decoding (default inductor; 'eager' traces the "
                        "graphs and checks recompiles without generating code: fast, but no speed figure)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak dense TFLOP/s for --dtype, for the MFU column (default: "
                        "benchmarks/hardware.py's table by GPU name)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds: phases (lengths, decoding, each compiled configuration) that would start after "
                        "this are skipped and reported as skipped, so the tables still print (default: none)")
    p.add_argument("--memory-steps", type=int, default=None,
                   help="training steps per peak-memory measurement (default 2)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON record and the plot")
    p.add_argument("--quick", action="store_true", help="tiny shape, short lengths, few repeats (smoke run)")
    args = p.parse_args(argv)
    _resolve_device(p, args)
    defaults = QUICK if args.quick else CUDA_DEFAULTS if args.device == "cuda" else DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    _validate(p, args)
    return args


def _resolve_device(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch; use --device cpu")


def _validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    unknown = [c for c in args.configs + (args.compiled_configs or []) if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)}: choose from {', '.join(CONFIGS)}")
    if report.REFERENCE not in args.configs:
        p.error(f"--configs must include {report.REFERENCE}: every ratio is taken against it")
    args.configs = [c for c in CONFIGS if c in args.configs]  # fixed order
    if args.compiled_configs is not None:
        if report.REFERENCE not in args.compiled_configs:
            p.error(f"--compiled-configs must include {report.REFERENCE}: every ratio is taken against it")
        outside = [c for c in args.compiled_configs if c not in args.configs]
        if outside:
            p.error(f"--compiled-configs {', '.join(outside)} not in --configs")
        args.compiled_configs = [c for c in args.configs if c in args.compiled_configs]
    else:
        args.compiled_configs = list(args.configs)
    if args.compiled_decode is None:
        args.compiled_decode = not (args.quick and args.device == "cpu")
        args.compiled_decode_off = None if args.compiled_decode else "--quick on cpu; --compiled-decode measures it"
    else:
        args.compiled_decode_off = None if args.compiled_decode else "--no-compiled-decode"
    if any(n < 2 for n in args.lengths):
        p.error("--lengths must be at least 2 tokens")
    if any(b < 1 for b in args.decode_batch):
        p.error("--decode-batch must be at least 1")
    args.decode_batch = sorted(set(args.decode_batch))
    for name in ("threads", "repeats", "decode_tokens", "decode_prompt", "memory_steps"):
        if getattr(args, name) < 1 or (name == "decode_tokens" and args.decode_tokens < 2):
            p.error(f"--{name.replace('_', '-')} must be at least {2 if name == 'decode_tokens' else 1}")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        p.error("--peak-tflops must be > 0")
    if args.time_budget is not None and args.time_budget <= 0:
        p.error("--time-budget must be > 0 seconds")


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "cpu"
    return f"{model}, {os.cpu_count()} cores"


def _prime_cuda(device: str, dtype: torch.dtype) -> None:
    """Create the CUDA context and cuBLAS's workspace before anything is measured, so that the first
    configuration's peak memory does not carry them."""
    if device == "cuda":
        x = torch.ones(64, 64, device=device, dtype=dtype, requires_grad=True)
        (x @ x).sum().backward()
        synchronize(device)


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    deadline = None if args.time_budget is None else start + args.time_budget
    torch.set_num_threads(args.threads)
    shape = SHAPES[args.shape]
    dtype = DTYPES[args.dtype]
    max_positions = max(args.lengths) + args.decode_prompt + args.decode_tokens
    name = device_name(args.device)
    if args.device == "cuda" or args.peak_tflops is not None:
        peak, peak_source = peak_flops(name, args.dtype, args.peak_tflops)
    else:
        peak, peak_source = None, "no peak FLOP/s for CPUs; pass --peak-tflops"
    cuda = args.device == "cuda"
    results = {"meta": dict(
        shape=args.shape, shape_detail=str(shape).replace("ModelShape", ""), device=args.device,
        device_name=name, dtype=args.dtype, torch=torch.__version__, threads=args.threads,
        warmup=args.warmup, repeats=args.repeats, decode_prompt=args.decode_prompt, decode_tokens=args.decode_tokens,
        decode_batch=args.decode_batch, configs=args.configs, peak_flops=peak, peak_flops_source=peak_source,
        memory_measure=("CUDA max_memory_allocated above memory_allocated before the configuration's first step, "
                        "in-process" if cuda else "peak RSS above the built model, fresh process per configuration"),
        load_before=os.getloadavg(), skipped=[],
    ), "train": {str(n): {c: {} for c in args.configs} for n in sorted(args.lengths)}}
    import transformers

    results["meta"]["transformers"] = transformers.__version__

    if not args.no_memory and not cuda:  # first, while this process has run nothing parallel (the workers fork from it)
        for config in tqdm(args.configs, desc="peak memory", file=sys.stderr):
            peaks = peak_memory(config, args.shape, args.lengths, args.device, args.dtype, args.threads,
                                args.memory_steps)
            for tokens, mib in peaks.items():
                results["train"][str(tokens)][config]["peak_mib"] = mib

    _prime_cuda(args.device, dtype)
    build_start = time.perf_counter()
    setups = {config: build(config, shape, args.device, dtype, max_positions) for config in args.configs}
    synchronize(args.device)
    results["meta"]["build_s"] = time.perf_counter() - build_start
    results["meta"]["trainable"] = {config: s.trainable for config, s in setups.items()}

    if not args.no_memory and cuda:
        for config, setup in tqdm(setups.items(), desc="peak memory", file=sys.stderr):
            for tokens, mib in peak_memory_in_process(setup, shape, args.lengths, args.device,
                                                      args.memory_steps).items():
                results["train"][str(tokens)][config]["peak_mib"] = mib

    per_round = len(setups) * (args.warmup + args.repeats)
    with tqdm(total=per_round * (len(args.lengths) + len(args.decode_batch)), desc="timing",
              file=sys.stderr) as progress:
        for tokens in sorted(args.lengths):
            if _past(deadline):
                results["meta"]["skipped"].append(f"training step at {tokens} tokens ({SKIPPED})")
                del results["train"][str(tokens)]
                progress.update(per_round)
                continue
            progress.set_postfix_str(f"{tokens} tokens")
            for config, seconds in step_times(setups, shape, tokens, args.device, args.warmup, args.repeats,
                                              progress).items():
                results["train"][str(tokens)][config].update(step_s=statistics.median(seconds), step_s_all=seconds)
        results["decode"] = {}
        for batch in args.decode_batch:
            if _past(deadline):
                results["meta"]["skipped"].append(f"eager decoding at batch {batch} ({SKIPPED})")
                progress.update(per_round)
                continue
            progress.set_postfix_str(f"decoding, batch {batch}")
            results["decode"][str(batch)] = decode_rates(setups, shape, args.decode_prompt, args.decode_tokens,
                                                         args.device, args.warmup, args.repeats, progress, batch=batch)

    if args.compiled_decode:
        compiled = {config: setups[config] for config in args.compiled_configs}
        results["meta"]["compiled_decode"] = dict(
            backend=args.compile_backend, configs=args.compiled_configs,
            mode="reduce-overhead" if cuda and args.compile_backend == "inductor" else "default",
            fail_on_recompile_limit_hit=hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"),
            recompile_limit=getattr(torch._dynamo.config, "recompile_limit", None))
        results["decode_compiled"] = {}
        total = len(compiled) * (max(args.warmup, 1) + args.repeats) * len(args.decode_batch)
        with tqdm(total=total, desc="compiled decoding", file=sys.stderr) as progress:
            for batch in args.decode_batch:
                progress.set_postfix_str(f"batch {batch}")
                results["decode_compiled"][str(batch)] = compiled_decode_rates(
                    compiled, shape, args.decode_prompt, args.decode_tokens, args.device, args.warmup, args.repeats,
                    batch=batch, backend=args.compile_backend, deadline=deadline, progress=progress)
    else:
        results["meta"]["compiled_decode_off"] = args.compiled_decode_off
    results["meta"]["load_after"] = os.getloadavg()
    results["meta"]["wall_s"] = time.perf_counter() - start
    return results


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(report.format_tables(results))
    load = results["meta"]
    print(f"load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load['load_before'])}, "
          f"after: {'/'.join(f'{x:.2f}' for x in load['load_after'])} on {os.cpu_count()} cores; "
          f"models built in {load['build_s']:.1f} s, whole run {load['wall_s']:.0f} s")
    if args.out:
        for path in report.save(results, args.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
