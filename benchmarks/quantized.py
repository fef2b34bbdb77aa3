"""DiffLoRA training on a quantized base (QLoRA) beside float32 and bfloat16 bases, in one run:
memory of the loaded model, peak memory of training, and the step time, per base.

    python benchmarks/quantized.py                    # hidden 768 x 6 layers, 256 tokens, 2 rounds of 4 steps
    python benchmarks/quantized.py --quick            # tiny shape, seconds (smoke run)

Each base runs in its own fresh process (so one base's freed memory is not another's), and the
rounds alternate the bases (float32, bfloat16, nf4, ..., float32, ...) so that a change in the
machine's load falls on every base alike. Per process, on CPU:
  weights MiB   bytes of the base model's tensors (transformers' get_memory_footprint: packed 4-bit
                or int8 storage for the quantized layers, the rest at its dtype);
  peak MiB      the process's peak resident set over the training steps, minus its resident set
                before loading (weights, activations, gradients, AdamW state, temporaries); the peak
                counter is reset after loading (/proc/self/clear_refs), so loading's own transient
                (a quantized load first materializes float weights) is not counted;
  step ms       median over the timed steps of every round (forward, backward, AdamW), after one warm-up.
Bases: float32; bfloat16 (all weights); nf4 = 4-bit NormalFloat with double quantization, computing
in float32; qlora = nf4 computing in bfloat16 with a bfloat16 load, prepared with peft's
prepare_model_for_kbit_training (norms and embeddings back to float32) as QLoRA does; int8 = 8-bit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # raised inside PEFT, not ours

BASES = ("float32", "bfloat16", "nf4", "qlora", "int8")
SHAPE = dict(hidden_size=768, layers=6, heads=12, kv_heads=4, intermediate_size=2048, vocab_size=8192)
QUICK_SHAPE = dict(hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=128, vocab_size=256)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bases", nargs="+", choices=BASES, default=list(BASES))
    p.add_argument("--method", default="difflora-64", help="a DiffLoRA preset")
    p.add_argument("--tokens", type=int, default=256, help="tokens per training sequence (batch of one)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per process, after one warm-up")
    p.add_argument("--rounds", type=int, default=2, help="processes per base, alternating the bases")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the JSON record here")
    p.add_argument("--quick", action="store_true", help="tiny shape, 32 tokens, one round of 2 steps")
    p.add_argument("--worker", nargs=2, metavar=("BASE", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.tokens, args.steps, args.rounds = 32, 2, 1
    if args.tokens < 2 or args.steps < 1 or args.rounds < 1:
        p.error("--tokens must be at least 2, --steps and --rounds at least 1")
    return args


def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def reset_peak() -> None:
    """Set the peak resident set (VmHWM) back to the current one (Linux; needs no privilege for oneself)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def load(base: str, checkpoint: str):
    """The base as a user loads it, DiffLoRA-ready (difflora.loading.load_base does the same)."""
    import torch
    from transformers import AutoModelForCausalLM

    from difflora.quantization import bitsandbytes_config, parse_quantization, prepare_for_training

    if base in ("float32", "bfloat16"):
        return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, base))
    setting = parse_quantization({"nf4": "nf4", "qlora": "nf4", "int8": "int8"}[base])
    dtype = torch.bfloat16 if base == "qlora" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype, device_map={"": "cpu"},
                                                 quantization_config=bitsandbytes_config(setting, dtype))
    return prepare_for_training(model) if base == "qlora" else model


def worker(base: str, checkpoint: str, args) -> dict:
    import torch
    from peft import get_peft_model

    import difflora

    torch.set_num_threads(args.threads)
    before = rss_mib()
    base_model = load(base, checkpoint)
    weights = base_model.get_memory_footprint() / 2**20
    model = get_peft_model(base_model, difflora.DiffLoRAConfig.from_preset(args.method)).train()
    reset_peak()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(3, model.config.vocab_size, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    times = []
    for step in range(args.steps + 1):
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # the first is a warm-up
            times.append(1000 * (time.perf_counter() - started))
    return {"base": base, "weights_mib": weights, "peak_mib": rss_mib("VmHWM") - before,
            "step_ms": times, "trainable": sum(p.numel() for p in params), "loss": loss.item()}


def build_checkpoint(folder: str, quick: bool) -> None:
    from difflora.testing import tiny_model

    tiny_model("llama", **(QUICK_SHAPE if quick else SHAPE)).save_pretrained(folder)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return 0
    runs: dict[str, list[dict]] = {base: [] for base in args.bases}
    with tempfile.TemporaryDirectory() as folder:
        build_checkpoint(folder, args.quick)
        passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quick"]
        for _ in range(args.rounds):
            for base in args.bases:
                command = [sys.executable, __file__, *passed, "--worker", base, folder]
                if args.quick:
                    command.append("--quick")
                # large freed blocks go back to the system, so the peak is live memory, not glibc's reserve
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MALLOC_MMAP_THRESHOLD_": "65536"}
                done = subprocess.run(command, capture_output=True, text=True, env=env)
                if done.returncode:
                    print(done.stderr[-2000:], file=sys.stderr)
                    return 1
                runs[base].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'base':10} {'weights MiB':>12} {'peak MiB':>10} {'step ms':>9} {'vs fp32':>8}  trainable")
    reference = None
    rows = []
    for base, results in runs.items():
        step = statistics.median(t for r in results for t in r["step_ms"])
        reference = reference or step
        row = {"base": base, "weights_mib": statistics.median(r["weights_mib"] for r in results),
               "peak_mib": statistics.median(r["peak_mib"] for r in results), "step_ms": step,
               "trainable": results[0]["trainable"], "runs": results}
        rows.append(row)
        print(f"{base:10} {row['weights_mib']:12.1f} {row['peak_mib']:10.1f} {step:9.1f} {step / reference:8.2f}  "
              f"{row['trainable']:,}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "worker"}, "rows": rows,
                       "load_average": os.getloadavg()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
