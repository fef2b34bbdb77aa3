"""The bundled many-shot ICL data set (icl_topics.jsonl): short sentences in six topics, made here
from a seeded grammar so that `difflora eval icl` runs offline. Every subject/verb/object choice
of a topic makes a plausible sentence about that topic.

Regenerate (the file is checked against this function by the tests):
    python -m difflora.resources.topics
"""

from __future__ import annotations

import json
import random
from pathlib import Path

GRAMMAR: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "science": (
        ("The research team", "A young chemist", "Our laboratory", "The physicist", "A biology student",
         "The observatory", "The geologist"),
        ("measured", "published a study of", "could not explain", "built a model of", "tested a theory about",
         "recorded data on", "discovered"),
        ("the magnetic field", "a new protein", "the distant galaxy", "the speed of sound", "a rare mineral",
         "the cell membrane", "the chemical reaction"),
    ),
    "music": (
        ("The orchestra", "A jazz pianist", "Our school choir", "The drummer", "A street violinist",
         "The rock band", "The composer"),
        ("rehearsed", "performed", "recorded", "wrote a new arrangement of", "played an encore of",
         "practised", "sang"),
        ("the opening overture", "an old folk song", "the slow ballad", "a new symphony", "the national anthem",
         "a lively waltz", "the final chorus"),
    ),
    "sports": (
        ("The home team", "A young sprinter", "The goalkeeper", "Our captain", "The tennis champion",
         "The cycling club", "The coach"),
        ("won", "lost", "trained hard for", "was injured during", "celebrated after", "was late for",
         "prepared tactics for"),
        ("the league match", "the relay race", "the marathon", "the cup final", "the penalty shootout",
         "the doubles tournament", "the mountain stage"),
    ),
    "travel": (
        ("The tourists", "A backpacker", "Our family", "The tour guide", "A business traveller",
         "The cruise passengers", "My cousin"),
        ("booked a trip to", "took the night train to", "got lost on the way to", "flew to",
         "bought a map of", "sent postcards from", "missed the ferry to"),
        ("the old harbour", "the border town", "the ancient ruins", "the island resort", "the capital city",
         "the mountain village", "the coastal road"),
    ),
    "food": (
        ("The chef", "A home cook", "The bakery", "Our grandmother", "The new restaurant", "A food critic",
         "The street vendor"),
        ("roasted", "served", "baked", "seasoned", "tasted", "prepared", "sold"),
        ("the garlic bread", "a spicy curry", "the apple pie", "fresh pasta", "a bowl of soup",
         "the grilled fish", "a chocolate cake"),
    ),
    "weather": (
        ("A cold front", "Heavy rain", "The storm", "Thick fog", "A heat wave", "Strong wind", "Light snow"),
        ("is expected over", "moved across", "caused delays in", "settled over", "flooded", "hit",
         "was forecast for"),
        ("the northern coast", "the city centre", "the farmland", "the mountain passes", "the river valley",
         "the airport", "the southern hills"),
    ),
}

PATH = Path(__file__).with_name("icl_topics.jsonl")


def generate_topics(per_topic: int = 50, seed: int = 0) -> list[dict]:
    """per_topic distinct sentences per topic, interleaved in a seeded order."""
    rng = random.Random(seed)
    rows = []
    for label, (subjects, verbs, objects) in GRAMMAR.items():
        combos = [(s, v, o) for s in subjects for v in verbs for o in objects]
        for s, v, o in rng.sample(combos, per_topic):
            rows.append({"text": f"{s} {v} {o}.", "label": label})
    rng.shuffle(rows)
    return rows


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    PATH.write_text(to_jsonl(generate_topics()))
    print(f"wrote {PATH}")
