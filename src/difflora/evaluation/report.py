"""Reports: one Markdown and one HTML page with tables and plots, models side by side.

write_report gathers what `difflora eval ...` / `analyze attention` wrote in run folders, results
passed as dicts, or TaskResults in memory, merges the models of all of them, and lets every task
(evaluation/tasks) add its overview columns and its section, with plots redrawn with every model
in them, the paper's numbers and findings beside the measured ones (evaluation/paper.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from ..errors import UserError
from ..textfiles import read_jsonl
from .document import Report, Section
from .paper import FINDINGS
from .stats import paired_difference
from .task import SampleId, TaskResult, sample_id
from .tasks import TASKS

__all__ = ["Report", "Section", "gather", "sample_scores", "add_overview", "add_pairs", "write_report"]

# Tasks whose per-sample score is an accuracy (higher is better), compared model against model by --pair.
PAIRED = ("nih", "icl")


def add_overview(report: Report, results: dict) -> None:
    """Models x headline metrics, one row per model across every task."""
    labels = list(dict.fromkeys(label for name in TASKS for label in results.get(name, {})))
    columns: list[tuple[str, Callable[[str], str]]] = []
    for name, task in TASKS.items():
        if results.get(name):
            columns += task.overview(results[name])
    if not columns:
        return
    report.heading("Overview: models side by side")
    report.table(["model"] + [c[0] for c in columns], [[lab] + [c[1](lab) for c in columns] for lab in labels])


# --------------------------------------------------------------------------------------------
# gathering runs

def gather(sources: list) -> dict:
    """Merge run folders, result dicts ({"nih": summary, "icl": ..., "attention": ...,
    "degeneration": ..., "lm_eval": ...}) and TaskResults into one results dict: {task name:
    {label: summary}, "settings": {task name: settings}, "sources": [names]}. A model label already
    taken by an earlier source for the same task gets the source's name appended."""
    merged: dict = {name: {} for name in TASKS}
    merged["sources"], merged["settings"] = [], {}
    for i, source in enumerate(sources):
        data, settings, name = _read_source(source, i)
        merged["sources"].append(name)
        for task, task_settings in settings.items():
            merged["settings"].setdefault(task, task_settings)
        for task in TASKS:
            for label, value in (data.get(task) or {}).items():
                merged[task][label if label not in merged[task] else f"{label} ({name})"] = value
    return merged


def _read_source(source, i: int) -> tuple[dict, dict, str]:
    """({task: summary}, {task: settings}, name) of one source."""
    if isinstance(source, TaskResult):
        return {source.name: source.summary}, {source.name: source.settings}, f"results {i + 1}"
    if isinstance(source, dict):
        return source, {}, f"results {i + 1}"
    folder = os.fspath(source)
    if not os.path.isdir(folder):
        raise UserError(f"run folder '{folder}' does not exist")
    data = {name: _read(os.path.join(folder, task.SUMMARY_FILE)) for name, task in TASKS.items()}
    settings = {name: s for name in TASKS if (s := _read(os.path.join(folder, f"{name}_settings.json")))}
    return data, settings, os.path.basename(os.path.normpath(folder))


def _read(path: str):
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"'{path}' is not valid JSON ({exc.msg}): rerun the evaluation that wrote it") from None


def sample_scores(sources: list) -> dict[str, dict[str, dict[SampleId, float]]]:
    """{task: {model label: {sample id: score}}} of the PAIRED tasks, from run folders' per-sample
    files and from TaskResults; a label that an earlier source already has is renamed
    "label (source)", as in gather()."""
    scores: dict = {name: {} for name in PAIRED}
    for source in sources:
        if isinstance(source, TaskResult):
            found = {source.name: {label: source.scores(label) for label in source.summary}} \
                if source.name in PAIRED else {}
            name = source.name
        else:
            folder = os.fspath(source)
            found = {task: _scores_in(os.path.join(folder, f"{task}_samples.jsonl"), TASKS[task].SAMPLE_ID)
                     for task in PAIRED}
            name = os.path.basename(os.path.normpath(folder))
        for task, per_label in found.items():
            for label, per_sample in per_label.items():
                scores[task][label if label not in scores[task] else f"{label} ({name})"] = per_sample
    return scores


def _scores_in(path: str, fields: tuple[str, ...]) -> dict[str, dict[SampleId, float]]:
    here: dict = {}
    if not os.path.isfile(path):
        return here
    def not_a_row(where: str, reason: str) -> None:
        raise UserError(f"{where} is not a per-sample result row ({reason}): rerun the evaluation that wrote it")

    for where, row in read_jsonl(path, on_bad_line=not_a_row):
        try:
            here.setdefault(row["model"], {})[sample_id(row, fields)] = float(row["score"])
        except (KeyError, TypeError, ValueError) as exc:
            not_a_row(where, f"{exc.__class__.__name__}: {exc}")
    return here


def add_pairs(report: Report, sources: list, pairs: list[tuple[str, str]]) -> None:
    """Paired comparisons the user names (e.g. a DiffoRA-selected adapter against the uniform one
    it was selected from): the difference of their scores on the same samples, with an interval."""
    scores = sample_scores(sources)
    known = sorted({label for per_task in scores.values() for label in per_task})
    rows = []
    for selected, reference in pairs:
        for label in (selected, reference):
            if label not in known:
                raise UserError(f"--pair names model '{label}', which has no per-sample results in these runs; "
                                f"known: {', '.join(known) or 'none'}")
        for task, per_task in scores.items():
            d = paired_difference(per_task.get(selected, {}), per_task.get(reference, {}))
            if d:
                rows.append([f"{selected} - {reference}", task, str(d.n),
                             f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"])
    report.heading("Paired comparisons")
    report.text("Each row is the mean difference of two models' scores over the samples both were scored on "
                "(the same haystacks and test texts), with a 95% paired-bootstrap interval: an interval above zero "
                "means the first model is better. DiffoRA claims a DAM-selected adapter beats the uniform one at "
                "the same number of trainable parameters: pair them as --pair SELECTED=UNIFORM.")
    report.table(["pair", "task", "samples", "difference, 95% interval"], rows)


def write_report(sources, out_dir: str | None = None, title: str = "difflora evaluation report",
                 extra_sections: list[Section | Callable[[Report], None]] | None = None,
                 pairs: list[tuple[str, str]] | None = None) -> tuple[str, str]:
    """report.md + report.html in out_dir from run folders, result dicts and/or TaskResults (see gather).

    sources: one of them or a list; out_dir defaults to the first run folder. Plots are redrawn
    from the merged results (out_dir/figures). extra_sections: Section objects or callables
    f(report) appended at the end. pairs: (model, reference) labels compared sample by sample
    (add_pairs). Returns (markdown path, html path)."""
    sources = list(sources) if isinstance(sources, list | tuple) else [sources]
    if not sources:
        raise UserError("no runs to report on: give one or more folders written by `difflora eval ... --out`")
    if out_dir is None:
        folders = [s for s in sources if not isinstance(s, dict | TaskResult)]
        if not folders:
            raise UserError("write_report needs out_dir when every source is a results dict or TaskResult")
        out_dir = os.fspath(folders[0])
    results = gather(sources)
    if not any(results[name] for name in TASKS) and not extra_sections:
        raise UserError(f"no evaluation results in {', '.join(results['sources'])}: "
                        "run `difflora eval ... --out DIR` first")
    figures = os.path.join(out_dir, "figures")
    report = Report(title)
    report.text(f"Sources: {', '.join(results['sources'])}. The paper's numbers (Llama-3.2-1B-Instruct, trained on "
                "Tulu-2) are shapes to compare, not targets. Intervals are 95% bootstrap intervals over samples.")
    add_overview(report, results)
    for name, task in TASKS.items():
        if results[name]:
            task.section(report, results[name], figures, results["settings"].get(name))
    if pairs:
        add_pairs(report, [s for s in sources if not isinstance(s, dict)], pairs)
    report.heading("The paper, for reference")
    for key in ("general", "rag"):
        report.text(f"Paper: {FINDINGS[key]}")
    for section in extra_sections or []:
        section.add_to(report) if isinstance(section, Section) else section(report)
    return report.write(out_dir)
