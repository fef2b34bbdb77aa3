"""A run's verdicts as data (OUT/verdicts.json), and where two runs' verdicts meet: the study on a
real pretrained base beside the demo on the embedded one, finding by finding and model by model.

Two runs are matched cell by cell: the same finding, the same model and the same measure. Each pair
is "same verdict", "opposite" (one agrees with the paper where the other disagrees) or "one cannot
tell" (one run's interval holds zero, so the pair says nothing either way).
"""

from __future__ import annotations

import json
import os

from ..errors import UserError
from ..evaluation.document import Report
from ..evaluation.results import write_json
from .compare import Finding

VERDICTS_FILE = "verdicts.json"
SAME, OPPOSITE, UNDECIDED = "same verdict", "opposite", "one cannot tell"


def verdict_records(found: list[Finding]) -> list[dict]:
    """One record per verdict: finding, model, measure, verdict and the paired difference behind it."""
    return [{"finding": f.name, "model": c.model, "measure": c.measure, "verdict": c.verdict,
             "difference": c.diff.to_dict() if c.diff is not None else None}
            for f in found for c in f.cells]


def write_verdicts(out_dir: str, found: list[Finding], base: str) -> str:
    return write_json(os.path.join(out_dir, VERDICTS_FILE), {"base": base, "verdicts": verdict_records(found)})


def read_verdicts(folder: str) -> dict:
    path = os.path.join(folder, VERDICTS_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{folder} has no {VERDICTS_FILE}: give --compare-with the output folder of a finished "
                        "`difflora demo` run (its report stage writes the file)")
    with open(path) as f:
        return json.load(f)


def pair_verdicts(ours: list[dict], theirs: list[dict]) -> list[tuple[dict, dict, str]]:
    """(our record, their record, how they relate) for every cell both runs decided."""
    key = lambda r: (r["finding"], r["model"], r["measure"])  # noqa: E731
    by_key = {key(r): r for r in theirs}
    pairs = []
    for record in ours:
        other = by_key.get(key(record))
        if other is not None:
            pairs.append((record, other, relation(record["verdict"], other["verdict"])))
    return pairs


def relation(a: str, b: str) -> str:
    if a == b:
        return SAME
    return UNDECIDED if "cannot tell" in (a, b) else OPPOSITE


def agreement_section(report: Report, ours: list[dict], reference: dict, reference_dir: str, title: str) -> None:
    """The plain section: where this run's verdicts and the reference run's meet, and where not."""
    report.heading(title)
    pairs = pair_verdicts(ours, reference["verdicts"])
    if not pairs:
        report.text(f"No verdict of this run has a counterpart in {reference_dir} (they compare different models "
                    "or tasks).")
        return
    counts = {k: sum(1 for *_, r in pairs if r == k) for k in (SAME, OPPOSITE, UNDECIDED)}
    decided = [p for p in pairs if p[2] != UNDECIDED]
    same = sum(1 for p in decided if p[2] == SAME)
    report.text(f"The reference is {reference_dir} (base: {reference.get('base', '?')}). Of the {len(pairs)} "
                f"verdicts both runs reached on the same finding, model and measure, {counts[SAME]} are the same, "
                f"{counts[OPPOSITE]} are opposite and in {counts[UNDECIDED]} one run cannot tell. "
                + (f"Where both runs decided ({len(decided)} cells), they reach the same verdict in {same}."
                   if decided else "No cell was decided by both runs."))
    inside = [p for p in pairs if within(p[0], p[1])]
    measured = [p for p in pairs if p[0].get("difference") and p[1].get("difference")]
    if measured:
        report.text(f"In {len(inside)} of the {len(measured)} cells, this run's paired difference lies inside the "
                    "reference run's 95% interval: on the same base with another seed, that is how far the "
                    "reported intervals cover a rerun; across bases, how far the two models measure the same "
                    "effect.")
    opposite = [p for p in pairs if p[2] == OPPOSITE]
    if opposite:
        report.text("Opposite verdicts: " + "; ".join(
            f"{a['finding']} ({a['model']}{', ' + a['measure'] if a['measure'] else ''}): here {a['verdict']} "
            f"({_difference(a)}), there {b['verdict']} ({_difference(b)})" for a, b, _ in opposite) + ".")
    report.table(["finding", "model", "this run", "reference run", "relation", "inside the reference's interval"],
                 [[a["finding"] + (f" ({a['measure']})" if a["measure"] else ""), a["model"],
                   f"{a['verdict']} {_difference(a)}", f"{b['verdict']} {_difference(b)}", r,
                   "yes" if within(a, b) else "no"] for a, b, r in pairs])


def within(ours: dict, theirs: dict) -> bool:
    """Whether our paired difference's point estimate lies inside their 95% interval."""
    a, b = ours.get("difference"), theirs.get("difference")
    return bool(a and b) and b["ci_low"] <= a["mean"] <= b["ci_high"]


def _difference(record: dict) -> str:
    d = record.get("difference")
    return f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]" if d else ""
