"""The lm-evaluation-harness task: any lm-eval task (arc_easy, humaneval, your own YAML ...) on
already-loaded models. lm-eval is imported when run() is called, not before, so reading and
reporting its results works without it (and without its slow import).

summary[label][task] = {metric: value} (lm-eval's "acc,none", "acc_stderr,none", ...). Rows are
lm-eval's own logged samples with "model" and "task" added; lm-eval scores them, so there is no
paired per-sample score here. Files: lm_eval_samples.jsonl, lm_eval_summary.json,
lm_eval_settings.json and lm_eval.png.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from ...errors import UserError
from ...validation import InputFolder, Real, Text, Whole, kind
from ..document import Report
from ..paper import numbers_for
from ..plots import grouped_bars
from ..results import save_result
from ..settings import EvalSettings
from ..task import TaskResult

NAME = "lm_eval"
SUMMARY_FILE = "lm_eval_summary.json"
SAMPLE_ID = None  # lm-eval's samples carry the task's own metrics, not one score to pair on


def run(models: dict, settings: EvalSettings | None = None, *, tasks: list[str], include_path: str | None = None,
        limit: int | float | None = None, num_fewshot: int | None = None, apply_chat_template: bool = False,
        bootstrap_iters: int = 1000) -> TaskResult:
    """lm-eval `tasks` on every model ({label: (model, tokenizer)}), seeded by settings.seed.

    include_path: a folder of extra task YAMLs; limit: examples per task (a count, or a fraction
    below 1); num_fewshot: None keeps each task's own."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    settings = settings or EvalSettings()
    if not tasks:
        raise UserError("lm-eval needs at least one task (--tasks)")
    if include_path and not os.path.isdir(include_path):
        raise UserError(f"--include-path '{include_path}' is not a folder of lm-eval task YAMLs")
    manager = task_manager(tasks, include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"unknown lm-eval task '{unknown[0]}': see `lm_eval ls tasks`, "
                        "or add --include-path for your own YAML")
    seed = settings.seed
    summary, rows = {}, []
    for label, (model, tokenizer) in models.items():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
        out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                              log_samples=settings.out_dir is not None, apply_chat_template=apply_chat_template,
                              bootstrap_iters=bootstrap_iters, random_seed=seed, numpy_random_seed=seed,
                              torch_random_seed=seed, fewshot_random_seed=seed)
        summary[label] = {task: _numeric(metrics) for task, metrics in out["results"].items()}
        for task, samples in (out.get("samples") or {}).items():
            rows += [{"model": label, "task": task, **_jsonable(s)} for s in samples]
    result = TaskResult(NAME, summary, rows, dict(tasks=list(tasks), include_path=include_path, limit=limit,
                                                  num_fewshot=num_fewshot, seed=seed))
    if settings.out_dir:
        save_result(result, settings.out_dir)
        plot(summary, settings.out_dir)
    return result


def run_lm_eval(models: dict, tasks: list[str], *, include_path: str | None = None, limit: int | float | None = None,
                num_fewshot: int | None = None, apply_chat_template: bool = False, bootstrap_iters: int = 1000,
                **settings) -> dict:
    """run() for its summary alone; settings: EvalSettings fields by keyword (out_dir=, batch_size=, ...;
    batch_size 1 unless given)."""
    settings.setdefault("batch_size", 1)
    return run(models, EvalSettings(**settings), tasks=tasks, include_path=include_path, limit=limit,
               num_fewshot=num_fewshot, apply_chat_template=apply_chat_template,
               bootstrap_iters=bootstrap_iters).summary


# The command line: `difflora eval lm-eval` (cli/evaluate.py registers every task from these parts).
COMMAND = ("eval", "lm-eval")
HELP = "any lm-evaluation-harness task on base models and adapters"


def add_options(parser) -> None:
    """The task's own options, beside those every evaluation command shares."""
    parser.add_argument("--tasks", nargs="+", required=True, type=kind(Text()),
                        help="lm-eval task names (space or comma separated)")
    parser.add_argument("--include-path", default=None,
                        type=kind(InputFolder(what="a folder of lm-eval task YAMLs")),
                        help="folder of extra lm-eval task YAMLs (default: none)")
    parser.add_argument("--limit", type=kind(Real(above=0)), default=None,
                        help="examples per task, a count or a fraction below 1 (default: all)")
    parser.add_argument("--num-fewshot", type=kind(Whole(minimum=0)), default=None,
                        help="demonstrations per prompt (default: the task's own)")
    parser.add_argument("--apply-chat-template", action="store_true", help="wrap prompts in the chat template")


def check_inputs(args) -> None:
    """Nothing to read before the models load: run() checks the task names with lm-eval."""


def options(args) -> dict:
    """run()'s options from the parsed command line: --tasks split at commas, a --limit of 1 or more
    a count."""
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    return dict(tasks=[t for item in args.tasks for t in item.split(",") if t], include_path=args.include_path,
                limit=limit, num_fewshot=args.num_fewshot, apply_chat_template=args.apply_chat_template)


def table(summary: dict) -> tuple[str, dict]:
    """The table printed after a run: (title, {(model, task): {metric: value}})."""
    return "lm-eval", {(m, t): {k.split(",")[0]: v for k, (v, _) in primary_metrics(r).items()}
                       for m, per_task in summary.items() for t, r in per_task.items()}


def task_manager(tasks: list[str], include_path: str | None = None):
    """lm-eval's TaskManager; when every task is defined under include_path, lm-eval's own
    catalogue (thousands of YAMLs, ~15 s to index) is not indexed."""
    from lm_eval.tasks import TaskManager

    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
        return TaskManager(include_path=include_path)
    return TaskManager()


def _numeric(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) or k == "alias"}


def _jsonable(sample: dict) -> dict:
    return json.loads(json.dumps(sample, default=str))


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


def plot(summary: dict, folder: str, settings: dict | None = None) -> str:
    """Bars per task and metric, one colour per model, stderr as error bars."""
    values, errors = {}, {}
    for label, tasks in summary.items():
        for task, metrics in tasks.items():
            for key, (value, stderr) in primary_metrics(metrics).items():
                group = f"{task}\n{key.split(',')[0]}"
                values.setdefault(label, {})[group] = value
                if stderr is not None:
                    errors.setdefault(label, {})[group] = (value - stderr, value + stderr)
    return grouped_bars(values, "lm-evaluation-harness", "score (+- stderr)", os.path.join(folder, "lm_eval.png"),
                        errors)


def section(report: Report, summary: dict, figures: str, settings: dict | None = None) -> None:
    """A table per task (models x metrics) with the paper's numbers where it has them, and the plot."""
    path = plot(summary, figures, settings)
    report.heading("lm-evaluation-harness")
    for task in sorted({t for m in summary.values() for t in m}):
        metrics = sorted({k for m in summary.values() for k in primary_metrics(m.get(task, {}))})
        rows = []
        for label, per_task in summary.items():
            if task in per_task:
                values = primary_metrics(per_task[task])
                rows.append([label] + [_with_err(*values[k]) if k in values else "" for k in metrics])
        report.table([f"{task} \\ metric"] + metrics, rows)
        paper = numbers_for(task)
        if paper:
            numbers = ", ".join(f"{k} {v:.2f}" for k, v in paper.items())
            report.text(f"Paper ({task}, Llama-3.2-1B-Instruct): {numbers}")
    report.image(path, "lm-eval scores")


def overview(summary: dict) -> list[tuple[str, Callable[[str], str]]]:
    """Overview columns: each task's first metric."""
    columns = []
    for task in sorted({t for m in summary.values() for t in m}):
        first = next(iter(primary_metrics(next(m[task] for m in summary.values() if task in m))), None)
        if first:
            columns.append((f"{task} {first.split(',')[0]}",
                            lambda label, t=task, k=first: f"{summary[label][t][k]:.3f}" if t in summary.get(label, {})
                            else ""))
    return columns


def _with_err(value: float, stderr: float | None) -> str:
    return f"{value:.3f}" + (f" +- {stderr:.3f}" if stderr is not None else "")
