"""The text that needles hide in, and the random keys and values of the needles.

Three haystacks, as in RULER:
- "needles": distractor needles (the same needle sentence with other keys and values), one per line;
- "noise": RULER's repeated noise text (NOISE), one copy per line;
- "essay": prose. RULER uses Paul Graham's essays; this package cannot ship them, so essay-style
  haystacks are sentences from a small seeded grammar (essay_sentences). This is a deliberate,
  documented deviation: the filler is grammatical English but far less varied than real essays.
Keys and values follow RULER: words are adjective-noun pairs, numbers have 7 digits, uuids are uuid4.
"""

from __future__ import annotations

import random
import uuid

# RULER inserts multi-value needles into essays at distinct depths drawn from these 40 percentages.
DEPTHS = tuple(round(i * 100 / 39) for i in range(40))

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

ADJECTIVES = ("amber", "brave", "calm", "dusty", "eager", "fancy", "gentle", "hollow", "icy", "jolly", "kind",
              "lively", "misty", "noble", "odd", "proud", "quiet", "rapid", "silent", "tidy", "urban", "vivid",
              "wild", "young", "zesty", "bold", "crisp", "deep", "early", "faint")
NOUNS = ("apple", "bridge", "castle", "desert", "engine", "forest", "garden", "harbor", "island", "jacket",
         "kettle", "lantern", "meadow", "needle", "orchard", "pencil", "quarry", "river", "saddle", "tower",
         "valley", "wagon", "window", "yard", "zebra", "anchor", "basket", "candle", "dragon", "falcon")

_SUBJECTS = ("The old town", "A careful writer", "The river", "Every summer the village", "The committee",
             "A young engineer", "The long road", "The museum", "Our neighbour", "The small company")
_VERBS = ("remembered", "described", "changed", "followed", "built", "questioned", "welcomed", "measured",
          "painted", "explained")
_OBJECTS = ("the quiet harbour", "a forgotten promise", "the shape of the hills", "an unusual plan",
            "the price of bread", "a letter from the coast", "the rules of the game", "the colour of the sky",
            "a story about the war", "the path through the forest")
_TAILS = ("before the winter came", "with great patience", "for many years", "without telling anyone",
          "as the evening fell", "in a surprising way", "after a long debate", "during the market day")


def noise_sentences(n: int) -> list[str]:
    return [NOISE] * n


def essay_sentences(n: int, rng: random.Random) -> list[str]:
    """Prose-like filler: grammatical, varied, meaningless sentences."""
    return [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
            for _ in range(n)]


def word_key(rng: random.Random) -> str:
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"


def number_value(rng: random.Random) -> str:
    return str(rng.randint(1_000_000, 9_999_999))


def uuid_value(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
