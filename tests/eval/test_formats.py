"""Templates checked against RULER's and HELMET's verbatim (as docs/evaluation.md quotes them); samples
and scoring checked on hand-made cases."""

import json
import random
import re
from pathlib import Path

import pytest

from difflora.errors import UserError
from difflora.evaluation import haystack, icl, nih
from difflora.evaluation.stats import bootstrap
from difflora.evaluation.tasks import degeneration

DOC = Path(__file__).resolve().parents[2] / "docs" / "evaluation.md"

# RULER's niah templates and HELMET's ICL instruction, copied verbatim.
VERBATIM_NEEDLE = "One of the special magic {type} for {key} is: {value}."
VERBATIM_PROMPT = ("Some special magic {type} are hidden within the following text. Make sure to memorize it. "
                   "I will quiz you about the {type} afterwards.\n{context}\nWhat are all the special magic {type} "
                   "for {query} mentioned in the provided text?")
VERBATIM_PREFIX = " The special magic {type} for {query} mentioned in the provided text are"
VERBATIM_INSTRUCTION = ('Use the provided mapping from the text to label to assign a label to the text. Only output '
                        '"label: {label}" and nothing else.')


def test_templates_are_rulers_and_helmets_verbatim():
    assert (nih.NEEDLE, nih.PROMPT, nih.ANSWER_PREFIX) == (VERBATIM_NEEDLE, VERBATIM_PROMPT, VERBATIM_PREFIX)
    assert icl.INSTRUCTION == VERBATIM_INSTRUCTION
    assert icl.ANSWER_PREFIX == "label:" and icl.ITEM == "{text}\nlabel: {label}"


def test_templates_appear_in_the_documentation():
    doc = " ".join(DOC.read_text().split())  # the page wraps lines; compare with whitespace collapsed
    for template in (nih.NEEDLE, nih.PROMPT.replace("\n", "\\n"), nih.ANSWER_PREFIX.strip(), icl.INSTRUCTION):
        assert " ".join(template.split()) in doc, template
    assert "`{text}\\nlabel: {id}`" in doc and "answer prefix `label:`" in doc


def test_multi_value_templates():
    needle, prompt, prefix = nih.templates(nih.NEEDLE_TASKS["mv"])
    assert needle == "One of the special magic numbers for {key} is: {value}."
    assert prompt == VERBATIM_PROMPT.replace("{type}", "numbers")
    assert prefix == " The special magic numbers for {query} mentioned in the provided text are"


def test_single_answer_rewrite():
    needle, prompt, prefix = nih.templates(nih.NEEDLE_TASKS["mk3"])
    assert needle == "One of the special magic uuids for {key} is: {value}.", "needles keep the plural (RULER)"
    assert prompt == ("A special magic uuid is hidden within the following text. Make sure to memorize it. "
                      "I will quiz you about the uuid afterwards.\n{context}\n"
                      "What is the special magic uuid for {query} mentioned in the provided text?")
    assert prefix == " The special magic uuid for {query} mentioned in the provided text is"
    assert nih.templates(nih.NEEDLE_TASKS["mk2"])[2] == (" The special magic number for {query} mentioned in the "
                                                          "provided text is")


def count(tokenizer):
    return lambda prompt, prefix: len(tokenizer(prompt + prefix)["input_ids"])


def test_samples_fit_the_length_hold_their_needles_and_are_deterministic(tiny_tokenizer):
    measure = count(tiny_tokenizer)
    for task in ("mk2", "mk3", "mv"):
        s = nih.make_sample(task, 900, 0, measure, seed=1)
        assert measure(s.prompt, s.answer_prefix) <= 900 and s.haystack_units > 3
        assert all(n in s.prompt for n in s.needle_text) and len(s.gold) == (4 if task == "mv" else 1)
        assert all(f"for {s.query} is: {v}." in s.prompt for v in s.gold)
        assert s == nih.make_sample(task, 900, 0, measure, seed=1), "samples are deterministic"
        assert s.prompt != nih.make_sample(task, 900, 1, measure, seed=1).prompt
    mk2 = nih.make_sample("mk2", 900, 0, measure)
    lines = mk2.prompt.split("\n")
    distractors = [line for line in lines if line.startswith("One of the special magic numbers for")]
    assert len(distractors) == mk2.haystack_units + 1, "MK-2: one distractor needle per line, plus the needle"
    assert sum(f"for {mk2.query} is:" in line for line in distractors) == 1, "no distractor shares the query key"
    assert re.fullmatch(r"\d{7}", mk2.gold[0])
    mk3 = nih.make_sample("mk3", 900, 0, measure)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", mk3.gold[0])
    assert re.fullmatch(r"[a-z]+-[a-z]+", mk2.query)


def test_haystacks(tiny_tokenizer):
    measure = count(tiny_tokenizer)
    noise = nih.make_sample("mk2", 700, 0, measure, haystack_kind="noise")
    assert noise.prompt.count(haystack.NOISE) == noise.haystack_units > 2
    essay = nih.make_sample("mv", 700, 0, measure)
    assert essay.haystack == "essay" and haystack.NOISE not in essay.prompt
    context = essay.prompt.split("\n")[1]
    assert all(n in context for n in essay.needle_text), "essay: running prose, needles inside it"
    assert len(set(essay.depth)) == 4 and all(round(d * 100) in haystack.DEPTHS for d in essay.depth)
    with pytest.raises(UserError, match="unknown haystack"):
        nih.make_sample("mk2", 700, 0, measure, haystack_kind="essays")
    with pytest.raises(UserError, match="too short"):
        nih.make_sample("mk2", 20, 0, measure)


def test_largest_fitting_haystack():
    assert nih._largest_fitting(lambda n: 10 + 3 * n, 100, 10) == 30
    assert nih._largest_fitting(lambda n: 10 + n * n, 110, 10) == 10
    assert nih._largest_fitting(lambda n: 10 + n // 4, 5000, 10) == 19963, "grows past a short first estimate"


@pytest.mark.parametrize("output,gold,expected", [
    (" 1234567.", ["1234567"], 1.0),
    (" 7654321", ["1234567"], 0.0),
    ("1111111, 2222222 and 9", ["1111111", "2222222", "3333333", "4444444"], 0.5),
    ("ABCD-ef", ["abcd-EF"], 1.0),
    ("", ["1234567"], 0.0),
])
def test_nih_scoring(output, gold, expected):
    assert nih.score(output, gold) == expected


def test_icl_prompt_is_helmets_layout_with_balanced_rounds():
    rows = icl.load_examples()
    s = icl.make_sample(rows, 14, 0)
    head, rest = s.prompt.split(" \n\n", 1)
    assert head == VERBATIM_INSTRUCTION
    *demos, test = rest.split("\n\n")
    assert test == s.text and len(demos) == 14
    ids = [d.split("\nlabel: ")[1] for d in demos]
    assert sorted(set(ids)) == [str(i) for i in range(6)], "ids are a permutation of range(classes)"
    assert len(set(ids[:6])) == 6 and len(set(ids[6:12])) == 6 and len(set(ids[12:])) == 2, "balanced rounds"
    texts = [d.split("\nlabel: ")[0] for d in demos]
    assert len(set(texts)) == 14 and s.text not in texts, "no repeats, the test text is left out"
    by_text = {r["text"]: r["label"] for r in rows}
    mapping = {by_text[t]: i for t, i in zip(texts, ids)}
    assert len(mapping) == 6 and s.answer == mapping[s.label] and s.gold == f"label: {s.answer}"


def test_icl_test_examples_are_balanced_and_shared_across_shot_counts():
    rows = icl.load_examples()
    tests = [icl.pick_test_example(rows, i) for i in range(12)]
    assert all(sum(t["label"] == lab for t in tests) == 2 for lab in {r["label"] for r in rows})
    assert icl.make_sample(rows, 6, 3).text == icl.make_sample(rows, 24, 3).text == tests[3]["text"]


@pytest.mark.parametrize("output,expected", [
    (" 17", 1.0), (" 17\nmore text", 1.0), (" 17.", 1.0), ("label: 17", 1.0), (" label: 17\n", 1.0),
    (" 71", 0.0), (" label 17", 0.0), ("", 0.0), (" 1", 0.0), (" 17 18", 0.0),
])
def test_icl_exact_match(output, expected):
    assert icl.score(output, "label: 17") == expected
    assert icl.score(output, "17") == expected


def test_bundled_icl_data_is_what_its_generator_makes():
    from difflora.resources import topics

    assert topics.PATH.read_text() == topics.to_jsonl(topics.generate_topics())
    rows = icl.load_examples()
    assert len(rows) == 300 and len({r["text"] for r in rows}) == 300
    assert {r["label"] for r in rows} == set(topics.GRAMMAR)


def test_icl_data_from_files(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"sentence": f"text {i}", "intent": i % 3}) for i in range(9)))
    rows = icl.load_examples(str(data), text_field="sentence", label_field="intent")
    assert rows[4] == {"text": "text 4", "label": "1"}
    with pytest.raises(UserError, match=r'd.jsonl:1: expected an object with "text"'):
        icl.load_examples(str(data))
    for content, message in (("", "is empty"), ('{"text": "a", "label": 1}\n{"text": "b", "label": 1}', "single label"),
                             ('{"text": "a", "label": 1}\nnot json', "d.jsonl:2: invalid JSON")):
        data.write_text(content)
        with pytest.raises(UserError, match=message):
            icl.load_examples(str(data))
    with pytest.raises(UserError, match="does not exist"):
        icl.load_examples(str(tmp_path / "missing.jsonl"))


def test_icl_data_through_datasets(tmp_path):
    folder = tmp_path / "trec-like"
    folder.mkdir()
    for split, n in (("train", 12), ("test", 4)):
        rows = (json.dumps({"q": f"{split} {i}", "coarse": i % 3}) for i in range(n))
        (folder / f"{split}.jsonl").write_text("\n".join(rows))
    rows = icl.load_examples(str(folder), text_field="q", label_field="coarse", split="test")
    assert rows == [{"text": f"test {i}", "label": str(i % 3)} for i in range(4)]
    with pytest.raises(UserError, match="has no column 'text'"):
        icl.load_examples(str(folder))
    with pytest.raises(UserError, match="not a file, 'bundled:topics' or a loadable datasets name"):
        icl.load_examples("no-such-user/no-such-dataset")  # the hub is offline in tests


def test_degeneration_detectors():
    loop = "The question is not a valid question. " * 3
    assert degeneration.analyse(loop)["ngram_loop"] and degeneration.analyse(loop)["degenerate"]
    assert degeneration.char_pattern_runs("uuid 3f2a9c1e-0a0a0a") == ["0a0a0a"]
    assert degeneration.analyse("!!!!!!!!!")["char_pattern"]
    assert not degeneration.analyse("The number is 1000000, in 2024-01-01.")["degenerate"], "ordinary numbers"
    assert degeneration.analyse("   ")["empty"] and degeneration.analyse("")["degenerate"]
    fine = degeneration.analyse("Paris is the capital of France, known for its museums.")
    assert not fine["degenerate"] and fine["distinct_2"] == 1.0
    assert degeneration.distinct_n("a b a b", 1) == 0.5 and degeneration.distinct_n("a b a b", 2) == 2 / 3


def test_degeneration_summary_ranks_the_worst_first():
    rows = [{"prompt": p, "output": o, **degeneration.analyse(o)}
            for p, o in [("p1", "A fine answer here."), ("p2", "no no no no no no no"), ("p3", "")]]
    s = degeneration.summarise(rows, worst=3)
    assert s["rate"]["mean"] == pytest.approx(2 / 3) and s["empty"] == pytest.approx(1 / 3)
    assert [w["prompt"] for w in s["worst"]] == ["p2", "p3"] and "ngram_loop" in s["worst"][0]["flags"]


def test_prompt_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\nsecond\n")
    assert degeneration.load_prompts(str(txt)) == ["first", "second"]
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(UserError, match=r'p.jsonl:1: expected \{"prompt"'):
        degeneration.load_prompts(str(bad))
    bad.write_text("")
    with pytest.raises(UserError, match="is empty"):
        degeneration.load_prompts(str(bad))
    with pytest.raises(UserError, match="does not exist"):
        degeneration.load_prompts(str(tmp_path / "missing.jsonl"))
    assert len(degeneration.load_prompts()) >= 20


def test_bootstrap_interval():
    est = bootstrap([1.0] * 30 + [0.0] * 70)
    assert est.mean == pytest.approx(0.3) and est.low < 0.3 < est.high and est.n == 100
    assert 0.18 < est.low < 0.25 and 0.35 < est.high < 0.42  # about +-1.96 * sqrt(.3*.7/100)
    assert bootstrap([1.0, 1.0]).to_dict() == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 2}
    assert bootstrap([]).n == 0


def test_random_samples_for_training_data():
    s = nih.random_sample("mv", 5, random.Random(0))
    assert s.haystack_units == 5 and len(s.gold) == 4 and all(n in s.prompt for n in s.needle_text)
