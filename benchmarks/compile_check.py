"""Does every DiffLoRA preset compile as one graph, and give the eager numbers? (issue 26, item 1)

For each preset (and PEFT LoRA as the reference), on a tiny Llama with random adapter weights
(zero-initialised B matrices would hide a wrong negative term):

  train   torch.compile(model, fullgraph=True): one training step's loss and every adapter gradient
          against eager; a second step with new values of the same shapes must reuse the graph.
  decode  a StaticCache prefilled eagerly, then greedy decoding steps through
          torch.compile(model, fullgraph=True): the logits of every step against eager; every step and
          every layer must reuse one graph.
  generate  transformers' own compiled generate(cache_implementation="static") (compile_config with
          _compile_all_devices, so it compiles on a CPU too) against eager generate: the same tokens,
          with torch._dynamo.config.fail_on_recompile_limit_hit on, on a model deeper than the recompile
          limit (a per-layer recompile, what a graph break inside the attention module causes without
          fullgraph, then fails instead of falling back to eager). train and decode use 2 layers: under
          fullgraph=True a graph break is an error at any depth.

fullgraph=True makes a graph break an error; "frames" counts the graphs Dynamo made (1 expected).
The default backend `eager` traces exactly as inductor would but generates no code (seconds per
preset); `--inductor PRESET ...` also runs those presets through inductor (slow on a CPU).

    python benchmarks/compile_check.py                          # CPU, every preset, backend eager
    python benchmarks/compile_check.py --device cuda --inductor difflora-64 difflora-shared-kv

Exit code 0 when every check passed, 1 otherwise; one line per (preset, backend, check).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

import torch  # noqa: E402
import torch._dynamo  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/timing.py

import difflora  # noqa: E402
from difflora.testing import static_cache_decode, tiny_model  # noqa: E402
from difflora.tuner.config import PRESETS  # noqa: E402

LORA = "lora-8"
PROMPT, MAX_CACHE, STEPS = 12, 24, 3


def build(name: str, layers: int, device: str) -> torch.nn.Module:
    with torch.device(device):
        base = tiny_model("llama", layers=layers)
    if name == LORA:
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    else:
        config = difflora.DiffLoRAConfig.from_preset(name, r=8, lora_alpha=16)
    model = get_peft_model(base, config).to(device)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # as tests/core/test_reference.randomize: B != 0, norms' weights near 1
                noise = torch.randn(p.shape, generator=generator) * 0.15
                p.copy_(noise + (1.0 if p.dim() == 1 and p.numel() > 16 else 0.0))
    return model


def batch(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts, two of them left-padded (as generate pads a batch)."""
    ids = torch.randint(3, 128, (3, PROMPT), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(3, PROMPT, dtype=torch.long)
    mask[1, :5], mask[2, :2] = 0, 0
    return ids.to(device), mask.to(device)


def check_train(model, device: str, backend: str, tol: float) -> str:
    model.train()
    ids, mask = batch(device)
    labels = ids.masked_fill(mask == 0, -100)
    eager = model(input_ids=ids, attention_mask=mask, labels=labels)
    eager.loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    out = compiled(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    compiled(input_ids=ids.flip(0), attention_mask=mask.flip(0), labels=labels.flip(0))  # new values, same shapes
    grads = dict(model.named_parameters())
    loss_err = (out.loss - eager.loss).abs().item()
    grad_err = max(((grads[n].grad - g).abs().max() / g.abs().max().clamp(min=1e-12)).item()
                   for n, g in expected.items())
    model.zero_grad(set_to_none=True)
    problems = []
    if counter.frame_count != 1:
        problems.append(f"{counter.frame_count} frames (graph break or recompile)")
    if loss_err > tol or grad_err > tol:
        problems.append(f"differs from eager (loss {loss_err:.1e}, grad {grad_err:.1e} relative; tolerance {tol:g})")
    return _line("train", counter.frame_count, f"loss |d| {loss_err:.1e}, grad rel {grad_err:.1e}", problems)


def check_decode(model, device: str, backend: str, tol: float) -> str:
    model.eval()
    hf = model.get_base_model()
    ids, mask = batch(device)
    eager = static_cache_decode(hf, hf, ids, mask, MAX_CACHE, STEPS)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(hf, backend=counter, fullgraph=True)
    compiled = static_cache_decode(hf, compiled, ids, mask, MAX_CACHE, STEPS)
    err = ((compiled - eager).abs().max() / eager.abs().max()).item()
    problems = []
    if counter.frame_count != 1:
        problems.append(f"{counter.frame_count} frames (graph break or recompile)")
    if err > tol:
        problems.append(f"logits differ from eager ({err:.1e} relative; tolerance {tol:g})")
    return _line("decode", counter.frame_count, f"logits rel {err:.1e}", problems)


def check_generate(model, device: str, backend: str) -> str:
    from timing import compile_config  # what benchmarks/run.py's compiled decoding passes
    from torch._dynamo.utils import counters

    model.eval()
    ids, mask = batch(device)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    expected = model.generate(**kwargs)
    config = compile_config(device, backend)
    counters.clear()
    strict = ({"fail_on_recompile_limit_hit": True}
              if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit") else {})
    with torch._dynamo.config.patch(**strict):  # (without it, a per-layer recompile shows as graphs > 1)
        got = model.generate(**kwargs, cache_implementation="static", compile_config=config)
    graphs = int(counters["stats"]["unique_graphs"])
    problems = []
    if graphs != 1:
        problems.append(f"{graphs} graphs")
    if not torch.equal(got, expected):
        problems.append("tokens differ from eager generate")
    return _line("generate", graphs, "tokens equal" if torch.equal(got, expected) else "tokens differ", problems)


def _line(check: str, frames: int, numbers: str, problems: list[str]) -> str:
    return f"{check:<9} frames {frames:>2}  {numbers:<40} {'FAIL: ' + '; '.join(problems) if problems else 'ok'}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--presets", nargs="+", default=[LORA, *PRESETS], help="default: lora-8 and every DiffLoRA preset")
    p.add_argument("--backend", default="eager", help="torch.compile backend of every check (default eager)")
    p.add_argument("--inductor", nargs="*", default=[], metavar="PRESET",
                   help="presets to check again with the inductor backend (default: none)")
    p.add_argument("--checks", nargs="+", default=["train", "decode", "generate"],
                   choices=["train", "decode", "generate"])
    p.add_argument("--layers", type=int, default=2, help="layers of the train and decode checks (default 2)")
    p.add_argument("--generate-layers", type=int, default=None,
                   help="layers of the generate check (default: Dynamo's recompile limit + 2)")
    p.add_argument("--tolerance", type=float, default=None, help="relative (default 1e-5 cpu, 1e-3 cuda)")
    args = p.parse_args(argv)
    deep = args.generate_layers or torch._dynamo.config.recompile_limit + 2
    tol = args.tolerance or (1e-3 if args.device.startswith("cuda") else 1e-5)
    unknown = [n for n in args.presets + args.inductor if n != LORA and n not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {', '.join(unknown)}: choose from {LORA}, {', '.join(PRESETS)}")
    print(f"compile check: torch {torch.__version__}, device {args.device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if args.device.startswith('cuda') else ''}, "
          f"{args.layers} layers "
          f"({deep} for generate), "
          f"float32, tolerance {tol:g}, recompile limit {torch._dynamo.config.recompile_limit}", flush=True)
    runs = [(name, args.backend) for name in args.presets] + [(name, "inductor") for name in args.inductor]
    failures = 0
    for name, backend in runs:
        models = {}
        for check in args.checks:
            torch._dynamo.reset()
            start = time.perf_counter()
            try:
                layers = deep if check == "generate" else args.layers
                if layers not in models:
                    models[layers] = build(name, layers, args.device)
                model = models[layers]
                if check == "train":
                    line = check_train(model, args.device, backend, tol)
                elif check == "decode":
                    line = check_decode(model, args.device, backend, tol)
                else:
                    line = check_generate(model, args.device, backend)
            except Exception as exc:  # a graph break under fullgraph=True lands here: report it, go on
                line = (f"{check:<9} FAIL: {type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}")
                if os.environ.get("COMPILE_CHECK_TRACEBACK"):
                    traceback.print_exc()
            failures += "FAIL" in line
            print(f"{name:<20} {backend:<9} {line}  ({time.perf_counter() - start:.1f} s)", flush=True)
        del models
    torch._dynamo.reset()
    print(f"compile check: {len(runs) * len(args.checks) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
