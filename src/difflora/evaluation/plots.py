"""Plots people would rather look at than read (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def accuracy_lines(series: dict[str, dict[int, dict]], xlabel: str, title: str, path: str,
                   reference_x: float | None = None) -> str:
    """series: label -> {x: {"mean", "ci_low", "ci_high"}}; one line per model with its CI band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, points in series.items():
        xs = sorted(points)
        means = [points[x]["mean"] for x in xs]
        ax.plot(xs, means, marker="o", label=label)
        ax.fill_between(xs, [points[x]["ci_low"] for x in xs], [points[x]["ci_high"] for x in xs], alpha=0.15)
    if reference_x:
        ax.axvline(reference_x, color="grey", linestyle=":", linewidth=1)
        ax.text(reference_x, 1.02, " fine-tuning length", fontsize=7, color="grey")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
