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
- and plain prose-like filler.

Conversations are learned on their answers only (the random keys and values of the distractors are
unpredictable, and their loss would drown the retrieval signal); prose is learned on every token.
Deterministic in the seed. (Document kinds that no shipped recipe uses, such as recall drills and
topical paragraphs, live with the probes in benchmarks/probe_corpus.py.)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ...evaluation import haystack, icl, nih
from ..conversations import answer, icl_conversation, short_answer_conversation

# the follow-up question and its answer: RULER's single-answer templates with the type singular
FOLLOW_UP = "What is the special magic {kind} for {key} mentioned in the provided text?"
FOLLOW_UP_ANSWER = "The special magic {kind} for {key} mentioned in the provided text is {value}."
FACT = re.compile(r"special magic (\w+) for (\S+) is: (\S+?)\.(?=\s|$)")

RETRIEVAL_KINDS = ("mk2:needles", "mk2:needles", "mk2:needles", "mk2:essay", "mv:essay", "mk3:needles")


@dataclass(frozen=True)
class CorpusMix:
    """What the pretraining corpus holds: shares of each kind of document and their sizes."""

    retrieval: float = 0.75     # share of retrieval conversations (the rest below, then prose)
    icl: float = 0.15
    short_answer: float = 0.05
    max_needles: int = 6        # haystack units per retrieval context (needles or prose sentences)
    questions: int = 4          # questions per retrieval context (each about another fact of the context)
    max_shots: int = 12
    retrieval_kinds: tuple[str, ...] = RETRIEVAL_KINDS  # "task:haystack" drawn uniformly per retrieval document


def retrieval_conversation(rng: random.Random, max_needles: int, questions: int,
                           kinds: tuple[str, ...] = RETRIEVAL_KINDS) -> list[dict]:
    return retrieval_document(rng, max_needles, questions, kinds)["messages"]


def retrieval_document(rng: random.Random, max_needles: int, questions: int,
                       kinds: tuple[str, ...] = RETRIEVAL_KINDS) -> dict:
    """A RULER prompt over a context of needles, answered, then up to questions-1 follow-up
    questions about other facts stated in the same context; "values" lists every value answered
    (the base model learns retrieval answers from their value on, see training.tokenize_document)."""
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
        elif r < mix.retrieval + mix.icl:
            docs.append({"messages": icl_conversation(rng, rows, mix.max_shots)})
        elif r < mix.retrieval + mix.icl + mix.short_answer:
            docs.append({"messages": short_answer_conversation(rng)})
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
