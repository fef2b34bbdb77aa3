"""The pretraining corpus of the demo's default base model, generated from a seed.

A tiny model pretrained for a few CPU minutes must already do what an instruction-tuned base does
in the paper: retrieve facts from a context in the RULER format, follow in-context label mappings
and answer short questions in the chat format. So the corpus is mostly conversations:

- retrieval: a context of key-value needles ("One of the special magic numbers for X is: N.")
  among distractor needles or prose, then several questions about them, answered in RULER's
  answer format. Several questions per context give several supervised answers per context token,
  which is what makes retrieval learnable in minutes; the first question is the exact RULER prompt.
- in-context classification (the HELMET format, few demonstrations),
- short question answering,
- topical paragraphs (several sentences of one ICL topic, learned on every token) and ICL
  conversations whose labels are the topic names: the topical knowledge a real pretrained model
  brings to in-context classification (that a chef and a curry go together), which the random-id
  conversations alone never teach (their sentences are prompts, not learned),
- and plain prose-like filler.

Conversations are learned on their answers only (the random keys and values of the distractors are
unpredictable, and their loss would drown the retrieval signal); prose is learned on every token.
Deterministic in the seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..evaluation import haystack, icl, nih

# the follow-up question and its answer: RULER's single-answer templates with the type singular
FOLLOW_UP = "What is the special magic {kind} for {key} mentioned in the provided text?"
FOLLOW_UP_ANSWER = "The special magic {kind} for {key} mentioned in the provided text is {value}."
FACT = re.compile(r"special magic (\w+) for (\S+) is: (\S+?)\.(?=\s|$)")

CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Egypt": "Cairo",
            "Peru": "Lima", "Kenya": "Nairobi", "Canada": "Ottawa", "Norway": "Oslo", "Chile": "Santiago"}
COLOURS = {"the sky": "blue", "grass": "green", "snow": "white", "coal": "black", "a banana": "yellow",
           "a tomato": "red", "an orange": "orange", "a plum": "purple"}


RETRIEVAL_KINDS = ("mk2:needles", "mk2:needles", "mk2:needles", "mk2:essay", "mv:essay", "mk3:needles")


@dataclass(frozen=True)
class CorpusMix:
    """What the pretraining corpus holds: shares of each kind of document and their sizes."""

    retrieval: float = 0.75     # share of retrieval conversations (the rest below, then prose)
    recall: float = 0.0         # share of recall drills (needles stated, then restated)
    icl: float = 0.15
    short_answer: float = 0.05
    topic_prose: float = 0.0    # topical paragraphs (sentences of one ICL topic), learned on every token
    named_icl: float = 0.0      # ICL conversations labelled with the topic names instead of random ids
    max_needles: int = 6        # haystack units per retrieval context (needles or prose sentences)
    questions: int = 4          # questions per retrieval context (each about another fact of the context)
    max_shots: int = 12
    retrieval_kinds: tuple[str, ...] = RETRIEVAL_KINDS  # "task:haystack" drawn uniformly per retrieval document


def answer(sample: nih.Sample) -> str:
    return f"{sample.answer_prefix.strip()} {', '.join(sample.gold)}."


def retrieval_conversation(rng: random.Random, max_needles: int, questions: int,
                           kinds: tuple[str, ...] = RETRIEVAL_KINDS) -> list[dict]:
    return retrieval_document(rng, max_needles, questions, kinds)["messages"]


def retrieval_document(rng: random.Random, max_needles: int, questions: int,
                       kinds: tuple[str, ...] = RETRIEVAL_KINDS) -> dict:
    """A RULER prompt over a context of needles, answered, then up to questions-1 follow-up
    questions about other facts stated in the same context; "values" lists every value answered
    (the base model learns retrieval answers from their value on, see base_model.tokenize_document)."""
    task, kind = rng.choice(kinds).split(":")
    units = rng.randint(1, max_needles if task != "mk3" else max(1, max_needles // 3))
    sample = nih.random_sample(task, units, rng, haystack_kind=kind)
    messages = [{"role": "user", "content": sample.prompt}, {"role": "assistant", "content": answer(sample)}]
    values = list(sample.gold)
    facts = [f for f in FACT.findall(sample.prompt) if f[1] != sample.query]
    for plural, key, value in rng.sample(facts, min(questions - 1, len(facts))):
        kind = plural[:-1]
        messages += [{"role": "user", "content": FOLLOW_UP.format(kind=kind, key=key)},
                     {"role": "assistant", "content": FOLLOW_UP_ANSWER.format(kind=kind, key=key, value=value)}]
        values.append(value)
    return {"messages": messages, "values": values}


def recall_drill(rng: random.Random, max_needles: int) -> str:
    """Needles, then the same needles restated in another order: learned on every token, each
    restated value is a retrieval (find the key's earlier statement, copy its value). A dense
    signal for the copying circuits that needle retrieval needs."""
    kind = rng.choice(("numbers", "numbers", "numbers", "uuids"))
    n = rng.randint(1, max_needles if kind == "numbers" else max(1, max_needles // 3))
    key, value = (haystack.word_key, haystack.number_value) if kind == "numbers" else (haystack.uuid_value,) * 2
    keys = list(dict.fromkeys(key(rng) for _ in range(n)))
    needles = [nih.NEEDLE.format(type=kind, key=k, value=value(rng)) for k in keys]
    again = rng.sample(needles, len(needles))
    return "\n".join(needles) + "\n\n" + "\n".join(again)


def icl_conversation(rng: random.Random, rows: list[dict], max_shots: int) -> list[dict]:
    sample = icl.make_sample(rows, rng.randint(2, max_shots), rng.randrange(1 << 30), seed=rng.randrange(1 << 30))
    return [{"role": "user", "content": sample.prompt}, {"role": "assistant", "content": sample.gold}]


def named_icl_conversation(rng: random.Random, rows: list[dict], max_shots: int) -> list[dict]:
    """An ICL conversation in the evaluation's format whose labels are the class names themselves
    (a fixed mapping the model can learn as knowledge, unlike the per-prompt random ids)."""
    shots = rng.randint(2, max_shots)
    test = rng.choice(rows)
    demos = icl.balanced_demos([r for r in rows if r is not test], shots, rng)
    context = "\n\n".join(icl.ITEM.format(text=d["text"], label=d["label"]) for d in demos)
    prompt = icl.INSTRUCTION + " \n\n" + context + "\n\n" + test["text"]
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"{icl.ANSWER_PREFIX} {test['label']}"}]


def topic_paragraph(rng: random.Random, rows: list[dict], sentences: int) -> str:
    """`sentences` sentences of one topic of the ICL set, in a random order."""
    label = rng.choice(sorted({r["label"] for r in rows}))
    pool = [r["text"] for r in rows if r["label"] == label]
    return " ".join(rng.sample(pool, min(sentences, len(pool))))


def short_answer_conversation(rng: random.Random) -> list[dict]:
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


def prose(rng: random.Random, sentences: int) -> str:
    return " ".join(haystack.essay_sentences(sentences, rng))


def pretraining_documents(n: int, seed: int, mix: CorpusMix = CorpusMix()) -> list[dict | str]:
    """n documents: conversations as {"messages": [...]} (learned on answers) and prose strings."""
    rng = random.Random(seed)
    rows = icl.load_examples()
    docs: list[dict | str] = []
    for _ in range(n):
        r = rng.random()
        if r < mix.retrieval:
            docs.append(retrieval_document(rng, mix.max_needles, mix.questions, mix.retrieval_kinds))
        elif r < mix.retrieval + mix.recall:
            docs.append(recall_drill(rng, mix.max_needles))
        elif r < mix.retrieval + mix.recall + mix.icl:
            docs.append({"messages": icl_conversation(rng, rows, mix.max_shots)})
        elif r < mix.retrieval + mix.recall + mix.icl + mix.short_answer:
            docs.append({"messages": short_answer_conversation(rng)})
        elif r < mix.retrieval + mix.recall + mix.icl + mix.short_answer + mix.topic_prose:
            docs.append(topic_paragraph(rng, rows, rng.randint(3, 8)))
        elif r < mix.retrieval + mix.recall + mix.icl + mix.short_answer + mix.topic_prose + mix.named_icl:
            docs.append({"messages": named_icl_conversation(rng, rows, mix.max_shots)})
        else:
            docs.append(prose(rng, rng.randint(4, 16)))
    return docs


def key_words() -> list[str]:
    """Every word key the needle generator can draw (RULER's adjective-noun pairs)."""
    return [f"{a}-{n}" for a in haystack.ADJECTIVES for n in haystack.NOUNS]


def tokenizer_texts(seed: int, n: int = 300, keys: bool = False) -> list[str]:
    """Text to train the tokenizer on: every kind of document, a few hundred of each. keys: also every
    word key, often enough that BPE (with compound words) makes each one a single token, so a key is
    matched as one token, not as a pair of tokens that other keys share halves of."""
    rng = random.Random(seed)
    rows = icl.load_examples()
    texts = [" " + " ".join(key_words())] * 40 if keys else []
    for _ in range(n):
        conversation = (retrieval_conversation(rng, 6, 2) + icl_conversation(rng, rows, 6)
                        + short_answer_conversation(rng))
        texts += [m["content"] for m in conversation]
        texts.append(prose(rng, 4))
    return texts
