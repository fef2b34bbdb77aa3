"""Many-shot in-context classification samples in the HELMET format (the task that runs them on
models is tasks/many_shot_icl.py).

Per test example (HELMET's load_icl):
- every class maps to a random integer id (a shuffled range(number of classes)), so the model
  must read the mapping from the demonstrations rather than use its prior about the label names;
- demonstrations come in balanced rounds: each round holds one example of every class, in a
  shuffled order, examples drawn without replacement within a class; the last round is cut;
- each demonstration is "{text}\\nlabel: {id}"; the prompt is
  INSTRUCTION + " \\n\\n" + demonstrations joined by "\\n\\n" + "\\n\\n" + test text
  (HELMET's user template, its space before the blank line included);
- the answer prefix is "label:" (after the chat generation prompt, or on a new line without a chat
  template), and the score is exact match of the id parsed from the output as HELMET parses it
  (text after "label:" if the model wrote it, else the first line; SQuAD normalisation).
Test examples are balanced over classes. Demonstrations come from the same pool minus the test
example, or from a separate pool (test_data).

Data: a JSONL file of {"text", "label"} rows (other field names with text_field/label_field),
a `datasets` name ("name" or "name:config", with split) or a folder of data files that
`datasets.load_dataset` reads (train.jsonl, test.jsonl, ...), or the bundled set BUNDLED (six topics x
50 short sentences, resources/icl_topics.jsonl, made by difflora.resources.topics).
"""

from __future__ import annotations

import math
import os
import random
import re
import string
from dataclasses import dataclass
from importlib import resources

from ..errors import UserError
from ..textfiles import read_jsonl

INSTRUCTION = ('Use the provided mapping from the text to label to assign a label to the text. '
               'Only output "label: {label}" and nothing else.')
ITEM = "{text}\nlabel: {label}"
ANSWER_PREFIX = "label:"
SEPARATOR = "\n"  # between the prompt and the answer prefix when there is no chat template
BUNDLED = "bundled:topics"


def load_examples(source: str = BUNDLED, text_field: str = "text", label_field: str = "label",
                  split: str = "train") -> list[dict]:
    """[{"text": str, "label": str}] from the bundled set, a JSONL file or a datasets name."""
    if source == BUNDLED:
        bundled = resources.files("difflora.resources").joinpath("icl_topics.jsonl").read_text()
        rows = _read_rows(source, bundled, "text", "label")
    elif os.path.isfile(source):
        rows = _read_rows(source, None, text_field, label_field)
    elif os.path.isdir(source):  # a folder of data files, read by `datasets` (split = file name)
        rows = _load_dataset(source, text_field, label_field, split)
    elif source.endswith((".jsonl", ".json")) or (os.sep in source and not _looks_like_hub_id(source)):
        raise UserError(f"ICL data file '{source}' does not exist")
    else:
        rows = _load_dataset(source, text_field, label_field, split)
    if not rows:
        raise UserError(f"ICL data '{source}' is empty: "
                        f"it needs {{\"{text_field}\": ..., \"{label_field}\": ...}} rows")
    if len({r["label"] for r in rows}) < 2:
        raise UserError(f"ICL data '{source}' has a single label: classification needs at least two")
    return rows


def _looks_like_hub_id(source: str) -> bool:
    return source.count("/") == 1 and not source.startswith((".", "/"))


def _read_rows(source: str, text: str | None, text_field: str, label_field: str) -> list[dict]:
    """{"text", "label"} rows of a JSONL file (text: its contents when already in memory)."""
    rows = []
    for where, row in read_jsonl(source, text):
        if not isinstance(row, dict) or text_field not in row or label_field not in row:
            raise UserError(f'{where}: expected an object with "{text_field}" and "{label_field}" '
                            "(choose other fields with --text-field/--label-field)")
        rows.append({"text": str(row[text_field]), "label": str(row[label_field])})
    return rows


def _load_dataset(source: str, text_field: str, label_field: str, split: str) -> list[dict]:
    from datasets import load_dataset

    name, _, config = source.partition(":")
    try:
        data = load_dataset(name, config or None, split=split)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        raise UserError(f"ICL data '{source}' is not a file, '{BUNDLED}' or a loadable datasets name "
                        f"({reason})") from None
    missing = [f for f in (text_field, label_field) if f not in data.column_names]
    if missing:
        raise UserError(f"datasets '{source}' has no column {missing[0]!r} (columns: {', '.join(data.column_names)}); "
                        "choose with --text-field/--label-field")
    return [{"text": str(r[text_field]), "label": str(r[label_field])} for r in data]


@dataclass
class IclSample:
    shots: int
    index: int
    prompt: str
    gold: str    # "label: N", the full expected answer line
    answer: str  # "N"
    label: str   # the class name behind N
    text: str    # the test text


def pick_test_example(rows: list[dict], index: int, seed: int = 0) -> dict:
    """Test example `index`: indices run round robin over the classes (in a seeded order) and,
    within a class, through its examples in a seeded order, so any n consecutive indices are
    balanced over classes."""
    rng = random.Random(f"{seed}-test")
    by_label = _by_label(rows)
    labels = sorted(by_label)
    rng.shuffle(labels)
    label = labels[index % len(labels)]
    queue = random.Random(f"{seed}-test-{label}").sample(by_label[label], len(by_label[label]))
    return queue[(index // len(labels)) % len(queue)]


def _by_label(rows: list[dict]) -> dict[str, list[dict]]:
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    return by_label


def split_by_label(rows: list[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Two disjoint halves of a pool, each class split in two (a seeded order; an odd count gives the
    extra example to the first half): one half for fine-tuning data, the other for evaluation."""
    first, second = [], []
    for label, examples in sorted(_by_label(rows).items()):
        shuffled = random.Random(f"{seed}-split-{label}").sample(examples, len(examples))
        half = (len(shuffled) + 1) // 2
        first += shuffled[:half]
        second += shuffled[half:]
    return first, second


def balanced_demos(pool: list[dict], shots: int, rng: random.Random) -> list[dict]:
    """HELMET's balance_labels: ceil(shots / classes) rounds of one example per class."""
    by_label = _by_label(pool)
    rounds = math.ceil(shots / len(by_label))
    columns = []
    for label in sorted(by_label):
        examples = by_label[label]
        picks = rng.sample(examples, min(rounds, len(examples)))
        while len(picks) < rounds:  # more rounds than examples: reuse, as HELMET does
            picks += rng.sample(examples, min(rounds - len(picks), len(examples)))
        columns.append(picks)
    demos = []
    for r in range(rounds):
        round_ = [column[r] for column in columns]
        rng.shuffle(round_)
        demos += round_
    return demos[:shots]


def make_sample(rows: list[dict], shots: int, index: int, seed: int = 0, test: dict | None = None,
                demo_pool: list[dict] | None = None) -> IclSample:
    """Test example `index` (balanced over classes, or `test`) with `shots` demonstrations."""
    if test is None:
        test = pick_test_example(rows, index, seed)
    pool = demo_pool if demo_pool is not None else [r for r in rows if r is not test]
    labels = sorted({r["label"] for r in rows} | {r["label"] for r in pool})
    rng = random.Random(f"{seed}-{shots}-{index}")
    ids = list(range(len(labels)))
    rng.shuffle(ids)
    label_id = dict(zip(labels, ids))
    demos = balanced_demos(pool, shots, rng) if shots > 0 else []
    context = "\n\n".join(ITEM.format(text=d["text"], label=label_id[d["label"]]) for d in demos)
    prompt = INSTRUCTION + " \n\n" + context + "\n\n" + test["text"]
    answer = str(label_id[test["label"]])
    return IclSample(shots, index, prompt, f"{ANSWER_PREFIX} {answer}", answer, test["label"], test["text"])


def parse_output(output: str, prefix: str = ANSWER_PREFIX) -> str:
    """HELMET's parse_output: the text after `prefix` if the output contains it, else the first line."""
    for pattern in (re.compile(f"(?:{re.escape(prefix)})(.*)(?:\n|$)", re.IGNORECASE), re.compile(r"^(.*)(?:\n|$)")):
        match = pattern.search(output)
        if match is not None:
            return re.sub(f"^{re.escape(prefix)}", "", match[1].strip(), flags=re.IGNORECASE).strip()
    return ""


def normalize(text: str) -> str:
    """SQuAD answer normalisation (lower case, no punctuation, articles or extra spaces), as HELMET."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def score(output: str, gold: str) -> float:
    """Exact match of the parsed output with the gold id (gold given as "N" or "label: N")."""
    answer = gold[len(ANSWER_PREFIX):] if gold.lower().startswith(ANSWER_PREFIX) else gold
    return float(normalize(parse_output(output)) == normalize(answer))
