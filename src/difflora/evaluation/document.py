"""The report document: headings, paragraphs, tables and images, rendered to Markdown and to one
self-contained HTML page (images embedded). Every task's report section writes into a Report."""

from __future__ import annotations

import base64
import html
import os
import shutil
from dataclasses import dataclass, field


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
        name = os.path.basename(os.path.dirname(path_abs)) + "_" + os.path.basename(path)
        target = os.path.join(out_dir, "figures", name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path_abs, target)
        path_abs = os.path.abspath(target)
    return os.path.relpath(path_abs, out_dir_abs)


def fmt(estimate: dict) -> str:
    """"mean [low, high]" of a bootstrap estimate dict."""
    return f"{estimate['mean']:.2f} [{estimate['ci_low']:.2f}, {estimate['ci_high']:.2f}]"


def lookup(mapping: dict, number):
    """mapping[number], whether its keys are ints (in memory) or strings (read back from JSON)."""
    return mapping.get(number, mapping.get(str(number)))


def sorted_numbers(keys) -> list[int]:
    """Lengths or shot counts, as ints, in order (keys may be ints or strings)."""
    return sorted({int(k) for k in keys})
