"""Needle-in-a-haystack samples in the RULER/HELMET format: MK-2, MK-3 and MV (the task that runs
them on models is tasks/needles.py).

Templates (RULER's niah; docs/evaluation.md):
  needle  "One of the special magic {type} for {key} is: {value}."
  prompt  "Some special magic {type} are hidden within the following text. Make sure to memorize it.
           I will quiz you about the {type} afterwards.\\n{context}\\nWhat are all the special magic
           {type} for {query} mentioned in the provided text?"
  answer prefix " The special magic {type} for {query} mentioned in the provided text are"
With a single answer: "Some"->"A", "are all"->"is", "are"->"is" (in that order) and the type loses
its "s"; as in RULER the needles themselves keep the plural type.

Tasks (RULER's niah_multikey_2, niah_multikey_3, niah_multivalue):
  mk2  word keys, 7-digit number values, haystack of distractor needles
  mk3  uuid keys and uuid values, haystack of distractor needles
  mv   word key with 4 number values, essay haystack
Any task can be run on another haystack ("needles", "noise", "essay"; see haystack.py).

Layout as in RULER: needles/noise haystacks are one unit per line with the needles at random
positions; the essay haystack is running prose with the needles at distinct depths from DEPTHS.
The context is grown until the rendered prompt (chat template and answer prefix included) is as
long as possible without exceeding the requested length in the model's own tokens.
Score: the fraction of gold values found (case-insensitive substring) in the output.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UserError
from . import haystack

NEEDLE = "One of the special magic {type} for {key} is: {value}."
PROMPT = ("Some special magic {type} are hidden within the following text. Make sure to memorize it. "
          "I will quiz you about the {type} afterwards.\n{context}\n"
          "What are all the special magic {type} for {query} mentioned in the provided text?")
ANSWER_PREFIX = " The special magic {type} for {query} mentioned in the provided text are"
HAYSTACKS = ("needles", "noise", "essay")


@dataclass(frozen=True)
class Task:
    name: str
    key_kind: str    # "word" or "uuid"
    value_kind: str  # "number" or "uuid"
    type_plural: str
    haystack: str    # default haystack: "needles", "noise" or "essay"
    n_values: int = 1


# The needle tasks, by name: the one list of them (the CLI's choices, the task's defaults, the demo's).
NEEDLE_TASKS = {
    "mk2": Task("mk2", "word", "number", "numbers", "needles"),
    "mk3": Task("mk3", "uuid", "uuid", "uuids", "needles"),
    "mv": Task("mv", "word", "number", "numbers", "essay", n_values=4),
}


def singular(text: str) -> str:
    """RULER's single-answer rewrite, applied in its order (docs/evaluation.md)."""
    return text.replace("Some", "A").replace("are all", "is").replace("are", "is")


def templates(task: Task) -> tuple[str, str, str]:
    """(needle, prompt, answer prefix) with {type} filled in for this task."""
    needle = NEEDLE.replace("{type}", task.type_plural)
    if task.n_values == 1:
        kind = task.type_plural[:-1]
        return needle, singular(PROMPT).replace("{type}", kind), singular(ANSWER_PREFIX).replace("{type}", kind)
    kind = task.type_plural
    return needle, PROMPT.replace("{type}", kind), ANSWER_PREFIX.replace("{type}", kind)


@dataclass
class Sample:
    task: str
    length: int          # the requested length in tokens (-1 for samples made by unit count)
    index: int
    prompt: str          # the user prompt (instruction + context + question)
    answer_prefix: str
    gold: list[str]
    needle_text: list[str] = field(default_factory=list)  # the needle sentences, for attention analysis
    depth: list[float] = field(default_factory=list)      # where each needle sits (0 = start, 1 = end)
    haystack: str = ""
    query: str = ""
    haystack_units: int = 0


def check_task(name: str, haystack_kind: str | None = None) -> Task:
    if name not in NEEDLE_TASKS:
        raise UserError(f"unknown needle task '{name}': choose from {', '.join(NEEDLE_TASKS)}")
    if haystack_kind is not None and haystack_kind not in HAYSTACKS:
        raise UserError(f"unknown haystack '{haystack_kind}': choose from {', '.join(HAYSTACKS)}")
    return NEEDLE_TASKS[name]


def _key(task: Task, rng: random.Random) -> str:
    return haystack.word_key(rng) if task.key_kind == "word" else haystack.uuid_value(rng)


def _value(task: Task, rng: random.Random) -> str:
    return haystack.number_value(rng) if task.value_kind == "number" else haystack.uuid_value(rng)


class _Filler:
    """The haystack units, drawn lazily from their own stream so that the first n units are the
    same whatever n the length search asks for."""

    def __init__(self, task: Task, kind: str, rng: random.Random, query: str):
        self.task, self.kind, self.rng, self.query = task, kind, rng, query
        self.units: list[str] = []

    def take(self, n: int) -> list[str]:
        while len(self.units) < n:
            self.units += self._draw(max(64, n - len(self.units)))
        return self.units[:n]

    def _draw(self, n: int) -> list[str]:
        if self.kind == "noise":
            return haystack.noise_sentences(n)
        if self.kind == "essay":
            return haystack.essay_sentences(n, self.rng)
        needle = NEEDLE.replace("{type}", self.task.type_plural)
        out = []
        while len(out) < n:
            key = _key(self.task, self.rng)
            if key != self.query:  # a distractor never answers the question
                out.append(needle.format(key=key, value=_value(self.task, self.rng)))
        return out


@dataclass
class _Draw:
    """Everything random about a sample except the haystack size."""

    task: Task
    kind: str
    query: str
    gold: list[str]
    needles: list[str]
    depths: list[float]
    filler: _Filler

    def prompt(self, n_units: int) -> str:
        _, prompt, _ = templates(self.task)
        units = list(self.filler.take(n_units))
        positions = [min(len(units), int(d * len(units))) for d in self.depths]
        for pos, needle in sorted(zip(positions, self.needles), key=lambda p: p[0], reverse=True):
            units.insert(pos, needle)
        context = " ".join(units) if self.kind == "essay" else "\n".join(units)
        return prompt.format(context=context, query=self.query)

    def answer_prefix(self) -> str:
        return templates(self.task)[2].format(query=self.query)


def _draw(task: Task, kind: str, rng: random.Random) -> _Draw:
    needle = templates(task)[0]
    query = _key(task, rng)
    gold = [_value(task, rng) for _ in range(task.n_values)]
    needles = [needle.format(key=query, value=v) for v in gold]
    rng.shuffle(needles)  # RULER shuffles the needles of one key before inserting them
    if kind == "essay":
        depths = [d / 100 for d in rng.sample(haystack.DEPTHS, len(needles))]
    else:
        depths = [rng.random() for _ in needles]
    filler = _Filler(task, kind, random.Random(rng.getrandbits(64)), query)
    return _Draw(task, kind, query, gold, needles, depths, filler)


def random_sample(task_name: str, n_units: int, rng: random.Random, haystack_kind: str | None = None) -> Sample:
    """A sample with n_units haystack units (no token budget): for generating training data."""
    task = check_task(task_name, haystack_kind)
    draw = _draw(task, haystack_kind or task.haystack, rng)
    return Sample(task_name, -1, -1, draw.prompt(n_units), draw.answer_prefix(), draw.gold, draw.needles,
                  [round(d, 3) for d in draw.depths], draw.kind, draw.query, n_units)


def make_sample(task_name: str, length: int, index: int, measure: Callable[[str, str], int], seed: int = 0,
                haystack_kind: str | None = None) -> Sample:
    """Sample `index` of a task at `length` tokens: the largest haystack whose rendered prompt
    (measure(prompt, answer_prefix), the model's tokenizer) is at most `length` tokens.
    Deterministic in (seed, task, length, index)."""
    task = check_task(task_name, haystack_kind)
    draw = _draw(task, haystack_kind or task.haystack, random.Random(f"{seed}-{task_name}-{length}-{index}"))
    prefix = draw.answer_prefix()

    def tokens(n: int) -> int:
        return measure(draw.prompt(n), prefix)

    empty = tokens(0)
    if empty > length:
        raise UserError(f"context length {length} is too short for a {task_name} prompt "
                        f"({empty} tokens without any haystack): choose longer lengths")
    n_units = _largest_fitting(tokens, length, empty)
    return Sample(task_name, length, index, draw.prompt(n_units), prefix, draw.gold, draw.needles,
                  [round(d, 3) for d in draw.depths], draw.kind, draw.query, n_units)


def _largest_fitting(tokens: Callable[[int], int], length: int, empty: int) -> int:
    """The largest n with tokens(n) <= length (tokens grows with n; tokens(0) = empty <= length)."""
    probe = 16
    per_unit = max(1.0, (tokens(probe) - empty) / probe)
    hi = int(1.2 * (length - empty) / per_unit) + probe
    while tokens(hi) <= length:  # the estimate was short: grow until it overshoots
        hi *= 2
    lo = 0
    while lo < hi - 1:  # invariant: tokens(lo) <= length < tokens(hi)
        mid = (lo + hi) // 2
        if tokens(mid) <= length:
            lo = mid
        else:
            hi = mid
    return lo


def score(output: str, gold: list[str]) -> float:
    """Fraction of the gold values found in the output (case-insensitive substring)."""
    text = output.lower()
    return sum(v.lower() in text for v in gold) / len(gold)
