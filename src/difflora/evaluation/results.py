"""Writing evaluation results (per-sample JSONL, summary JSON) and progress for long runs."""

from __future__ import annotations

import contextlib
import json
import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .task import TaskResult


def write_jsonl(path: str, rows: list[dict]) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    return path


def write_json(path: str, data) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)
    return path


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True):
    """Yields advance(n): a rich progress bar on stderr when enabled, a no-op otherwise."""
    if not enabled:
        yield lambda n=1: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def save_result(result: TaskResult, out_dir: str) -> dict[str, str]:
    """{name}_samples.jsonl (one row per sample and model), {name}_summary.json (the summary per
    model) and {name}_settings.json (how it was run), for a TaskResult named name."""
    return {
        "samples": write_jsonl(os.path.join(out_dir, f"{result.name}_samples.jsonl"), result.rows),
        "summary": write_json(os.path.join(out_dir, f"{result.name}_summary.json"), result.summary),
        "settings": write_json(os.path.join(out_dir, f"{result.name}_settings.json"), result.settings),
    }
