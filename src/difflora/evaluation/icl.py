"""Many-shot in-context classification in the HELMET format.

Every class maps to a random integer id (so the model must read the demonstrations, not its prior);
demonstrations come in balanced rounds (one per class, shuffled); each is "{text}\\nlabel: {id}";
the answer prefix is "label:" and scoring is exact match of "label: {id}".
Data: any JSONL of {"text", "label"} rows, a `datasets` name with text/label columns, or the bundled
set (6 topics x 40 sentences from a seeded grammar, resources/icl_topics.jsonl).
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from importlib import resources

from ..errors import UserError

INSTRUCTION = ('Use the provided mapping from the text to label to assign a label to the text. '
               'Only output "label: {label}" and nothing else.')
ANSWER_PREFIX = "label:"
BUNDLED = "bundled:topics"


def load_examples(source: str = BUNDLED) -> list[dict]:
    if source == BUNDLED:
        text = resources.files("difflora.resources").joinpath("icl_topics.jsonl").read_text()
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    elif os.path.isfile(source):
        rows = []
        with open(source) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{source}:{line_no}: invalid JSON ({exc.msg})") from None
                if not isinstance(row, dict) or "text" not in row or "label" not in row:
                    raise UserError(f'{source}:{line_no}: expected {{"text": ..., "label": ...}}')
                rows.append({"text": str(row["text"]), "label": str(row["label"])})
    else:
        try:
            from datasets import load_dataset

            rows = [{"text": str(r["text"]), "label": str(r["label"])} for r in load_dataset(source, split="train")]
        except Exception as exc:
            raise UserError(f"ICL data '{source}' is not a file, the bundled set ({BUNDLED}) or a loadable datasets name") from exc
    if not rows:
        raise UserError(f"ICL data '{source}' is empty")
    if len({r["label"] for r in rows}) < 2:
        raise UserError(f"ICL data '{source}' needs at least two labels")
    return rows


@dataclass
class IclSample:
    shots: int
    index: int
    prompt: str
    gold: str  # "label: N"


def make_sample(rows: list[dict], shots: int, index: int, seed: int = 0) -> IclSample:
    rng = random.Random(f"{seed}-{shots}-{index}")
    labels = sorted({r["label"] for r in rows})
    ids = rng.sample(range(len(labels) * 10), len(labels))
    label_id = dict(zip(labels, ids))
    by_label = {lab: [r for r in rows if r["label"] == lab] for lab in labels}
    test = rng.choice(rows)
    demos = []
    while len(demos) < shots:  # balanced rounds: one demonstration per class, shuffled
        round_ = [rng.choice([r for r in by_label[lab] if r is not test] or by_label[lab]) for lab in labels]
        rng.shuffle(round_)
        demos.extend(round_)
    demos = demos[:shots]
    body = "\n\n".join(f"{d['text']}\nlabel: {label_id[d['label']]}" for d in demos)
    prompt = f"{INSTRUCTION}\n\n{body}\n\n{test['text']}"
    return IclSample(shots, index, prompt, f"label: {label_id[test['label']]}")


def score(output: str, gold: str) -> float:
    """Exact match of "label: N" on the first line of the answer prefix + output."""
    first = (ANSWER_PREFIX + output).strip().splitlines()[0].strip()
    first = re.sub(r"\s+", " ", first)
    return float(first == gold or first.rstrip(".") == gold)
