"""Benchmark DiffLoRA against PEFT LoRA and full fine-tuning: training-step time, peak memory and
cached decoding speed, all configurations measured side by side in one run.

    python benchmarks/run.py                                  # hidden-512 shape, 512..4096 tokens
    python benchmarks/run.py --lengths 512 1024 --repeats 5
    python benchmarks/run.py --device cuda --shape llama-1b   # on a GPU
    python benchmarks/run.py --quick                          # tiny shape, < 60 s on 2 cores

Prints the tables (with the FLOP bound of benchmarks/flops.py beside each DiffLoRA/LoRA ratio and
the verdict on each target) and writes OUT/DEVICE-SHAPE.json and .png.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # raised inside PEFT, not ours

import report  # noqa: E402
import torch  # noqa: E402
from flops import SHAPES  # noqa: E402
from memory import peak_memory  # noqa: E402
from setups import CONFIGS, DTYPES, build  # noqa: E402
from timing import decode_rates, step_times  # noqa: E402
from tqdm import tqdm  # noqa: E402

QUICK = dict(shape="tiny", lengths=[64, 128], warmup=1, repeats=2, decode_prompt=16, decode_tokens=8, memory_steps=1)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default=None, help="model shape (default hidden-512)")
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths (default 512 1024 2048 4096)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (fixed for the run)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), help=f"subset of {', '.join(CONFIGS)}")
    p.add_argument("--warmup", type=int, default=None, help="uncounted runs per configuration (default 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per configuration; median (default 3)")
    p.add_argument("--decode-prompt", type=int, default=None, help="prompt tokens before decoding (default 128)")
    p.add_argument("--decode-tokens", type=int, default=None, help="new tokens per generate call (default 64)")
    p.add_argument("--memory-steps", type=int, default=None, help="training steps per peak-memory measurement (default 2)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON record and the plot")
    p.add_argument("--quick", action="store_true", help="tiny shape, short lengths, few repeats (smoke run)")
    args = p.parse_args(argv)
    defaults = dict(shape="hidden-512", lengths=[512, 1024, 2048, 4096], warmup=1, repeats=3, decode_prompt=128,
                    decode_tokens=64, memory_steps=2)
    for key, value in (QUICK if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    _validate(p, args)
    return args


def _validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch; use --device cpu")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)}: choose from {', '.join(CONFIGS)}")
    if report.REFERENCE not in args.configs:
        p.error(f"--configs must include {report.REFERENCE}: every ratio is taken against it")
    args.configs = [c for c in CONFIGS if c in args.configs]  # fixed order
    if any(n < 2 for n in args.lengths):
        p.error("--lengths must be at least 2 tokens")
    for name in ("threads", "repeats", "decode_tokens", "decode_prompt", "memory_steps"):
        if getattr(args, name) < 1 or (name == "decode_tokens" and args.decode_tokens < 2):
            p.error(f"--{name.replace('_', '-')} must be at least {2 if name == 'decode_tokens' else 1}")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "cpu"
    return f"{model}, {os.cpu_count()} cores"


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    shape = SHAPES[args.shape]
    max_positions = max(args.lengths) + args.decode_prompt + args.decode_tokens
    results = {"meta": dict(
        shape=args.shape, shape_detail=str(shape).replace("ModelShape", ""), device=args.device,
        device_name=device_name(args.device), dtype=args.dtype, torch=torch.__version__, threads=args.threads,
        warmup=args.warmup, repeats=args.repeats, decode_prompt=args.decode_prompt, decode_tokens=args.decode_tokens,
        memory_measure=("CUDA max_memory_allocated" if args.device == "cuda" else "peak RSS")
        + " above the built model, fresh process per configuration",
        load_before=os.getloadavg(),
    ), "train": {str(n): {c: {} for c in args.configs} for n in sorted(args.lengths)}}

    if not args.no_memory:  # first, while this process has run nothing parallel (the workers fork from it)
        for name in tqdm(args.configs, desc="peak memory", file=sys.stderr):
            peaks = peak_memory(name, args.shape, args.lengths, args.device, args.dtype, args.threads,
                                args.memory_steps)
            for tokens, mib in peaks.items():
                results["train"][str(tokens)][name]["peak_mib"] = mib

    setups = {name: build(name, shape, args.device, DTYPES[args.dtype], max_positions) for name in args.configs}
    results["meta"]["trainable"] = {name: s.trainable for name, s in setups.items()}
    per_round = len(setups) * (args.warmup + args.repeats)
    with tqdm(total=per_round * (len(args.lengths) + 1), desc="timing", file=sys.stderr) as progress:
        for tokens in sorted(args.lengths):
            progress.set_postfix_str(f"{tokens} tokens")
            for name, seconds in step_times(setups, shape, tokens, args.device, args.warmup, args.repeats,
                                            progress).items():
                results["train"][str(tokens)][name].update(step_s=statistics.median(seconds), step_s_all=seconds)
        progress.set_postfix_str("decoding")
        results["decode"] = decode_rates(setups, shape, args.decode_prompt, args.decode_tokens, args.device,
                                         args.warmup, args.repeats, progress)
    results["meta"]["load_after"] = os.getloadavg()
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(report.format_tables(results))
    load = results["meta"]
    print(f"load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load['load_before'])}, "
          f"after: {'/'.join(f'{x:.2f}' for x in load['load_after'])} on {os.cpu_count()} cores")
    if args.out:
        for path in report.save(results, args.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
