"""Templates checked against the spec verbatim; scoring checked on hand-made outputs."""

import pytest

from difflora.evaluation import degeneration, icl, nih


def test_multi_value_templates_are_the_spec_verbatim():
    needle, prompt, prefix = nih.templates(nih.TASKS["mv"])
    assert needle == "One of the special magic numbers for {key} is: {value}."
    assert prompt == ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
                      "I will quiz you about the numbers afterwards.\n{context}\n"
                      "What are all the special magic numbers for {query} mentioned in the provided text?")
    assert prefix == " The special magic numbers for {query} mentioned in the provided text are"


def test_single_answer_rewrite():
    needle, prompt, prefix = nih.templates(nih.TASKS["mk3"])
    assert needle == "One of the special magic uuids for {key} is: {value}."
    assert prompt == ("A special magic uuid is hidden within the following text. Make sure to memorize it. "
                      "I will quiz you about the uuid afterwards.\n{context}\n"
                      "What is the special magic uuid for {query} mentioned in the provided text?")
    assert prefix == " The special magic uuid for {query} mentioned in the provided text is"


def test_samples_fit_the_length_and_hold_their_needles(tiny_tokenizer):
    count = lambda text: len(tiny_tokenizer(text)["input_ids"])  # noqa: E731
    for task in ("mk2", "mk3", "mv"):
        s = nih.make_sample(task, 900, 0, count, seed=1)
        assert count(s.prompt + s.answer_prefix) <= 900
        assert all(n in s.prompt for n in s.needle_text) and len(s.gold) == (4 if task == "mv" else 1)
        assert s == nih.make_sample(task, 900, 0, count, seed=1), "samples are deterministic"
    mk2 = nih.make_sample("mk2", 900, 0, count)
    assert mk2.prompt.count("One of the special magic numbers for") > 3, "MK-2 hides the needle among distractor needles"
    assert len(mk2.gold[0]) == 7 and mk2.gold[0].isdigit()


@pytest.mark.parametrize("output,gold,expected", [
    (" 1234567.", ["1234567"], 1.0),
    (" 7654321", ["1234567"], 0.0),
    ("1111111, 2222222 and 9", ["1111111", "2222222", "3333333", "4444444"], 0.5),
    ("ABCD-ef", ["abcd-EF"], 1.0),
])
def test_nih_scoring(output, gold, expected):
    assert nih.score(output, gold) == expected


def test_icl_prompt_format_and_balanced_rounds():
    rows = icl.load_examples()
    s = icl.make_sample(rows, 12, 0)
    assert s.prompt.startswith('Use the provided mapping from the text to label to assign a label to the text. '
                               'Only output "label: {label}" and nothing else.\n\n')
    demos = s.prompt.split("\n\n")[1:-1]
    labels = [d.split("\nlabel: ")[1] for d in demos]
    assert len(demos) == 12 and len(set(labels[:6])) == 6 and len(set(labels[6:])) == 6, "two balanced rounds"
    assert s.gold.startswith("label: ") and s.gold[7:] in labels


@pytest.mark.parametrize("output,expected", [(" 17", 1.0), (" 17\nmore text", 1.0), (" 71", 0.0), (" label 17", 0.0), ("", 0.0)])
def test_icl_exact_match(output, expected):
    assert icl.score(output, "label: 17") == expected


def test_degeneration_detectors():
    loop = "The question is not a valid question. " * 4
    assert degeneration.analyse(loop)["ngram_loop"] and degeneration.analyse(loop)["degenerate"]
    assert degeneration.analyse("id 3f2a-0a0a0a0a0a0a0a")["char_pattern"]
    assert degeneration.analyse("   ")["empty"]
    fine = degeneration.analyse("Paris is the capital of France, known for its museums.")
    assert not fine["degenerate"] and fine["distinct_2"] == 1.0


def test_bad_data_files(tmp_path):
    from difflora.errors import UserError

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        icl.load_examples(str(empty))
    with pytest.raises(UserError, match="does not exist"):
        degeneration.load_prompts(str(tmp_path / "missing.jsonl"))
