"""Text the project generates for its default model: pretraining documents and chat-format
instruction data. Everything is deterministic from a seed.

The base model's corpus teaches it what an instruction-tuned base knows: RULER-format retrieval
of key-value facts hidden among distractors (so it retrieves at short context, with the noisy
attention DiffLoRA is meant to clean up), in-context classification with arbitrary label ids,
short answers, and prose-like filler.
"""

from __future__ import annotations

import random
import re

from ..evaluation import haystack, icl, nih

CITIES = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Egypt": "Cairo",
          "Peru": "Lima", "Kenya": "Nairobi", "Canada": "Ottawa", "Norway": "Oslo", "Chile": "Santiago"}
COLOURS = {"the sky": "blue", "grass": "green", "snow": "white", "coal": "black", "a banana": "yellow",
           "a tomato": "red", "an orange": "orange", "a plum": "purple"}


def retrieval_turn(rng: random.Random, max_units: int, follow_ups: int = 0) -> list[dict]:
    """A RULER-format question about a context, answered; then up to `follow_ups` more questions
    about other facts stated in the same context (more retrieval signal per token of context)."""
    task = rng.choice(("mk2", "mk2", "mk3", "mv"))
    sample = nih.random_sample(task, rng.randint(2, max_units if task != "mk3" else max(2, max_units // 2)), rng)
    answer = sample.answer_prefix.lstrip() + " " + ", ".join(sample.gold) + "."
    messages = [{"role": "user", "content": sample.prompt}, {"role": "assistant", "content": answer}]
    if task == "mv":
        return messages
    facts = re.findall(r"special magic \w+ for (\S+) is: (\S+?)\.(?=\s|$)", sample.prompt)
    kind = nih.TASKS[task].type_plural[:-1]
    for key, value in rng.sample(facts, min(follow_ups, len(facts))):
        messages += [{"role": "user", "content": f"What is the special magic {kind} for {key} mentioned in the provided text?"},
                     {"role": "assistant", "content": f"The special magic {kind} for {key} mentioned in the provided text is {value}."}]
    return messages


def icl_turn(rng: random.Random, rows: list[dict], max_shots: int) -> list[dict]:
    sample = icl.make_sample(rows, rng.randint(3, max_shots), rng.randrange(1 << 30), seed=rng.randrange(1 << 30))
    return [{"role": "user", "content": sample.prompt}, {"role": "assistant", "content": sample.gold}]


def short_answer_turn(rng: random.Random) -> list[dict]:
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        return _qa(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.")
    if kind == 1:
        country = rng.choice(list(CITIES))
        return _qa(f"What is the capital of {country}?", f"The capital of {country} is {CITIES[country]}.")
    thing = rng.choice(list(COLOURS))
    return _qa(f"What colour is {thing}?", f"{thing[0].upper() + thing[1:]} is {COLOURS[thing]}.")


def _qa(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def prose(rng: random.Random, sentences: int) -> str:
    return " ".join(haystack.essay_sentences(sentences, rng))


def pretraining_documents(n: int, seed: int, max_units: int, max_shots: int) -> list[dict | str]:
    """Conversations ({"messages": [...]}: loss on the answers) and prose strings (loss on all)."""
    rng = random.Random(seed)
    rows = icl.load_examples()
    docs = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            docs.append({"messages": retrieval_turn(rng, max_units, follow_ups=3)})
        elif r < 0.8:
            docs.append({"messages": icl_turn(rng, rows, max_shots)})
        elif r < 0.9:
            docs.append({"messages": short_answer_turn(rng)})
        else:
            docs.append(prose(rng, rng.randint(4, 16)))
    return docs


def tokenizer_texts(seed: int, n: int = 400) -> list[str]:
    rng = random.Random(seed)
    rows = icl.load_examples()
    texts = []
    for _ in range(n):
        texts += [m["content"] for m in retrieval_turn(rng, 6) + icl_turn(rng, rows, 6) + short_answer_turn(rng)]
        texts.append(prose(rng, 4))
    return texts


def instruction_conversations(n: int, seed: int, max_units: int, max_shots: int) -> list[dict]:
    """Chat-format fine-tuning rows ({"messages": [...]}) for `difflora train`: retrieval over
    longer contexts with noise/essay haystacks too, in-context classification, short answers."""
    rng = random.Random(seed)
    rows = icl.load_examples()
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            messages = retrieval_turn(rng, max_units)
        elif r < 0.8:
            messages = icl_turn(rng, rows, max_shots)
        else:
            messages = short_answer_turn(rng)
        if rng.random() < 0.3:
            messages = [{"role": "system", "content": "You are a careful assistant. Answer exactly."}] + messages
        out.append({"messages": messages})
    return out
