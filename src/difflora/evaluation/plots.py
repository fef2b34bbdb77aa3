"""Plots people would rather look at than read (matplotlib, Agg backend, PNG).

matplotlib is imported when the first plot is drawn, not with the evaluation package: the CLI reads
every task's options at each command's start.
"""

from __future__ import annotations

import functools
import os


@functools.cache
def pyplot():
    """matplotlib.pyplot on the Agg backend (files, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def __getattr__(name: str):
    if name == "plt":  # `from difflora.evaluation.plots import plt`
        return pyplot()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def accuracy_lines(series: dict[str, dict], xlabel: str, title: str, path: str,
                   reference_x: float | None = None) -> str:
    """series: label -> {x: {"mean", "ci_low", "ci_high"}} (x may be a string, as read back from
    JSON); one line per model with its confidence band."""
    fig, ax = pyplot().subplots(figsize=(6.4, 4.0))
    for label, points in series.items():
        xs = sorted(points, key=float)
        ax.plot([float(x) for x in xs], [points[x]["mean"] for x in xs], marker="o", label=label)
        ax.fill_between([float(x) for x in xs], [points[x]["ci_low"] for x in xs], [points[x]["ci_high"] for x in xs],
                        alpha=0.15)
    if reference_x:
        ax.axvline(reference_x, color="grey", linestyle=":", linewidth=1)
        ax.text(reference_x, 1.02, " fine-tuning length", fontsize=7, color="grey")
    if all(float(x) > 0 for points in series.values() for x in points):
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (95% bootstrap band)")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def grouped_bars(values: dict[str, dict[str, float]], title: str, ylabel: str, path: str,
                 errors: dict[str, dict[str, tuple[float, float]]] | None = None) -> str:
    """values: model -> {group: value}; bars grouped by group, one colour per model.
    errors: model -> {group: (low, high)} drawn as error bars."""
    groups = list(dict.fromkeys(g for per_model in values.values() for g in per_model))
    labels = list(values)
    width = 0.8 / max(1, len(labels))
    fig, ax = pyplot().subplots(figsize=(max(6.4, 1.2 * len(groups) + 2), 4.0))
    for j, label in enumerate(labels):
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(groups))]
        heights = [values[label].get(g, 0.0) for g in groups]
        ax.bar(xs, heights, width, label=label)
        spans = (errors or {}).get(label, {})
        with_ci = [(x, h, spans[g]) for x, h, g in zip(xs, heights, groups) if g in spans]
        if with_ci:
            ax.errorbar([x for x, _, _ in with_ci], [h for _, h, _ in with_ci],
                        yerr=[[h - s[0] for _, h, s in with_ci], [s[1] - h for _, h, s in with_ci]],
                        fmt="none", ecolor="black", capsize=2, linewidth=0.8)
    ax.set_xticks(range(len(groups)), groups, fontsize=8, rotation=15 if len(groups) > 4 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def category_grid(rows: list[str], columns: list[str], cells: dict[tuple[int, int], str], colours: dict[str, str],
                  path: str, title: str = "", wrap: int = 40) -> str:
    """A grid of words: cells[(row, column)] is written in its cell on that word's colour (colours:
    word -> colour); a cell not in `cells` stays blank. Row labels are wrapped at `wrap` characters."""
    import textwrap

    labels = [textwrap.fill(r, wrap) for r in rows]
    lines = [label.count("\n") + 1 for label in labels]
    row_height = 0.2 + 0.13 * max(lines, default=1)
    label_width = 0.075 * max((len(line) for label in labels for line in label.split("\n")), default=10)
    fig, ax = pyplot().subplots(figsize=(label_width + 1.15 * len(columns) + 0.4,
                                         row_height * len(rows) + 0.8 + (0.3 if title else 0)))
    for i in range(len(rows)):
        for j in range(len(columns)):
            word = cells.get((i, j))
            ax.add_patch(pyplot().Rectangle((j, i), 1, 1, facecolor=colours.get(word, "#ffffff") if word else
                                            "#f6f6f6", edgecolor="white", linewidth=2))
            if word:
                ax.text(j + 0.5, i + 0.5, word, ha="center", va="center", fontsize=8)
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks([j + 0.5 for j in range(len(columns))], columns, fontsize=8)
    ax.set_yticks([i + 0.5 for i in range(len(rows))], labels, fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10, pad=12)
    return save_figure(fig, path)


def save_figure(fig, path: str) -> str:
    """Write a finished figure as a PNG (its folder made), close it, and return the path."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path
