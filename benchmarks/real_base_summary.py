"""One page on what a real base model can do before any fine-tuning: the steps of real_base_profile.sh
(needles, many-shot ICL, degeneration) gathered into OUT/README.md and OUT/profile.png, with the
needle cells where the base is neither at 0 nor at 1 (the lengths a study can measure a change at).

    python benchmarks/real_base_summary.py docs/results/smollm2-base
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from difflora.evaluation.plots import pyplot, save_figure

TASK_NAMES = {"mk2": "MK-2", "mk3": "MK-3", "mv": "MV"}


def needle_cells(out: Path) -> dict[str, dict[int, dict]]:
    """{task: {length: estimate}} over every needle step's summary (a later step adds lengths)."""
    cells: dict[str, dict[int, dict]] = {}
    for path in sorted(out.glob("*/nih_summary.json")):
        for task, per_length in json.loads(path.read_text())["base"].items():
            for length, estimate in per_length.items():
                cells.setdefault(task, {})[int(length)] = estimate
    return cells


def measurable(estimate: dict) -> bool:
    """Neither at 0 nor at 1: some samples retrieved and some not."""
    return 0.0 < estimate["mean"] < 1.0


def _estimate(e: dict) -> str:
    return f"{e['mean']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}] (n={e['n']})"


def write_summary(out: Path) -> Path:
    cells = needle_cells(out)
    lines = [f"# {out.name}: the base model before fine-tuning", "",
             "Greedy decoding, 95% bootstrap intervals over samples; made by `bash benchmarks/real_base_profile.sh` "
             f"and `python benchmarks/real_base_summary.py {out}` (each step's own files are in its folder).", "",
             "## Needle in a haystack (RULER format)", "",
             "| task | length | accuracy | measurable |", "|---|---|---|---|"]
    for task, per_length in cells.items():
        for length, e in sorted(per_length.items()):
            lines.append(f"| {TASK_NAMES.get(task, task)} | {length} | {_estimate(e)} | "
                         f"{'yes' if measurable(e) else 'no'} |")
    chosen = {task: [n for n, e in sorted(per_length.items()) if measurable(e)] for task, per_length in cells.items()}
    lines += ["", "Measurable cells (accuracy neither 0 nor 1): "
              + "; ".join(f"{TASK_NAMES.get(t, t)} at {', '.join(map(str, n)) or 'no length'}"
                          for t, n in chosen.items()) + "."]
    icl = out / "icl" / "icl_summary.json"
    if icl.is_file():
        lines += ["", "## Many-shot ICL (HELMET format, bundled topics)", "", "| shots | accuracy | prompt tokens |",
                  "|---|---|---|"]
        for shots, e in sorted(json.loads(icl.read_text())["base"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {shots} | {_estimate(e)} | {e.get('prompt_tokens', '')} |")
    degeneration = out / "degeneration" / "degeneration_summary.json"
    if degeneration.is_file():
        e = json.loads(degeneration.read_text())["base"]
        lines += ["", "## Degenerate generation", "", f"Rate of degenerate answers: {_estimate(e['rate'])}."]
    lines += ["", "![needle accuracy by length](profile.png)", ""]
    _plot(cells, out / "profile.png")
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def _plot(cells: dict[str, dict[int, dict]], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6.4, 4.0))
    for task, per_length in cells.items():
        lengths = sorted(per_length)
        means = [per_length[n]["mean"] for n in lengths]
        ax.errorbar(lengths, means, yerr=[[m - per_length[n]["ci_low"] for n, m in zip(lengths, means)],
                                          [per_length[n]["ci_high"] - m for n, m in zip(lengths, means)]],
                    marker="o", capsize=3, label=TASK_NAMES.get(task, task))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("the base model's needle retrieval, before fine-tuning", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, str(path))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the profile's folder (real_base_profile.sh's OUT)")
    print(write_summary(parser.parse_args().out))
