"""Shared keys (issue 13) side by side with LoRA and the paper's form, in one run:

  1. KV-cache bytes after a prompt (target: difflora-shared-kv = 1.00x the base model; own keys 1.5x),
  2. cached greedy decoding tokens/s at two prompt lengths (target: >= 0.95x LoRA),
  3. training-step time against its FLOP bound (target: measured/LoRA within 10% of the bound).

    python benchmarks/shared_kv.py                      # hidden-512, 512..4096 tokens, prompts 128 and 2048
    python benchmarks/shared_kv.py --quick              # tiny shape, seconds (smoke run)

Every timed figure interleaves the configurations (benchmarks/timing.py) and is a median of repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # raised inside PEFT, not ours

import torch  # noqa: E402
from flops import SHAPES, flop_bound  # noqa: E402
from setups import build, random_ids  # noqa: E402
from timing import decode_rates, step_times  # noqa: E402

REFERENCE = "lora-8"
CONFIGS = ("base", "lora-8", "difflora-64", "difflora-shared-kv")
DECODE_TARGET = 0.95
STEP_TOLERANCE = 0.10


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="hidden-512")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096], help="training-step lengths")
    p.add_argument("--decode-prompts", type=int, nargs="+", default=[128, 2048])
    p.add_argument("--decode-tokens", type=int, default=32, help="new tokens per generate call")
    p.add_argument("--cache-prompt", type=int, default=1024, help="prompt length of the cache-size figure")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the JSON record here")
    p.add_argument("--quick", action="store_true", help="tiny shape, short lengths, one repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.shape, args.lengths, args.decode_prompts, args.cache_prompt = "tiny", [64], [16, 32], 64
        args.decode_tokens, args.repeats = 4, 1
    if args.decode_tokens < 2 or args.repeats < 1 or min(args.lengths + args.decode_prompts) < 2:
        p.error("--decode-tokens and every length must be at least 2, --repeats at least 1")
    return args


def cache_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes of every key and value tensor the model's cache holds after a prefill of `ids`."""
    model.eval()
    with torch.no_grad():
        cache = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).past_key_values
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    shape = SHAPES[args.shape]
    max_positions = max(args.lengths + [args.cache_prompt, max(args.decode_prompts) + args.decode_tokens])
    setups = {name: build(name, shape, "cpu", torch.float32, max_positions) for name in CONFIGS}
    record = {"meta": dict(shape=args.shape, threads=args.threads, repeats=args.repeats, warmup=args.warmup,
                           decode_tokens=args.decode_tokens, torch=torch.__version__, load_before=os.getloadavg(),
                           trainable={n: s.trainable for n, s in setups.items()})}
    ids = random_ids(shape, args.cache_prompt, "cpu")
    record["cache_bytes"] = {name: cache_bytes(s.model, ids) for name, s in setups.items()}
    timed = {n: s for n, s in setups.items() if n != "base"}  # full fine-tuning is not what is compared here
    record["decode"] = {str(prompt): decode_rates(timed, shape, prompt, args.decode_tokens, "cpu", args.warmup,
                                                  args.repeats) for prompt in args.decode_prompts}
    record["train"] = {}
    for tokens in args.lengths:
        seconds = step_times(timed, shape, tokens, "cpu", args.warmup, args.repeats)
        record["train"][str(tokens)] = {n: {"median_s": statistics.median(s), "all_s": s} for n, s in seconds.items()}
    record["meta"]["load_after"] = os.getloadavg()
    return record


def report(record: dict) -> str:
    shape = SHAPES[record["meta"]["shape"]]
    lines = [f"KV cache after a prompt ({record['meta']['shape']} shape):",
             "| config | bytes | / base |", "| --- | ---: | ---: |"]
    base = record["cache_bytes"]["base"]
    lines += [f"| {n} | {b:,} | {b / base:.2f}x |" for n, b in record["cache_bytes"].items()]
    lines += ["", "Cached greedy decoding (tokens/s, median):", "| prompt | " + " | ".join(
        f"{n} (/ LoRA)" for n in record["decode"][next(iter(record["decode"]))]) + " |"]
    lines.append("| --- |" + " ---: |" * len(record["decode"][next(iter(record["decode"]))]))
    for prompt, rates in record["decode"].items():
        ref = rates[REFERENCE]
        verdict = {n: "" if n in (REFERENCE, "difflora-64") else " ok" if r / ref >= DECODE_TARGET else " MISS"
                   for n, r in rates.items()}
        cells = [f"{r:.1f} ({r / ref:.2f}x{verdict[n]})" for n, r in rates.items()]
        lines.append(f"| {prompt} | " + " | ".join(cells) + " |")
    lines += ["", "Training step (median ms; ratio to LoRA; FLOP bound; verdict: ratio <= 1.10 x bound):",
              "| tokens | config | ms | / LoRA | bound | verdict | spread |",
              "| ---: | --- | ---: | ---: | ---: | --- | ---: |"]
    for tokens, per in record["train"].items():
        ref = per[REFERENCE]["median_s"]
        for name, m in per.items():
            ratio, bound = m["median_s"] / ref, flop_bound(shape, name, int(tokens), REFERENCE)
            verdict = "" if name == REFERENCE else ("ok" if ratio <= (1 + STEP_TOLERANCE) * bound else "MISS")
            spread = (max(m["all_s"]) - min(m["all_s"])) / m["median_s"]
            lines.append(f"| {tokens} | {name} | {1000 * m['median_s']:.0f} | {ratio:.3f} | {bound:.3f} | "
                         f"{verdict} | {spread:.0%} |")
    load = record["meta"]
    lines.append(f"\nload average before {'/'.join(f'{x:.2f}' for x in load['load_before'])}, "
                 f"after {'/'.join(f'{x:.2f}' for x in load['load_after'])} on {os.cpu_count()} cores")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    record = run(args)
    print(report(record))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
