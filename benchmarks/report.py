"""The printed tables, the JSON record and the plot of one benchmark run."""

from __future__ import annotations

import json
from pathlib import Path

from flops import SHAPES, flop_bound, step_flops

REFERENCE = "lora-8"
STEP_TOLERANCE = 0.10  # measured DiffLoRA/LoRA step-time ratio at most 10% above its FLOP bound
MEMORY_LIMIT = 1.5  # DiffLoRA peak memory at most 1.5x LoRA's, at 4096 tokens and longer
MEMORY_TARGET_TOKENS = 4096
DECODE_MIN = 0.8  # eager DynamicCache decoding: DiffLoRA at least 0.8x LoRA's tokens per second
COMPILED_DECODE_MIN = 0.9  # compiled static-cache decoding: DiffLoRA at least 0.9x LoRA's (issue 26)
SKIPPED = "skipped (time budget)"  # timing.SKIPPED (report.py imports no torch)


def is_difflora(name: str) -> bool:
    return name not in ("base", REFERENCE)


def configs(results: dict) -> list[str]:
    """The run's configurations, in order (records written before meta.configs: the decode table's)."""
    if "configs" in results["meta"]:
        return list(results["meta"]["configs"])
    decode = results.get("decode", {})
    first = next(iter(decode.values()), {})
    return list(first) if isinstance(first, dict) else list(decode)


def _eager_decode(results: dict) -> dict[str, dict[str, float]]:
    """{batch: {config: tok/s}}; records from before --decode-batch held {config: tok/s} at batch 1."""
    decode = results.get("decode", {})
    if decode and not isinstance(next(iter(decode.values())), dict):
        return {"1": decode}
    return decode


def training_rows(results: dict) -> list[dict]:
    """One row per (length, configuration) with every derived figure and its target verdict."""
    shape = SHAPES[results["meta"]["shape"]]
    peak = results["meta"].get("peak_flops")
    rows = []
    for tokens_key, per_config in results["train"].items():
        tokens = int(tokens_key)
        ref = per_config[REFERENCE]
        for name, m in per_config.items():
            row = {"tokens": tokens, "config": name, "step_ms": 1000 * m["step_s"], "peak_mib": m.get("peak_mib")}
            runs = m.get("step_s_all") or [m["step_s"]]
            row["spread"] = (max(runs) - min(runs)) / m["step_s"]  # noise indicator: (max - min) / median
            row["time_ratio"] = m["step_s"] / ref["step_s"]
            row["bound"] = flop_bound(shape, name, tokens, REFERENCE)
            row["time_ok"] = row["time_ratio"] <= (1 + STEP_TOLERANCE) * row["bound"] if is_difflora(name) else None
            if row["peak_mib"] is not None and ref.get("peak_mib"):
                row["mem_ratio"] = row["peak_mib"] / ref["peak_mib"]
            else:
                row["mem_ratio"] = None
            checked = is_difflora(name) and tokens >= MEMORY_TARGET_TOKENS and row["mem_ratio"] is not None
            row["mem_ok"] = row["mem_ratio"] <= MEMORY_LIMIT if checked else None
            row["tflops"] = step_flops(shape, name, tokens).total / m["step_s"] / 1e12  # model TFLOP/s achieved
            row["mfu"] = row["tflops"] * 1e12 / peak if peak else None
            rows.append(row)
    return rows


def decode_rows(results: dict, batch: str | None = None) -> list[dict]:
    """Eager DynamicCache decoding at one batch size (default: the first measured)."""
    decode = _eager_decode(results)
    if not decode:
        return []
    rates = decode[batch if batch is not None else next(iter(decode))]
    rows = []
    for name, rate in rates.items():
        ratio = rate / rates[REFERENCE]
        rows.append({"config": name, "tok_s": rate, "ratio": ratio,
                     "ok": ratio >= DECODE_MIN if is_difflora(name) else None})
    return rows


def compiled_rows(results: dict, batch: str) -> list[dict]:
    """Compiled static-cache decoding at one batch size: tok/s, ratio to LoRA, verdict or why none."""
    per_config = results["decode_compiled"][batch]
    ref = per_config.get(REFERENCE, {}).get("tok_s")
    rows = []
    for name, m in per_config.items():
        ratio = m["tok_s"] / ref if m["tok_s"] is not None and ref else None
        if m.get("error"):
            status = m["error"]
        elif is_difflora(name) and ratio is not None:
            status = _verdict(ratio >= COMPILED_DECODE_MIN)
        else:
            status = ""
        if not m.get("error") and (m.get("graphs") or 0) > 1:
            status = (status + " " if status else "") + f"({m['graphs']} graphs: graph breaks)"
        if not is_difflora(name) or m.get("error") == SKIPPED or not ref:
            ok = None  # not a DiffLoRA row, not measured, or nothing to compare with
        else:
            ok = ratio is not None and ratio >= COMPILED_DECODE_MIN  # its own failure is a miss
        rows.append({"config": name, "tok_s": m["tok_s"], "ratio": ratio, "status": status, "ok": ok,
                     "compile_s": m.get("compile_s"), "graphs": m.get("graphs"), "graph_breaks": m.get("graph_breaks")})
    return rows


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISS")


def _num(value, fmt: str, width: int) -> str:
    return f"{'-' if value is None else format(value, fmt):>{width}}"


def format_tables(results: dict) -> str:
    meta = results["meta"]
    lines = [
        f"difflora benchmark: shape {meta['shape']} {meta['shape_detail']}",
        f"device {meta['device']} ({meta['device_name']}), dtype {meta['dtype']}, torch {meta['torch']}, "
        f"{meta['threads']} threads, batch 1; median of {meta['repeats']} interleaved steps after "
        f"{meta['warmup']} warm-up",
        "",
        "Training step (forward + backward + AdamW). xLoRA = ratio to lora-8; bound = FLOP ratio to lora-8 "
        f"(benchmarks/flops.py); time target: xLoRA <= {1 + STEP_TOLERANCE:.2f} x bound; memory target: "
        f"xLoRA <= {MEMORY_LIMIT} at {MEMORY_TARGET_TOKENS} tokens and longer. Peak MiB = {meta['memory_measure']}. "
        "spread = (slowest - fastest) / median of the timed steps. MFU = the step's FLOPs (benchmarks/flops.py) / "
        f"step time / peak dense FLOP/s ({meta.get('peak_flops_source', 'no peak known')}).",
        f"{'tokens':>6}  {'config':<18} {'step ms':>9} {'spread':>6} {'xLoRA':>6} {'bound':>6}"
        f" {'x/bound':>7} {'time':>5}"
        f" {'peak MiB':>9} {'xLoRA':>6} {'mem':>5} {'TFLOP/s':>8} {'MFU':>6}",
    ]
    for row in training_rows(results):
        peak = "" if row["peak_mib"] is None else f"{row['peak_mib']:9.1f}"
        mem_ratio = "" if row["mem_ratio"] is None else f"{row['mem_ratio']:6.2f}"
        lines.append(
            f"{row['tokens']:>6}  {row['config']:<18} {row['step_ms']:9.1f} {row['spread']:6.0%} "
            f"{row['time_ratio']:6.3f} "
            f"{row['bound']:6.3f} {row['time_ratio'] / row['bound']:7.3f} {_verdict(row['time_ok']):>5}"
            f" {peak:>9} {mem_ratio:>6} {_verdict(row['mem_ok']):>5} {row['tflops']:8.3g} {_num(row['mfu'], '.1%', 6)}"
        )
    if meta.get("peak_flops") is None:
        lines.append(f"MFU '-': {meta.get('peak_flops_source', 'no peak FLOP/s known')}")
    for batch in _eager_decode(results):
        lines += ["", f"Decoding with the KV cache (eager, DynamicCache; greedy, batch {batch}, prompt "
                      f"{meta['decode_prompt']} tokens, {meta['decode_tokens']} new tokens; tok/s counts every "
                      f"sequence of the batch; target: xLoRA >= {DECODE_MIN})",
                  f"{'config':<18} {'tok/s':>8} {'xLoRA':>6} {'target':>6}"]
        for row in decode_rows(results, batch):
            lines.append(f"{row['config']:<18} {row['tok_s']:8.1f} {row['ratio']:6.3f} {_verdict(row['ok']):>6}")
    compiled = results.get("decode_compiled") or {}
    if compiled:
        info = meta.get("compiled_decode", {})
        recompile_limit_hit = ("fail_on_recompile_limit_hit on" if info.get("fail_on_recompile_limit_hit", True)
                               else "this torch has no fail_on_recompile_limit_hit: "
                                    "a fallback to eager shows only as graphs > 1")
        lines += ["", f"Compiled decoding: generate(cache_implementation=\"static\") with transformers' torch.compile "
                      f"(backend {info.get('backend', '?')}, mode {info.get('mode', '?')}); "
                      "one configuration at a time "
                      "after torch._dynamo.reset(), warm-up includes compiling (compile s); "
                      f"{recompile_limit_hit}"
                      f" (recompile limit {info.get('recompile_limit', '?')}); "
                      f"target: xLoRA >= {COMPILED_DECODE_MIN}. graphs = graphs "
                      "Dynamo made (1 = one graph for the whole forward)."]
        for batch in compiled:
            lines += [f"batch {batch}, prompt {meta['decode_prompt']} tokens, {meta['decode_tokens']} new tokens:",
                      f"{'config':<18} {'tok/s':>9} {'xLoRA':>6} {'compile s':>9} {'graphs':>6}  status"]
            for row in compiled_rows(results, batch):
                lines.append(f"{row['config']:<18} {_num(row['tok_s'], '9.1f', 9)} {_num(row['ratio'], '6.3f', 6)} "
                             f"{_num(row['compile_s'], '9.1f', 9)} {_num(row['graphs'], 'd', 6)}  {row['status']}")
    elif meta.get("compiled_decode_off"):
        lines += ["", f"Compiled decoding: not measured ({meta['compiled_decode_off']})"]
    if meta["shape"] != "llama-1b":
        lines += ["", "FLOP bound (DiffLoRA / lora-8 step) on the Llama-3.2-1B shape, analytic only:"]
        presets = [n for n in configs(results) if is_difflora(n)]
        lines.append(f"{'tokens':>6}  " + " ".join(f"{n:>17}" for n in presets))
        for tokens in (512, 1024, 2048, 4096):
            lines.append(f"{tokens:>6}  " + " ".join(f"{flop_bound(SHAPES['llama-1b'], n, tokens):17.3f}"
                                                     for n in presets))
    for note in meta.get("skipped", []):
        lines.append(f"skipped: {note}")
    lines += ["", summary(results)]
    return "\n".join(lines)


def summary(results: dict) -> str:
    train = training_rows(results)
    time_checks = [r["time_ok"] for r in train if r["time_ok"] is not None]
    mem_checks = [r["mem_ok"] for r in train if r["mem_ok"] is not None]
    dec_checks = [r["ok"] for b in _eager_decode(results) for r in decode_rows(results, b) if r["ok"] is not None]
    compiled = results.get("decode_compiled") or {}
    comp_checks = [r["ok"] for b in compiled for r in compiled_rows(results, b) if r["ok"] is not None]
    mem = (f"{sum(mem_checks)}/{len(mem_checks)}" if mem_checks
           else f"not checked (no run at {MEMORY_TARGET_TOKENS} tokens or longer)")
    text = (f"targets met: step time {sum(time_checks)}/{len(time_checks)}, peak memory {mem}, "
            f"decoding {sum(dec_checks)}/{len(dec_checks)}")
    if compiled:
        text += f", compiled decoding {sum(comp_checks)}/{len(comp_checks)}"
        limit = sum(r["status"] == "recompile limit hit" for b in compiled for r in compiled_rows(results, b))
        if limit:
            text += f" ({limit} recompile limit hit)"
    return text


def save(results: dict, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{results['meta']['device']}-{results['meta']['shape']}"
    json_path = out / f"{tag}.json"
    json_path.write_text(json.dumps(results, indent=2))
    return [json_path, plot(results, out / f"{tag}.png")]


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = training_rows(results)
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, name in enumerate(configs(results)):
        mine = [r for r in rows if r["config"] == name]
        tokens = [r["tokens"] for r in mine]
        color = f"C{i}"
        if is_difflora(name):
            ax_time.plot(tokens, [r["time_ratio"] for r in mine], "o-", color=color, label=f"{name} measured")
            ax_time.plot(tokens, [r["bound"] for r in mine], "--", color=color, alpha=0.6)
        if all(r["peak_mib"] is not None for r in mine):
            ax_mem.plot(tokens, [r["peak_mib"] for r in mine], "o-", color=color, label=name)
    log = "log" if rows else "linear"  # no training row (all skipped by --time-budget): nothing to log-scale
    ax_time.set(xscale=log, xlabel="sequence length (tokens)", ylabel="step time / lora-8 step time",
                title="DiffLoRA step time vs LoRA (dashed: FLOP bound)")
    ax_mem.set(xscale=log, yscale=log if any(r["peak_mib"] for r in rows) else "linear",
               xlabel="sequence length (tokens)", ylabel="peak MiB above weights", title="Training-step peak memory")
    for ax in (ax_time, ax_mem):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{results['meta']['shape']} on {results['meta']['device_name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
