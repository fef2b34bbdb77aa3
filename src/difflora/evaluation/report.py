"""Reports: one Markdown and one HTML page with tables and plots, models side by side.

`Report` is a small document builder (headings, paragraphs, tables, images) rendered to both
formats (the HTML page embeds its images, so it is one self-contained file). `write_report`
gathers what `difflora eval ...` / `analyze attention` wrote in run folders, or results passed as
dicts, merges the models of all of them, redraws the plots with every model in them, and puts the
paper's numbers and findings (spec section 6) beside the measured ones where the tasks match.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UserError
from .stats import paired_difference

# What the paper reports (Llama-3.2-1B-Instruct, spec section 6): shapes to compare, not targets.
PAPER_FINDINGS = {
    "nih": "LoRA far ahead at MK-2; every DiffLoRA variant far ahead of LoRA at MV.",
    "icl": "DiffLoRA near the base model, below LoRA, and worse as demonstrations grow past the 4096-token training length.",
    "attention": "DiffLoRA moves attention mass off BOS and slightly denoises around the needle.",
    "degeneration": "DiffLoRA models sometimes loop ('The question is not a valid question. ...') or emit uuids ending '0a0a0a'.",
    "general": "HumanEval: base 0.64, LoRA 0.53, DiffLoRA-64 0.64, DiffLoRA-32 0.61; averages 0.42-0.43 for all but +GN (0.15).",
    "rag": "RAG, LLM judge (Table 3 average): base 0.556, LoRA 0.601, DiffLoRA-64 0.520, DiffLoRA-64 fixed 0.534, "
           "DiffLoRA-32 0.508, +GN 0.051.",
}

# The paper's numbers for benchmarks that lm-eval also has (Fig. 1), by lm-eval task name.
PAPER_NUMBERS = {
    "humaneval": {"base": 0.64, "LoRA": 0.53, "DiffLoRA-64": 0.64, "DiffLoRA-32": 0.61},
    "drop": {"base": 0.29, "LoRA": 0.33, "DiffLoRA": 0.26},
}

RESULT_FILES = {"nih": "nih_summary.json", "icl": "icl_summary.json", "degeneration": "degeneration_summary.json",
                "attention": "attention_mass.json", "lm_eval": "lm_eval_summary.json"}


@dataclass
class Section:
    """An extra section for write_report: a heading, paragraphs, an optional table, images."""

    heading: str
    paragraphs: list[str] = field(default_factory=list)
    table: tuple[list[str], list[list]] | None = None
    images: list[tuple[str, str]] = field(default_factory=list)  # (path, caption)

    def add_to(self, report: Report) -> None:
        report.heading(self.heading)
        for text in self.paragraphs:
            report.text(text)
        if self.table:
            report.table(*self.table)
        for path, caption in self.images:
            report.image(path, caption)


@dataclass
class Report:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2):
        self.blocks.append(("h", (level, text)))

    def text(self, text: str):
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list]):
        self.blocks.append(("table", (header, [[str(c) for c in r] for r in rows])))

    def image(self, path: str, caption: str):
        self.blocks.append(("img", (path, caption)))

    def write(self, out_dir: str, name: str = "report") -> tuple[str, str]:
        """{name}.md (images by relative path, copied beside it when they live elsewhere) and
        {name}.html (images embedded). Returns both paths."""
        os.makedirs(out_dir, exist_ok=True)
        md, page = [f"# {self.title}", ""], [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h":
                level, text = value
                md += ["#" * level + " " + text, ""]
                page.append(f"<h{level}>{html.escape(text)}</h{level}>")
            elif kind == "p":
                md += [value, ""]
                page.append(f"<p>{html.escape(value)}</p>")
            elif kind == "table":
                header, rows = value
                md += ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
                md += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows] + [""]
                cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                page.append(f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img":
                path, caption = value
                if not os.path.isfile(path):
                    continue
                rel = _local_copy(path, out_dir)
                md += [f"![{caption}]({rel})", f"*{caption}*", ""]
                page.append(f'<figure><img src="{_data_uri(path)}" alt="{html.escape(caption)}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        md_path, html_path = os.path.join(out_dir, f"{name}.md"), os.path.join(out_dir, f"{name}.html")
        with open(md_path, "w") as f:
            f.write("\n".join(md))
        with open(html_path, "w") as f:
            f.write(_HTML.format(title=html.escape(self.title), body="\n".join(page)))
        return md_path, html_path


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{background:#f3f3f3}}img{{max-width:100%}}figcaption{{font-style:italic;color:#555}}
</style></head><body>
{body}
</body></html>
"""


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def _local_copy(path: str, out_dir: str) -> str:
    """Markdown images are referenced relative to the report; copy those that live elsewhere."""
    out_dir_abs, path_abs = os.path.abspath(out_dir), os.path.abspath(path)
    if not path_abs.startswith(out_dir_abs + os.sep):
        target = os.path.join(out_dir, "figures", os.path.basename(os.path.dirname(path_abs)) + "_" + os.path.basename(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path_abs, target)
        path_abs = os.path.abspath(target)
    return os.path.relpath(path_abs, out_dir_abs)


def fmt(estimate: dict) -> str:
    """"mean [low, high]" of a bootstrap estimate dict."""
    return f"{estimate['mean']:.2f} [{estimate['ci_low']:.2f}, {estimate['ci_high']:.2f}]"


def _key(mapping: dict, number):
    return number if number in mapping else str(number)


def _numbers(keys) -> list[int]:
    return sorted({int(k) for k in keys})


# --------------------------------------------------------------------------------------------
# sections (also used by the demo's report)

def add_nih(report: Report, summary: dict, figures: dict[str, str] | None = None):
    report.heading("Needle in a haystack (RULER format)")
    report.text(f"Paper: {PAPER_FINDINGS['nih']} Accuracy (fraction of gold values found) with a 95% bootstrap "
                "interval; context lengths in each model's own tokens.")
    tasks = sorted({t for m in summary.values() for t in m})
    for task in tasks:
        lengths = _numbers(n for m in summary.values() for n in m.get(task, {}))
        rows = [[label] + [fmt(summary[label][task][_key(summary[label][task], n)])
                           if _key(summary[label][task], n) in summary[label][task] else "" for n in lengths]
                for label in summary if task in summary[label]]
        report.table([f"{task.upper()} \\ context"] + [str(n) for n in lengths], rows)
        if figures and task in figures:
            report.image(figures[task], f"{task.upper()} accuracy against context length")


def add_icl(report: Report, summary: dict, figure: str | None = None):
    report.heading("Many-shot in-context learning (HELMET format)")
    report.text(f"Paper: {PAPER_FINDINGS['icl']} Exact-match accuracy with a 95% bootstrap interval.")
    shots = _numbers(k for m in summary.values() for k in m)
    report.table(["model \\ shots"] + [str(k) for k in shots],
                 [[label] + [fmt(summary[label][_key(summary[label], k)]) if _key(summary[label], k) in summary[label]
                             else "" for k in shots] for label in summary])
    if figure:
        report.image(figure, "accuracy against number of demonstrations")


def add_degeneration(report: Report, summary: dict, figure: str | None = None):
    report.heading("Degenerate generation")
    report.text(f"Paper: {PAPER_FINDINGS['degeneration']} An answer is degenerate when it is empty, loops "
                "(a word 4-gram three times) or holds a run of a repeated character pattern.")
    report.table(["model", "degenerate rate", "empty", "n-gram loop", "char pattern", "distinct-1", "distinct-2"],
                 [[label, fmt(s["rate"]), f"{s['empty']:.2f}", f"{s['ngram_loop']:.2f}", f"{s['char_pattern']:.2f}",
                   f"{s.get('distinct_1', float('nan')):.2f}", f"{s['distinct_2']:.2f}"] for label, s in summary.items()])
    if figure:
        report.image(figure, "degeneration rates")
    for label, s in summary.items():
        for w in s.get("worst", [])[:2]:
            report.text(f"Worst from {label}: prompt {w['prompt']!r} -> {w['output'][:200]!r}")


def add_attention(report: Report, summary: dict, figure: str | None = None, layers_figure: str | None = None):
    from ..analysis.attention_mass import SEGMENTS

    report.heading("Attention mass per segment (Figure 4)")
    report.text(f"Paper: {PAPER_FINDINGS['attention']} Mass from the query tokens per token of each segment, "
                "averaged over layers; for DiffLoRA the lambda-scaled negative part is listed separately and net = "
                "positive - lambda x negative.")
    rows = []
    for label, s in summary.items():
        for kind, values in s["mean"].items():
            rows.append([label, kind] + [f"{values[seg]:.4f}" if seg in values else "" for seg in SEGMENTS])
    report.table(["model", "part"] + list(SEGMENTS), rows)
    if figure:
        report.image(figure, "attention mass per segment, averaged over layers")
    if layers_figure:
        report.image(layers_figure, "attention mass per segment and layer")


def add_lm_eval(report: Report, summary: dict, figure: str | None = None):
    from .lm_eval_results import primary_metrics

    report.heading("lm-evaluation-harness")
    tasks = sorted({t for m in summary.values() for t in m})
    for task in tasks:
        metrics = sorted({k for m in summary.values() for k in primary_metrics(m.get(task, {}))})
        rows = []
        for label, per_task in summary.items():
            if task in per_task:
                values = primary_metrics(per_task[task])
                rows.append([label] + [_with_err(*values[k]) if k in values else "" for k in metrics])
        report.table([f"{task} \\ metric"] + metrics, rows)
        paper = paper_numbers(task)
        if paper:
            report.text(f"Paper ({task}, Llama-3.2-1B-Instruct): " + ", ".join(f"{k} {v:.2f}" for k, v in paper.items()))
    if figure:
        report.image(figure, "lm-eval scores")


def paper_numbers(task: str) -> dict | None:
    """The paper's numbers for an lm-eval task name (humaneval, humaneval_instruct, drop, ...)."""
    for name, numbers in PAPER_NUMBERS.items():
        if task == name or task.startswith(name + "_"):
            return numbers
    return None


def _with_err(value: float, stderr: float | None) -> str:
    return f"{value:.3f}" + (f" +- {stderr:.3f}" if stderr is not None else "")


def add_overview(report: Report, results: dict):
    """Models x headline metrics, one row per model across every task."""
    from .lm_eval_results import primary_metrics

    labels = list(dict.fromkeys(label for key in RESULT_FILES for label in results.get(key, {})))
    columns: list[tuple[str, Callable[[str], str]]] = []
    nih = results.get("nih", {})
    for task in sorted({t for m in nih.values() for t in m}):
        columns.append((f"{task.upper()} (mean over lengths)",
                        lambda lab, t=task: f"{_mean(nih[lab][t].values()):.2f}" if t in nih.get(lab, {}) else ""))
    icl = results.get("icl", {})
    if icl:
        top = max(_numbers(k for m in icl.values() for k in m))
        columns.append((f"ICL @ {top} shots",
                        lambda lab: fmt(icl[lab][_key(icl[lab], top)]) if lab in icl and _key(icl[lab], top) in icl[lab]
                        else ""))
    deg = results.get("degeneration", {})
    if deg:
        columns.append(("degenerate rate", lambda lab: fmt(deg[lab]["rate"]) if lab in deg else ""))
    lm = results.get("lm_eval", {})
    for task in sorted({t for m in lm.values() for t in m}):
        first = next(iter(primary_metrics(next(m[task] for m in lm.values() if task in m))), None)
        if first:
            columns.append((f"{task} {first.split(',')[0]}",
                            lambda lab, t=task, k=first: f"{lm[lab][t][k]:.3f}" if t in lm.get(lab, {}) else ""))
    if not columns:
        return
    report.heading("Overview: models side by side")
    report.table(["model"] + [c[0] for c in columns], [[lab] + [c[1](lab) for c in columns] for lab in labels])


def _mean(estimates) -> float:
    values = [e["mean"] for e in estimates]
    return sum(values) / len(values)


# --------------------------------------------------------------------------------------------
# gathering runs

def gather(sources: list) -> dict:
    """Merge run folders and/or result dicts ({"nih": summary, "icl": ..., "attention": ...,
    "degeneration": ..., "lm_eval": ...}) into one results dict. A model label already taken by
    an earlier source for the same task gets the source's name appended."""
    merged: dict = {key: {} for key in RESULT_FILES}
    merged["sources"], merged["train_length"] = [], None
    for i, source in enumerate(sources):
        if isinstance(source, dict):
            data, name = source, f"results {i + 1}"
        else:
            source = os.fspath(source)
            if not os.path.isdir(source):
                raise UserError(f"run folder '{source}' does not exist")
            data, name = _read_run(source), os.path.basename(os.path.normpath(source))
            settings = _read(os.path.join(source, "nih_settings.json")) or {}
            merged["train_length"] = merged["train_length"] or settings.get("train_length")
        merged["sources"].append(name)
        for key in RESULT_FILES:
            for label, value in (data.get(key) or {}).items():
                merged[key][label if label not in merged[key] else f"{label} ({name})"] = value
    return merged


def _read_run(run_dir: str) -> dict:
    return {key: _read(os.path.join(run_dir, name)) for key, name in RESULT_FILES.items()}


def _read(path: str):
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"'{path}' is not valid JSON ({exc.msg}): rerun the evaluation that wrote it") from None


# per-sample files that pair up two models (the same sample has the same key for every model)
SAMPLE_KEYS = {"nih": ("nih_samples.jsonl", ("task", "length", "index")),
               "icl": ("icl_samples.jsonl", ("shots", "index"))}


def sample_scores(run_dirs: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """{task: {model label: {sample key: score}}} from the runs' per-sample files; a label that an
    earlier run already has is renamed "label (run)", as in gather()."""
    scores: dict = {task: {} for task in SAMPLE_KEYS}
    for run_dir in run_dirs:
        name = os.path.basename(os.path.normpath(run_dir))
        for task, (filename, fields) in SAMPLE_KEYS.items():
            path = os.path.join(run_dir, filename)
            if not os.path.isfile(path):
                continue
            here: dict = {}
            with open(path) as f:
                for number, line in enumerate(f, 1):
                    try:
                        row = json.loads(line)
                        key = "/".join(str(row[k]) for k in fields)
                        here.setdefault(row["model"], {})[key] = float(row["score"])
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                        raise UserError(f"{path}:{number} is not a per-sample result row ({exc.__class__.__name__}: "
                                        f"{exc}): rerun the evaluation that wrote it") from None
            for label, per_sample in here.items():
                scores[task][label if label not in scores[task] else f"{label} ({name})"] = per_sample
    return scores


def add_pairs(report: Report, run_dirs: list[str], pairs: list[tuple[str, str]]) -> None:
    """Paired comparisons the user names (e.g. a DiffoRA-selected adapter against the uniform one
    it was selected from): the difference of their scores on the same samples, with an interval."""
    scores = sample_scores(run_dirs)
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
                rows.append([f"{selected} - {reference}", task, str(d.n), f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"])
    report.heading("Paired comparisons")
    report.text("Each row is the mean difference of two models' scores over the samples both were scored on (the same "
                "haystacks and test texts), with a 95% paired-bootstrap interval: an interval above zero means the first "
                "model is better. DiffoRA (seed 003) claims a DAM-selected adapter beats the uniform one at the same "
                "number of trainable parameters: pair them as --pair SELECTED=UNIFORM.")
    report.table(["pair", "task", "samples", "difference, 95% interval"], rows)


def write_report(sources, out_dir: str | None = None, title: str = "difflora evaluation report",
                 extra_sections: list[Section | Callable[[Report], None]] | None = None,
                 pairs: list[tuple[str, str]] | None = None) -> tuple[str, str]:
    """report.md + report.html in out_dir from run folders and/or result dicts (see gather).

    sources: a run folder, a results dict, or a list of them; out_dir defaults to the first run
    folder. Plots are redrawn from the merged results (out_dir/figures). extra_sections: Section
    objects or callables f(report) appended at the end. pairs: (model, reference) labels compared
    sample by sample (add_pairs). Returns (markdown path, html path)."""
    from ..analysis.attention_mass import plot_attention_layers, plot_attention_mass
    from .degeneration import plot_degeneration
    from .lm_eval_results import plot_lm_eval
    from .run_icl import plot_icl
    from .run_nih import plot_nih

    sources = sources if isinstance(sources, list | tuple) else [sources]
    if not sources:
        raise UserError("no runs to report on: give one or more folders written by `difflora eval ... --out`")
    if out_dir is None:
        folders = [s for s in sources if not isinstance(s, dict)]
        if not folders:
            raise UserError("write_report needs out_dir when every source is a results dict")
        out_dir = os.fspath(folders[0])
    results = gather(list(sources))
    if not any(results[key] for key in RESULT_FILES) and not extra_sections:
        raise UserError(f"no evaluation results in {', '.join(results['sources'])}: run `difflora eval ... --out DIR` first")
    figures = os.path.join(out_dir, "figures")
    report = Report(title)
    report.text(f"Sources: {', '.join(results['sources'])}. The paper's numbers (Llama-3.2-1B-Instruct, trained on "
                "Tulu-2) are shapes to compare, not targets. Intervals are 95% bootstrap intervals over samples.")
    add_overview(report, results)
    if results["nih"]:
        add_nih(report, results["nih"], plot_nih(results["nih"], figures, results["train_length"]))
    if results["icl"]:
        add_icl(report, results["icl"], plot_icl(results["icl"], figures))
    if results["attention"]:
        add_attention(report, results["attention"],
                      plot_attention_mass(results["attention"], os.path.join(figures, "attention_mass.png")),
                      plot_attention_layers(results["attention"], os.path.join(figures, "attention_mass_layers.png")))
    if results["degeneration"]:
        add_degeneration(report, results["degeneration"],
                         plot_degeneration(results["degeneration"], os.path.join(figures, "degeneration.png")))
    if results["lm_eval"]:
        add_lm_eval(report, results["lm_eval"], plot_lm_eval(results["lm_eval"], os.path.join(figures, "lm_eval.png")))
    if pairs:
        add_pairs(report, [os.fspath(x) for x in sources if not isinstance(x, dict)], pairs)
    report.heading("The paper, for reference")
    for key in ("general", "rag"):
        report.text(f"Paper: {PAPER_FINDINGS[key]}")
    for section in extra_sections or []:
        section.add_to(report) if isinstance(section, Section) else section(report)
    return report.write(out_dir)
