"""benchmarks/probe_corpus.py: the document kinds the probes try beside the base recipe's corpus keep
to one topic and name it in the evaluation's format, and with none of them mixed in the probes get
exactly the recipe's documents."""

import random

from probe_corpus import named_icl_conversation, probe_documents, recall_drill, topic_paragraph

from difflora.demo.base import BaseRecipe
from difflora.demo.base.corpus import CorpusMix, pretraining_documents
from difflora.evaluation import icl


def test_topical_documents_keep_to_one_topic_and_name_it_in_the_evaluation_format():
    examples = icl.load_examples()
    topic_of = {row["text"]: row["label"] for row in examples}
    rng = random.Random(0)
    for _ in range(20):
        paragraph = topic_paragraph(rng, examples, 5)
        sentences = [s + "." for s in paragraph.rstrip(".").split(". ")]
        assert len(sentences) == 5 and len({topic_of[s] for s in sentences}) == 1
        user, assistant = named_icl_conversation(rng, examples, 12)
        blocks = user["content"].split("\n\n")
        assert blocks[0] == icl.INSTRUCTION + " " and 2 <= len(blocks) - 2 <= 12
        for demo in blocks[1:-1]:
            text, name = demo.split("\nlabel: ")
            assert topic_of[text] == name  # labelled with its own topic's name
        assert assistant["content"] == f"label: {topic_of[blocks[-1]]}"
    mixed = probe_documents(300, 3, CorpusMix(retrieval=0.0, icl=0.0, short_answer=0.0), topic_prose=0.5,
                            named_icl=0.5)
    named = [d for d in mixed if isinstance(d, dict)]
    assert 100 < len(named) < 200 and all(d["messages"][1]["content"].split()[-1] in set(topic_of.values())
                                           for d in named)


def test_a_recall_drill_restates_its_needles():
    first, again = recall_drill(random.Random(1), 6).split("\n\n")
    assert sorted(first.split("\n")) == sorted(again.split("\n")) and "special magic" in first


def test_without_the_extra_kinds_the_probes_get_the_recipes_documents():
    mix = BaseRecipe().mix
    assert probe_documents(60, 5, mix) == pretraining_documents(60, 5, mix)
    assert probe_documents(60, 5) == pretraining_documents(60, 5)
