"""Needle-in-a-haystack in the RULER/HELMET format: MK-2, MK-3 and MV.

Templates (spec section 10):
  needle  "One of the special magic {type} for {key} is: {value}."
  prompt  "Some special magic {type} are hidden within the following text. Make sure to memorize it.
           I will quiz you about the {type} afterwards.\n{context}\nWhat are all the special magic
           {type} for {query} mentioned in the provided text?"
  answer prefix " The special magic {type} for {query} mentioned in the provided text are"
With a single answer: "Some"->"A", "are all"->"is", "are"->"is" (in that order) and the type loses its "s".
Score: the fraction of gold values found (case-insensitive substring) in the output, averaged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..errors import UserError
from . import haystack

NEEDLE = "One of the special magic {type} for {key} is: {value}."
PROMPT = ("Some special magic {type} are hidden within the following text. Make sure to memorize it. "
          "I will quiz you about the {type} afterwards.\n{context}\n"
          "What are all the special magic {type} for {query} mentioned in the provided text?")
ANSWER_PREFIX = " The special magic {type} for {query} mentioned in the provided text are"


@dataclass(frozen=True)
class Task:
    name: str
    key_kind: str    # "word" or "uuid"
    value_kind: str  # "number" or "uuid"
    type_plural: str
    haystack: str    # "needles" (distractor needles), "noise", "essay"
    n_values: int = 1


TASKS = {
    "mk2": Task("mk2", "word", "number", "numbers", "needles"),
    "mk3": Task("mk3", "uuid", "uuid", "uuids", "needles"),
    "mv": Task("mv", "word", "number", "numbers", "essay", n_values=4),
}


def singular(text: str) -> str:
    """The spec's single-answer rewrite, applied in its order."""
    return text.replace("Some", "A").replace("are all", "is").replace("are", "is")


def templates(task: Task) -> tuple[str, str, str]:
    """(needle, prompt, answer prefix) with {type} filled in for this task. As in RULER, the needle
    keeps the plural type; only the question side is rewritten for a single answer."""
    needle = NEEDLE.replace("{type}", task.type_plural)
    if task.n_values == 1:
        kind = task.type_plural[:-1]
        return needle, singular(PROMPT).replace("{type}", kind), singular(ANSWER_PREFIX).replace("{type}", kind)
    kind = task.type_plural
    return needle, PROMPT.replace("{type}", kind), ANSWER_PREFIX.replace("{type}", kind)


@dataclass
class Sample:
    task: str
    length: int
    index: int
    prompt: str          # the user prompt (context + question)
    answer_prefix: str
    gold: list[str]
    needle_text: list[str] = field(default_factory=list)  # the needle sentences, for attention analysis
    depth: float = 0.0


def _key(task: Task, rng):
    return haystack.word_key(rng) if task.key_kind == "word" else haystack.uuid_value(rng)


def _value(task: Task, rng):
    return haystack.number_value(rng) if task.value_kind == "number" else haystack.uuid_value(rng)


def _filler(task: Task, n: int, rng, query: str) -> list[str]:
    if task.haystack == "noise":
        return haystack.noise_sentences(n)
    if task.haystack == "essay":
        return haystack.essay_sentences(n, rng)
    needle, _, _ = templates(task)
    out = []
    while len(out) < n:
        key = _key(task, rng)
        if key != query:
            out.append(needle.format(key=key, value=_value(task, rng)))
    return out


def _compose(task: Task, rng: random.Random):
    needle, prompt_tpl, prefix_tpl = templates(task)
    query = _key(task, rng)
    gold = [_value(task, rng) for _ in range(task.n_values)]
    needles = [needle.format(key=query, value=v) for v in gold]
    depth = rng.random()

    def build(pool, n):
        units = pool[:n]
        for i, text in enumerate(needles):  # needles spread around the chosen depth
            units.insert(min(len(units), int(depth * len(units)) + i), text)
        return prompt_tpl.format(context=" ".join(units), query=query)

    return query, gold, needles, depth, prefix_tpl.format(query=query), build


def random_sample(task_name: str, n_units: int, rng: random.Random) -> Sample:
    """A sample with n_units haystack units (no token budget): for generating training data."""
    task = TASKS[task_name]
    query, gold, needles, depth, prefix, build = _compose(task, rng)
    prompt = build(_filler(task, n_units, rng, query), n_units)
    return Sample(task_name, -1, -1, prompt, prefix, gold, needles, round(depth, 3))


def make_sample(task_name: str, length: int, index: int, count_tokens, seed: int = 0) -> Sample:
    """One sample whose full prompt is at most `length` tokens by `count_tokens` (the model's tokenizer)."""
    task = TASKS[task_name]
    rng = random.Random(f"{seed}-{task_name}-{length}-{index}")
    query, gold, needles, depth, prefix, compose = _compose(task, rng)
    pool = _filler(task, 4096, rng, query)

    def build(n):
        return compose(pool, n)

    empty = count_tokens(build(0) + prefix)
    if empty > length:
        raise UserError(f"context length {length} is too short for a {task_name} prompt "
                        f"({empty} tokens without any haystack)")
    per_unit = max(1.0, (count_tokens(build(8) + prefix) - empty) / 8)
    lo, hi = 0, min(len(pool), int(1.5 * (length - empty) / per_unit) + 8)
    while lo < hi:  # the most haystack that fits
        mid = (lo + hi + 1) // 2
        if count_tokens(build(mid) + prefix) <= length:
            lo = mid
        else:
            hi = mid - 1
    return Sample(task_name, length, index, build(lo), prefix, gold, needles, round(depth, 3))


def score(output: str, gold: list[str]) -> float:
    """Fraction of the gold values found in the output (case-insensitive substring)."""
    text = output.lower()
    return sum(v.lower() in text for v in gold) / len(gold)
