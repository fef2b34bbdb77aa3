"""runs/demo/report.md and report.html: what was run, models x metrics, the plots, and the paper's
findings beside what the demo found, with a plain sentence wherever they disagree."""

from __future__ import annotations

import json
import os

from ..evaluation.plots import _save, plt
from ..evaluation.report import PAPER_FINDINGS, Report, add_attention, add_degeneration, add_icl, add_nih, fmt
from .plan import DemoPlan


def _history(adapter_dir: str) -> list[dict]:
    path = os.path.join(adapter_dir, "log_history.json")
    return json.load(open(path)) if os.path.isfile(path) else []


def plot_losses(adapters: dict[str, str], path: str) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, folder in adapters.items():
        points = [(h["step"], h["loss"]) for h in _history(folder) if "loss" in h]
        if points:
            ax.plot(*zip(*points), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title("fine-tuning loss, identical data, steps and seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_lambdas(adapters: dict[str, str], path: str) -> str | None:
    series = {}
    for name, folder in adapters.items():
        for h in _history(folder):
            for key, value in h.items():
                if key.startswith("lambda/") and "loss" in h:
                    series.setdefault(name, {}).setdefault(int(key.split("/")[1]), []).append((h["step"], value))
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 3.4), sharey=True, squeeze=False)
    for ax, (name, layers) in zip(axes[0], series.items()):
        for layer, points in sorted(layers.items()):
            ax.plot(*zip(*points), label=f"layer {layer}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("lambda")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle("lambda per layer over fine-tuning")
    return _save(fig, path)


def _metric_rows(results: dict, plan: DemoPlan) -> tuple[list[str], list[list[str]]]:
    labels = list(results.get("loss") or results.get("nih") or {})
    header = ["model"]
    columns = []
    if "nih" in results:
        lengths = [str(n) for n in plan.nih_lengths]
        for task in plan.nih_tasks:
            for n in (lengths[0], lengths[-1]):
                header.append(f"{task.upper()}@{n}")
                columns.append(lambda r, lab, t=task, n=n: fmt(r["nih"][lab][t][n]))
    if "icl" in results:
        top = str(max(plan.icl_shots))
        header.append(f"ICL@{top} shots")
        columns.append(lambda r, lab: fmt(r["icl"][lab][top]))
    if "degeneration" in results:
        header.append("degenerate rate")
        columns.append(lambda r, lab: fmt(r["degeneration"][lab]["rate"]))
    if "loss" in results:
        header.append("held-out loss")
        columns.append(lambda r, lab: fmt(r["loss"][lab]))
    return header, [[lab] + [c(results, lab) for c in columns] for lab in labels]


def _mean(d: dict) -> float:
    return d["mean"]


def _verdict(paper_direction: bool, a: float, b: float, noise: float = 0.05) -> str:
    """paper_direction: the paper says a > b. Differences within `noise` decide nothing."""
    if abs(a - b) < noise:
        return "cannot tell (the difference is within noise)"
    return "agrees" if (a > b) == paper_direction else "disagrees"


def comparisons(results: dict, plan: DemoPlan) -> list[str]:
    """The paper's findings, each with what the demo measured and whether it agrees."""
    out = []
    diff = [m for m in plan.models if m.startswith("difflora")]
    if "nih" in results and "lora-8" in plan.models and diff:
        nih = results["nih"]
        for task, paper_says_lora in (("mk2", True), ("mv", False)):
            if task not in plan.nih_tasks:
                continue
            avg = {m: sum(_mean(v) for v in nih[m][task].values()) / len(nih[m][task]) for m in ["lora-8", *diff]}
            best_diff = max(diff, key=avg.get)
            verdict = _verdict(paper_says_lora, avg["lora-8"], avg[best_diff])
            out.append(f"{task.upper()}: the paper finds {'LoRA ahead of' if paper_says_lora else 'DiffLoRA ahead of'} "
                       f"{'DiffLoRA' if paper_says_lora else 'LoRA'}; the demo measures LoRA {avg['lora-8']:.2f} vs the best "
                       f"DiffLoRA ({best_diff}) {avg[best_diff]:.2f} averaged over lengths: it {verdict}.")
    if "icl" in results and "lora-8" in plan.models and diff:
        icl = results["icl"]
        top = str(max(plan.icl_shots))
        d = sum(_mean(icl[m][top]) for m in diff) / len(diff)
        lora, base = _mean(icl["lora-8"][top]), _mean(icl["base"][top])
        verdict = _verdict(True, lora, d)
        out.append(f"Many-shot ICL at {top} shots: the paper finds DiffLoRA near the base and below LoRA; the demo measures "
                   f"DiffLoRA (mean of variants) {d:.2f}, LoRA {lora:.2f}, base {base:.2f}: on DiffLoRA < LoRA it {verdict}.")
    if "attention" in results and diff:
        att = results["attention"]
        base_bos = att["base"]["mean"]["net"].get("bos", 0.0)
        moved = [m for m in diff if att[m]["mean"]["net"].get("bos", 0.0) < base_bos]
        verdict = "agrees" if len(moved) * 2 >= len(diff) else "disagrees"
        out.append(f"Attention: the paper finds DiffLoRA moves mass off BOS; in the demo {len(moved)} of {len(diff)} "
                   f"DiffLoRA variants put less net mass per token on BOS than the base ({base_bos:.3f}): it {verdict}.")
    if "nih" in results and "difflora-32-gn" in plan.models and "difflora-32" in plan.models:
        nih = results["nih"]
        gn = sum(_mean(v) for t in nih["difflora-32-gn"].values() for v in t.values())
        plain = sum(_mean(v) for t in nih["difflora-32"].values() for v in t.values())
        verdict = _verdict(True, plain, gn)
        out.append(f"GroupNorm: the paper finds it destroys a pretrained model; the demo measures DiffLoRA-32+GN "
                   f"{gn:.2f} against DiffLoRA-32 {plain:.2f} (accuracy summed over needle tasks and lengths): it {verdict}.")
    return out


def write_demo_report(plan: DemoPlan, base_path: str, adapters: dict[str, str], results: dict, out_dir: str,
                      timings: dict) -> str:
    eval_dir = os.path.join(out_dir, "eval")
    report = Report("DiffLoRA in miniature: the paper's comparison on a CPU")
    report.heading("What was run")
    recipe = plan.recipe
    base_line = (f"Base model: the project's default Llama-architecture model ({recipe.layers} layers, hidden "
                 f"{recipe.hidden_size}, {recipe.heads} heads / {recipe.kv_heads} KV heads, vocabulary {recipe.vocab_size}), "
                 f"pretrained for {recipe.steps} steps on generated text and cached at {base_path}." if recipe else
                 f"Base model: {base_path}.")
    report.text(base_line)
    report.text(f"Fine-tuned with identical data, steps and seeds: {', '.join(plan.models)} "
                f"({plan.training.get('max_steps')} steps, batch {plan.training.get('per_device_train_batch_size')}, "
                f"learning rate {plan.training.get('learning_rate')}, max length {plan.train_max_length}, "
                f"{plan.train_examples} generated chat examples). LoRA is r=8 on q,k,v,o,gate,up,down; DiffLoRA ranks "
                "are capped to the small hidden size (difflora-64 -> hidden/4, difflora-32 -> hidden/8, alpha = 2r).")
    report.text("Timings (seconds): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    if "nih" in results:
        short = str(plan.nih_lengths[0])
        mk2 = results["nih"]["base"].get("mk2", {}).get(short)
        if mk2:
            report.text(f"Base model quality: at {short} tokens it retrieves {fmt(mk2)} of the MK-2 needles.")
    report.heading("Models x metrics")
    header, rows = _metric_rows(results, plan)
    report.table(header, rows)
    report.heading("The paper's findings beside the demo's")
    for line in comparisons(results, plan):
        report.text(line)
    report.text(f"Paper, general benchmarks (not run here): {PAPER_FINDINGS['general']}")
    if "nih" in results:
        add_nih(report, results["nih"], {t: os.path.join(eval_dir, f"nih_{t}.png") for t in plan.nih_tasks})
    if "icl" in results:
        add_icl(report, results["icl"], os.path.join(eval_dir, "icl.png"))
    if "attention" in results:
        add_attention(report, results["attention"], os.path.join(eval_dir, "attention_mass.png"))
    if "degeneration" in results:
        add_degeneration(report, results["degeneration"])
    report.heading("Training")
    report.image(plot_losses(adapters, os.path.join(out_dir, "loss_curves.png")), "fine-tuning loss curves")
    lambda_plot = plot_lambdas(adapters, os.path.join(out_dir, "lambdas.png"))
    if lambda_plot:
        report.image(lambda_plot, "lambda per layer over training (learned-lambda variants)")
    md, _ = report.write(out_dir)
    return md
