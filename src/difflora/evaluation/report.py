"""Reports: one Markdown and one HTML page with tables and plots, models side by side.

`Report` is a small document builder (headings, paragraphs, tables, images) rendered to both
formats; `write_report(run_dirs, out_dir)` gathers the summaries that `difflora eval ...` wrote and
puts the paper's numbers beside them where the tasks match.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from dataclasses import dataclass, field

# What the paper reports (spec section 6), shown beside measured numbers; shapes, not targets.
PAPER_FINDINGS = {
    "nih": "LoRA far ahead at MK-2; every DiffLoRA variant far ahead of LoRA at MV.",
    "icl": "DiffLoRA near the base model, below LoRA, and worse as demonstrations grow past the 4096-token training length.",
    "attention": "DiffLoRA moves attention mass off BOS and slightly denoises around the needle.",
    "degeneration": "DiffLoRA models sometimes loop ('The question is not a valid question. ...') or emit uuids ending '0a0a0a'.",
    "general": "HumanEval: base 0.64, LoRA 0.53, DiffLoRA-64 0.64, DiffLoRA-32 0.61; averages 0.42-0.43 for all but +GN (0.15).",
}


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
                md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
                cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                page.append(f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img":
                path, caption = value
                rel = _local_copy(path, out_dir)
                md += [f"![{caption}]({rel})", f"*{caption}*", ""]
                page.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        md_path, html_path = os.path.join(out_dir, f"{name}.md"), os.path.join(out_dir, f"{name}.html")
        with open(md_path, "w") as f:
            f.write("\n".join(md))
        with open(html_path, "w") as f:
            f.write(_HTML.format(title=html.escape(self.title), body="\n".join(page)))
        return md_path, html_path


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{background:#f3f3f3}}img{{max-width:100%}}figcaption{{font-style:italic;color:#555}}
</style></head><body>
{body}
</body></html>
"""


def _local_copy(path: str, out_dir: str) -> str:
    """Images are referenced relative to the report; copy those that live elsewhere."""
    out_dir_abs, path_abs = os.path.abspath(out_dir), os.path.abspath(path)
    if not path_abs.startswith(out_dir_abs + os.sep):
        target = os.path.join(out_dir, "figures", os.path.basename(os.path.dirname(path_abs)) + "_" + os.path.basename(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path_abs, target)
        path_abs = os.path.abspath(target)
    return os.path.relpath(path_abs, out_dir_abs)


def fmt(estimate: dict) -> str:
    return f"{estimate['mean']:.2f} [{estimate['ci_low']:.2f}, {estimate['ci_high']:.2f}]"


def add_nih(report: Report, summary: dict, figures: dict[str, str]):
    report.heading("Needle in a haystack (RULER format)")
    report.text(f"Paper: {PAPER_FINDINGS['nih']} Accuracy with a 95% bootstrap interval.")
    tasks = sorted({t for m in summary.values() for t in m})
    for task in tasks:
        lengths = sorted({int(length) for m in summary.values() for length in m.get(task, {})})
        rows = [[label] + [fmt(summary[label][task][_key(summary[label][task], n)]) for n in lengths]
                for label in summary if task in summary[label]]
        report.table([f"{task.upper()} \\ context"] + [str(n) for n in lengths], rows)
        if task in figures:
            report.image(figures[task], f"{task.upper()} accuracy against context length")


def add_icl(report: Report, summary: dict, figure: str | None):
    report.heading("Many-shot in-context learning (HELMET format)")
    report.text(f"Paper: {PAPER_FINDINGS['icl']}")
    shots = sorted({int(k) for m in summary.values() for k in m})
    report.table(["model \\ shots"] + [str(k) for k in shots],
                 [[label] + [fmt(summary[label][_key(summary[label], k)]) for k in shots] for label in summary])
    if figure:
        report.image(figure, "accuracy against number of demonstrations")


def add_degeneration(report: Report, summary: dict):
    report.heading("Degenerate generation")
    report.text(f"Paper: {PAPER_FINDINGS['degeneration']}")
    report.table(["model", "degenerate rate", "empty", "n-gram loop", "char pattern", "distinct-2"],
                 [[label, fmt(s["rate"]), f"{s['empty']:.2f}", f"{s['ngram_loop']:.2f}", f"{s['char_pattern']:.2f}",
                   f"{s['distinct_2']:.2f}"] for label, s in summary.items()])
    for label, s in summary.items():
        for w in s.get("worst", [])[:1]:
            report.text(f"Worst from {label}: prompt {w['prompt']!r} -> {w['output'][:160]!r}")


def add_attention(report: Report, summary: dict, figure: str | None):
    from ..analysis.attention_mass import SEGMENTS

    report.heading("Attention mass per segment (Figure 4)")
    report.text(f"Paper: {PAPER_FINDINGS['attention']} Mass from the query tokens, per token of each segment, "
                "averaged over layers; for DiffLoRA the lambda-scaled negative part is listed separately.")
    rows = []
    for label, s in summary.items():
        for kind, values in s["mean"].items():
            rows.append([label, kind] + [f"{values.get(seg, 0.0):.4f}" for seg in SEGMENTS])
    report.table(["model", "part"] + list(SEGMENTS), rows)
    if figure:
        report.image(figure, "attention mass per segment")


def _key(mapping: dict, number: int):
    return number if number in mapping else str(number)


def _load(run_dir: str, name: str):
    path = os.path.join(run_dir, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_report(run_dirs: list[str], out_dir: str, title: str = "difflora evaluation report") -> tuple[str, str]:
    """Gather nih/icl/degeneration/attention summaries from run folders into one report."""
    from ..errors import UserError

    merged = {"nih": {}, "icl": {}, "degeneration": {}, "attention": {}}
    figures = {"nih": {}, "icl": None, "attention": None}
    for run in run_dirs:
        if not os.path.isdir(run):
            raise UserError(f"run folder '{run}' does not exist")
        for key, name in (("nih", "nih_summary.json"), ("icl", "icl_summary.json"),
                          ("degeneration", "degeneration_summary.json"), ("attention", "attention_mass.json")):
            data = _load(run, name)
            if data:
                merged[key].update(data)
        for task in ("mk2", "mk3", "mv"):
            if os.path.isfile(p := os.path.join(run, f"nih_{task}.png")):
                figures["nih"][task] = p
        for key, name in (("icl", "icl.png"), ("attention", "attention_mass.png")):
            if os.path.isfile(p := os.path.join(run, name)):
                figures[key] = p
    if not any(merged.values()):
        raise UserError(f"no evaluation results in {run_dirs}: run `difflora eval ...` with --out first")
    report = Report(title)
    report.text(f"Runs: {', '.join(run_dirs)}. Paper numbers (Llama-3.2-1B-Instruct) are shapes to compare, not targets.")
    if merged["nih"]:
        add_nih(report, merged["nih"], figures["nih"])
    if merged["icl"]:
        add_icl(report, merged["icl"], figures["icl"])
    if merged["attention"]:
        add_attention(report, merged["attention"], figures["attention"])
    if merged["degeneration"]:
        add_degeneration(report, merged["degeneration"])
    return report.write(out_dir)
