"""Chat data: validation errors with file:line, assistant-only labels, truncation, packing."""

import pytest

from difflora.errors import UserError
from difflora.train.chat_data import (
    IGNORE_INDEX,
    ReadStats,
    build_dataset,
    pack,
    read_conversations,
    tokenize_conversation,
)

from .conftest import chat_rows, write_jsonl

GOOD = chat_rows(2)


@pytest.mark.parametrize("bad,match", [
    ('{"messages": [', r"bad.jsonl:2: invalid JSON"),
    ('{"conversation": []}', r"bad.jsonl:2: expected an object with a \"messages\" list"),
    ('{"messages": [{"role": "user"}]}', r"bad.jsonl:2: message 0 must be"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', r"bad.jsonl:2: message 0 has role 'robot'"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', r"bad.jsonl:2: the conversation has no assistant turn"),
])
def test_malformed_row_stops_with_file_and_line(tmp_path, bad, match):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], bad, GOOD[1]])
    with pytest.raises(UserError, match=match):
        read_conversations(str(path))


def test_bad_rows_are_skipped_and_counted_on_request(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], "{oops", '{"messages": []}', GOOD[1]])
    stats = ReadStats()
    assert len(read_conversations(str(path), skip_bad_rows=True, stats=stats)) == 2
    assert stats.skipped == 2 and stats.rows == 4 and "bad.jsonl:2" in stats.problems[0]


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_conversations(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no .jsonl files"):
        read_conversations(str(tmp_path / "empty"))


def test_folder_of_files(tmp_path):
    (tmp_path / "d").mkdir()
    write_jsonl(tmp_path / "d" / "a.jsonl", GOOD[:1])
    write_jsonl(tmp_path / "d" / "b.jsonl", GOOD[1:])
    assert len(read_conversations(str(tmp_path / "d"))) == 2


def test_labels_cover_exactly_the_assistant_turns(tiny_tokenizer):
    msgs = [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "It is 4."},
            {"role": "user", "content": "And 3 plus 3?"}, {"role": "assistant", "content": "It is 6."}]
    ex = tokenize_conversation(tiny_tokenizer, msgs, max_length=512)
    learned = [t for t, label in zip(ex["input_ids"], ex["labels"]) if label != IGNORE_INDEX]
    assert tiny_tokenizer.decode(learned) == "It is 4.</s>It is 6.</s>"


def test_templates_without_generation_markers_give_the_same_mask(tiny_tokenizer):
    import copy

    plain = copy.deepcopy(tiny_tokenizer)
    template = tiny_tokenizer.chat_template
    plain.chat_template = template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    msgs = GOOD[0]["messages"] + [{"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "Yes."}]
    assert tokenize_conversation(plain, msgs, 512) == tokenize_conversation(tiny_tokenizer, msgs, 512)


def test_truncation_and_nothing_left_to_learn(tiny_tokenizer):
    msgs = GOOD[0]["messages"]
    stats = ReadStats()
    full = tokenize_conversation(tiny_tokenizer, msgs, 512)
    cut = tokenize_conversation(tiny_tokenizer, msgs, len(full["input_ids"]) - 2, stats)
    assert len(cut["input_ids"]) == len(full["input_ids"]) - 2 and stats.truncated == 1
    assert tokenize_conversation(tiny_tokenizer, msgs, 4, stats) is None and stats.empty_after_truncation == 1


def test_packing_fills_blocks(tiny_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", chat_rows(10))
    plain = build_dataset(str(path), tiny_tokenizer, max_length=64)
    packed = build_dataset(str(path), tiny_tokenizer, max_length=64, packing=True)
    total = sum(len(x) for x in plain["input_ids"])
    assert sum(len(x) for x in packed["input_ids"]) == total
    assert all(len(x) == 64 for x in packed["input_ids"][:-1])
    examples = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]}]
    assert pack(examples, 4) == [{"input_ids": [1, 2, 3, 4], "labels": [-100, 2, 3, -100]},
                                 {"input_ids": [5], "labels": [5]}]
