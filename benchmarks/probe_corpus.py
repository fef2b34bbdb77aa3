"""Document kinds the probes try beside the base recipe's corpus (src/difflora/demo/base/corpus.py).

No shipped recipe uses them, so they live here with the probes that do: recall drills (needles
stated, then restated, every token learned: a dense signal for the copying circuit), topical
paragraphs (sentences of one ICL topic, learned on every token) and ICL conversations labelled with
the topic names instead of random ids (topic knowledge, which the random-id conversations never
teach). `probe_documents` is the recipe's `pretraining_documents` with these kinds mixed in at their
shares; with all three at 0 it gives exactly the recipe's documents.
"""

from __future__ import annotations

import random

from difflora.demo.base.corpus import CorpusMix, prose, retrieval_document
from difflora.demo.conversations import icl_conversation, short_answer_conversation
from difflora.evaluation import haystack, icl, nih


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


def named_icl_conversation(rng: random.Random, rows: list[dict], max_shots: int) -> list[dict]:
    """An ICL conversation in the evaluation's format whose labels are the class names themselves
    (a fixed mapping the model can learn as knowledge, unlike the per-prompt random ids)."""
    shots = rng.randint(2, max_shots)
    test = rng.choice(rows)
    demos = icl.balanced_demos([r for r in rows if r is not test], shots, rng)
    context = "\n\n".join(icl.ITEM.format(text=d["text"], label=d["label"]) for d in demos)
    prompt = icl.INSTRUCTION + " \n\n" + context + "\n\n" + test["text"]
    return [{"role": "user", "content": prompt},
            {"role": "assistant", "content": f"{icl.ANSWER_PREFIX} {test['label']}"}]


def topic_paragraph(rng: random.Random, rows: list[dict], sentences: int) -> str:
    """`sentences` sentences of one topic of the ICL set, in a random order."""
    label = rng.choice(sorted({r["label"] for r in rows}))
    pool = [r["text"] for r in rows if r["label"] == label]
    return " ".join(rng.sample(pool, min(sentences, len(pool))))


def probe_documents(n: int, seed: int, mix: CorpusMix | None = None, recall: float = 0.0,
                    topic_prose: float = 0.0, named_icl: float = 0.0) -> list[dict | str]:
    """n documents of `mix` with recall drills, topical paragraphs and named-label ICL at their shares
    (drills after retrieval, the other two after the short answers, prose for the rest)."""
    mix = mix or CorpusMix()
    rng = random.Random(seed)
    rows = icl.load_examples()
    docs: list[dict | str] = []
    for _ in range(n):
        r = rng.random()
        if r < mix.retrieval:
            docs.append(retrieval_document(rng, mix.max_needles, mix.questions, mix.retrieval_kinds))
        elif r < mix.retrieval + recall:
            docs.append(recall_drill(rng, mix.max_needles))
        elif r < mix.retrieval + recall + mix.icl:
            docs.append({"messages": icl_conversation(rng, rows, mix.max_shots)})
        elif r < mix.retrieval + recall + mix.icl + mix.short_answer:
            docs.append({"messages": short_answer_conversation(rng)})
        elif r < mix.retrieval + recall + mix.icl + mix.short_answer + topic_prose:
            docs.append(topic_paragraph(rng, rows, rng.randint(3, 8)))
        elif r < mix.retrieval + recall + mix.icl + mix.short_answer + topic_prose + named_icl:
            docs.append({"messages": named_icl_conversation(rng, rows, mix.max_shots)})
        else:
            docs.append(prose(rng, rng.randint(4, 16)))
    return docs
