"""Where a configuration's training step spends its time: torch.profiler over one step (after a
warm-up step), the top operators by self time, and the share of the attention kernels.

    python benchmarks/profile_step.py --config difflora-64 --tokens 4096
    python benchmarks/profile_step.py --config lora-8 --tokens 512 --rows 25
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

import torch  # noqa: E402
from flops import SHAPES, step_flops  # noqa: E402
from setups import CONFIGS, DTYPES, build, random_ids, train_step  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

ATTENTION_OPS = ("flash_attention", "scaled_dot_product")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=CONFIGS, required=True)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--shape", choices=sorted(SHAPES), default="hidden-512")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rows", type=int, default=15)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch")
    torch.set_num_threads(args.threads)
    shape = SHAPES[args.shape]
    dtype = DTYPES["bfloat16" if args.device == "cuda" else "float32"]
    setup = build(args.config, shape, args.device, dtype, args.tokens)
    ids = random_ids(shape, args.tokens, args.device)
    train_step(setup, ids)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities) as prof:
        train_step(setup, ids)
    events = prof.key_averages()
    sort_key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print(events.table(sort_by=sort_key, row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in events)
    attention = sum(e.self_cpu_time_total for e in events if any(k in e.key for k in ATTENTION_OPS))
    flops = step_flops(shape, args.config, args.tokens).components()
    attn_flops = flops.get("attention", 0) + flops.get("attention-2", 0)
    print(f"{args.config} @ {args.tokens} tokens: self CPU time {total / 1e6:.3f} s, attention kernels "
          f"{attention / 1e6:.3f} s ({100 * attention / total:.1f}%); attention is "
          f"{100 * attn_flops / sum(flops.values()):.1f}% of the step's FLOPs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
