"""Chat conversations the demo generates from a seed, shared by the fine-tuning data (instructions.py)
and the base model's pretraining corpus (base/corpus.py): a retrieval answer in RULER's format, an
in-context classification conversation in HELMET's, and short questions with one right answer.
"""

from __future__ import annotations

import random

from ..evaluation import icl, nih

CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Egypt": "Cairo",
            "Peru": "Lima", "Kenya": "Nairobi", "Canada": "Ottawa", "Norway": "Oslo", "Chile": "Santiago"}
COLOURS = {"the sky": "blue", "grass": "green", "snow": "white", "coal": "black", "a banana": "yellow",
           "a tomato": "red", "an orange": "orange", "a plum": "purple"}


def answer(sample: nih.Sample) -> str:
    """A needle question's answer in RULER's format: the sample's answer prefix, then its values."""
    return f"{sample.answer_prefix.strip()} {', '.join(sample.gold)}."


def icl_conversation(rng: random.Random, rows: list[dict], max_shots: int) -> list[dict]:
    """One in-context classification prompt (2 to max_shots demonstrations) and its answer."""
    sample = icl.make_sample(rows, rng.randint(2, max_shots), rng.randrange(1 << 30), seed=rng.randrange(1 << 30))
    return [{"role": "user", "content": sample.prompt}, {"role": "assistant", "content": sample.gold}]


def short_answer_conversation(rng: random.Random) -> list[dict]:
    """A sum of two numbers, a capital or a colour, asked and answered in one sentence."""
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        return _qa(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.")
    if kind == 1:
        country = rng.choice(list(CAPITALS))
        return _qa(f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}.")
    thing = rng.choice(list(COLOURS))
    return _qa(f"What colour is {thing}?", f"{thing[0].upper() + thing[1:]} is {COLOURS[thing]}.")


def _qa(question: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
