"""Reading lm-eval results (kept apart from lm_eval_model so reports need not import lm-eval)."""

from __future__ import annotations

from .plots import grouped_bars


def primary_metrics(task_metrics: dict) -> dict[str, tuple[float, float | None]]:
    """{"acc,none": (value, stderr or None), ...}: the metrics of one task without their stderr
    entries and the alias."""
    out = {}
    for key, value in task_metrics.items():
        if "," not in key or "_stderr" in key or isinstance(value, bool) or not isinstance(value, int | float):
            continue  # lm-eval names metrics "metric,filter"; sample_len and alias are not metrics
        metric, _, filt = key.partition(",")
        stderr = task_metrics.get(f"{metric}_stderr,{filt}")
        out[key] = (float(value), float(stderr) if isinstance(stderr, int | float) else None)
    return out


def plot_lm_eval(summary: dict, path: str) -> str:
    """Bars per task and metric, one colour per model, stderr as error bars."""
    values, errors = {}, {}
    for label, tasks in summary.items():
        for task, metrics in tasks.items():
            for key, (value, stderr) in primary_metrics(metrics).items():
                group = f"{task}\n{key.split(',')[0]}"
                values.setdefault(label, {})[group] = value
                if stderr is not None:
                    errors.setdefault(label, {})[group] = (value - stderr, value + stderr)
    return grouped_bars(values, "lm-evaluation-harness", "score (+- stderr)", path, errors)
