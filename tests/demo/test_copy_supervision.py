"""The base recipe's attention supervision: which positions it pairs (found in the batch itself), and
that its loss is the negative log attention weight on those positions and trains the projections
that key matching needs."""

import random

import pytest
import torch

from difflora.demo.base.copy_supervision import (
    VALUE_DIGITS,
    CopyPairCollator,
    copy_attention_loss,
    copy_pairs,
    digit_token_ids,
    gather_attention_loss,
    needle_marks,
    readout_loss,
    supervised_loss,
)
from difflora.demo.base.corpus import retrieval_document
from difflora.demo.base.training import tokenize_document
from difflora.evaluation.haystack import ADJECTIVES, NOUNS
from difflora.train.chat_data import ChatCollator


@pytest.fixture(scope="module")
def tokenizer():
    from difflora.data.tokenizer import train_tokenizer
    from difflora.demo.base.corpus import tokenizer_texts

    # every key word often enough to be one token, as in the recipe's tokenizer; digits one per token
    return train_tokenizer(tokenizer_texts(0, n=40, keys=True), vocab_size=1024, split_digits=True)


@pytest.fixture(scope="module")
def batch(tokenizer):
    rng = random.Random(3)
    docs = [retrieval_document(rng, 6, 4, ("mk2:needles", "mv:essay", "mk2:essay")) for _ in range(6)]
    rows = [tokenize_document(d, tokenizer, 4096, "values") for d in docs]
    collate = CopyPairCollator(ChatCollator(tokenizer.pad_token_id), digit_token_ids(tokenizer),
                               needle_marks(tokenizer))
    return docs, collate(rows)


def test_copy_pairs_point_each_answered_digit_at_its_digit_in_the_context(tokenizer, batch):
    docs, b = batch
    ids, labels = b["input_ids"], b["labels"]
    pairs = copy_pairs(ids, labels, digit_token_ids(tokenizer))
    assert len(pairs) == VALUE_DIGITS * sum(len(d["values"]) for d in docs)  # every answered value, each digit
    for row, query, source in pairs.tolist():
        assert source < query
        assert ids[row, query + 1] == ids[row, source]          # the digit predicted is the digit looked at
        assert labels[row, query + 1] != -100 and labels[row, source] == -100  # answer -> context
    # the pairs of one value are consecutive positions on both sides
    first = pairs.view(-1, VALUE_DIGITS, 3)
    assert (first[:, 1:, 1] - first[:, :-1, 1] == 1).all() and (first[:, 1:, 2] - first[:, :-1, 2] == 1).all()


def test_first_digits_of_a_shared_key_are_not_supervised(tokenizer, batch):
    _, b = batch
    ids, marks, digits = b["input_ids"].tolist(), needle_marks(tokenizer), digit_token_ids(tokenizer)
    every = copy_pairs(b["input_ids"], b["labels"], digits).view(-1, VALUE_DIGITS, 3).tolist()
    kept = {tuple(p) for p in b["copy_pairs"].tolist()}

    def needle_keys(row):
        t = ids[row]
        return [tuple(t[p - 6:p - 3]) for p in range(6, len(t)) if t[p] in digits and t[p - 1] == marks["space"]
                and t[p - 2] == marks["colon"] and t[p - 3] == marks["is"] and t[p - 5] == marks["hyphen"]]

    seen = set()
    for value in every:
        row, _, source = value[0]
        shared = needle_keys(row).count(tuple(ids[row][source - 6:source - 3])) > 1
        assert (tuple(value[0]) in kept) != shared
        assert all(tuple(p) in kept for p in value[1:])  # later digits follow the first: always kept
        seen.add(shared)
    assert seen == {True, False}  # the batch holds both single-key and multi-value answers


def test_gather_pairs_look_at_the_key_words(tokenizer, batch):
    _, b = batch
    ids = b["input_ids"]
    words = {0: set(), 1: set()}
    for row, position, target, head in b["gather_pairs"].tolist():
        assert target < position
        words[head].add(tokenizer.decode([int(ids[row, target])]).strip())
    assert words[0] <= set(NOUNS) and words[1] <= set(ADJECTIVES) and len(words[0]) > 5
    # at an answer's first digit the gathered key is the asked one: the same words as its needle's
    checked = 0
    every = copy_pairs(ids, b["labels"], digit_token_ids(tokenizer)).view(-1, VALUE_DIGITS, 3)
    for row, query, source in every[:, 0].tolist():
        at_query = {h: t for r, p, t, h in b["gather_pairs"].tolist() if r == row and p == query}
        at_needle = {h: t for r, p, t, h in b["gather_pairs"].tolist() if r == row and p == source}
        if at_query:  # MV answers after the first value have no key right before them
            assert ({h: int(ids[row, t]) for h, t in at_query.items()}
                    == {h: int(ids[row, t]) for h, t in at_needle.items()})
            checked += 1
    assert checked >= 6


def test_attention_losses_are_negative_log_weights():
    torch.manual_seed(0)
    attn = torch.rand(2, 3, 5, 5).softmax(-1)
    pairs = torch.tensor([[0, 4, 1], [1, 3, 2]])
    expected_all = -torch.stack([attn[0, :, 4, 1], attn[1, :, 3, 2]]).log().mean()
    assert torch.allclose(copy_attention_loss((attn, attn), pairs, None), expected_all)
    assert torch.allclose(copy_attention_loss((attn, attn), pairs, 1),
                          -torch.stack([attn[0, 1, 4, 1], attn[1, 1, 3, 2]]).log().mean())
    quads = torch.tensor([[0, 4, 0, 1], [1, 2, 1, 0]])
    assert torch.allclose(gather_attention_loss((attn, attn), quads),
                          -torch.stack([attn[0, 1, 4, 0], attn[1, 0, 2, 1]]).log().mean())
    empty = torch.zeros(0, 3, dtype=torch.long)
    assert copy_attention_loss((attn, attn), empty).item() == 0.0


def test_supervised_loss_trains_the_matching_projections(tokenizer, batch):
    from difflora.testing import tiny_model

    _, b = batch
    torch.manual_seed(0)
    model = tiny_model("llama", vocab_size=len(tokenizer), hidden_size=64, layers=2)
    model.config._attn_implementation = "eager"
    total, lm, attention, _ = supervised_loss(model, b, weight=1.0, head=None)
    assert torch.isclose(total, lm + attention) and attention > 0
    attention.backward()
    layers = model.model.layers
    for proj in (layers[0].self_attn.q_proj, layers[0].self_attn.k_proj,
                 layers[1].self_attn.q_proj, layers[1].self_attn.k_proj):
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    plain, lm_only, zero, _ = supervised_loss(model, b, weight=0.0)
    assert zero.item() == 0.0 and torch.isclose(plain, lm_only)


def test_readout_loss_scores_the_last_attention_output_on_the_digit_looked_at(tokenizer, batch):
    from difflora.testing import tiny_model

    _, b = batch
    torch.manual_seed(0)
    model = tiny_model("llama", vocab_size=len(tokenizer), hidden_size=64, layers=2)
    model.config._attn_implementation = "eager"
    captured = {}
    hook = model.model.layers[-1].self_attn.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o[0]))
    with torch.no_grad():
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    hook.remove()
    pairs, ids = b["copy_pairs"], b["input_ids"]
    logits = model.lm_head(model.model.norm(captured["out"][pairs[:, 0], pairs[:, 1]]))
    expected = torch.nn.functional.cross_entropy(logits, ids[pairs[:, 0], pairs[:, 2]])
    with torch.no_grad():
        assert torch.isclose(readout_loss(model, captured["out"], pairs, ids), expected)
        _, lm, attention, _ = supervised_loss(model, b, weight=1.0, head=None)
        hooks = len(model.model.layers[-1].self_attn._forward_hooks)  # transformers installs one of its own
        total, lm2, both, _ = supervised_loss(model, b, weight=1.0, head=None, readout=0.5)
    assert torch.isclose(both, attention + 0.5 * expected, rtol=1e-4) and torch.isclose(total, lm2 + both)
    assert len(model.model.layers[-1].self_attn._forward_hooks) == hooks  # ours is removed after each call
    model.zero_grad()
    supervised_loss(model, b, weight=0.0, readout=1.0)[2].backward()  # the readout trains the output path
    attn = model.model.layers[-1].self_attn
    assert attn.v_proj.weight.grad.abs().sum() > 0 and attn.o_proj.weight.grad.abs().sum() > 0


def test_needle_marks_refuse_a_tokenizer_that_splits_key_words(tiny_tokenizer):
    with pytest.raises(ValueError, match="one token per key word"):
        needle_marks(tiny_tokenizer)


def test_icl_pairs_copy_from_same_class_demonstrations_and_gather_each_sentence(tokenizer):
    import re

    from difflora.demo.base.copy_supervision import ICL_GATHER_HEADS, icl_pairs, label_marks
    from difflora.demo.conversations import icl_conversation
    from difflora.evaluation import icl

    rng, examples = random.Random(5), icl.load_examples()
    convs = [icl_conversation(rng, examples, 12) for _ in range(6)]
    rows = [tokenize_document({"messages": c}, tokenizer, 4096, "values") for c in convs]
    b = ChatCollator(tokenizer.pad_token_id)(rows)
    pairs, quads = icl_pairs(b["input_ids"], b["labels"], digit_token_ids(tokenizer), label_marks(tokenizer))
    for row, conv in enumerate(convs):
        prompt, answer = conv[0]["content"], conv[1]["content"].split()[-1]
        demos = re.findall(r"\nlabel: (\d)", prompt)
        mine = [p for p in pairs.tolist() if p[0] == row]
        assert len(mine) == demos.count(answer)  # one pair per demonstration of the answer's class
        for _, query, source in mine:
            assert tokenizer.decode(b["input_ids"][row, source]) == answer and b["labels"][row, source] == -100
            assert b["labels"][row, query + 1] != -100  # the query predicts the answered id
        # one gathering position per demonstration and one for the test sentence, on every ICL head
        gathered = {}
        for _, at, word, head in (q for q in quads.tolist() if q[0] == row):
            assert head in ICL_GATHER_HEADS
            gathered.setdefault(at, set()).add(word)
        assert len(gathered) == len(demos) + 1
        sentences = [s.split("\nlabel:")[0] for s in prompt.split("\n\n")[1:]]  # demos, then the test text
        texts = [tokenizer.decode(b["input_ids"][row, sorted(words)]).strip() for _, words in sorted(gathered.items())]
        assert texts == [s.strip().rstrip(".") for s in sentences]


def test_icl_gathering_can_skip_the_words_every_class_uses(tokenizer):
    from difflora.demo.base.copy_supervision import icl_pairs, label_marks
    from difflora.demo.conversations import icl_conversation
    from difflora.evaluation import icl

    examples = icl.load_examples()
    marks = label_marks(tokenizer, examples)
    the = tokenizer(" the", add_special_tokens=False)["input_ids"]
    assert len(the) == 1 and the[0] in marks["common"]  # " the" is in every class's texts
    by_class = {}
    for row in examples:
        by_class.setdefault(row["label"], set()).update(tokenizer(row["text"], add_special_tokens=False)["input_ids"])
    for token in marks["common"]:  # each skipped word is in the texts of most classes
        assert sum(token in words for words in by_class.values()) > len(by_class) / 2
    rows = [tokenize_document({"messages": icl_conversation(random.Random(s), examples, 12)}, tokenizer, 4096, "values")
            for s in range(4)]
    b = ChatCollator(tokenizer.pad_token_id)(rows)
    _, quads = icl_pairs(b["input_ids"], b["labels"], digit_token_ids(tokenizer), marks)
    gathered = {b["input_ids"][r, w].item() for r, _, w, _ in quads.tolist()}
    assert gathered and not gathered & marks["common"]


def _icl_batch(tokenizer, seeds=range(6), shots=12):
    from difflora.demo.conversations import icl_conversation
    from difflora.evaluation import icl

    examples = icl.load_examples()
    convs = [icl_conversation(random.Random(s), examples, shots) for s in seeds]
    rows = [tokenize_document({"messages": c}, tokenizer, 4096, "values") for c in convs]
    return convs, ChatCollator(tokenizer.pad_token_id)(rows), examples


def _sentence_words(tokenizer, text, common):
    return [t for t in tokenizer(text.strip(), add_special_tokens=False)["input_ids"] if t not in common]


def test_icl_overlap_targets_are_the_same_class_demonstrations_sharing_a_word(tokenizer):
    from difflora.demo.base.copy_supervision import icl_pairs, label_marks

    convs, b, examples = _icl_batch(tokenizer, range(8), 24)
    marks = label_marks(tokenizer, examples)
    pairs, _ = icl_pairs(b["input_ids"], b["labels"], digit_token_ids(tokenizer), marks, overlap=True)
    expected = 0
    for conv in convs:
        blocks = conv[0]["content"].split("\n\n")[1:]
        answer = conv[1]["content"].split()[-1]
        test = set(_sentence_words(tokenizer, blocks[-1], marks["common"]))
        for demo in blocks[:-1]:
            text, label = demo.split("\nlabel: ")
            expected += label == answer and bool(test & set(_sentence_words(tokenizer, text, marks["common"])))
    assert 0 < len(pairs) == expected  # fewer than the same-class pairs, and exactly the sharing ones
    everything, _ = icl_pairs(b["input_ids"], b["labels"], digit_token_ids(tokenizer), marks)
    assert len(pairs) < len(everything)


def test_icl_ends_gathers_each_sentence_first_and_last_word_like_a_needle_key(tokenizer):
    from difflora.demo.base.copy_supervision import icl_pairs, label_marks

    convs, b, examples = _icl_batch(tokenizer, range(3), 6)
    marks = label_marks(tokenizer, examples)
    pairs, quads = icl_pairs(b["input_ids"], b["labels"], digit_token_ids(tokenizer), marks, heads=(0, 1),
                             overlap=True, ends=True)
    for row, conv in enumerate(convs):
        sentences = [block.split("\nlabel: ")[0] for block in conv[0]["content"].split("\n\n")[1:]]
        mine = [q for q in quads.tolist() if q[0] == row]
        assert len(mine) == 2 * len(sentences)  # one first word (head 1) and one last word (head 0) each
        for sentence, (first, last) in zip(sentences, zip(mine[::2], mine[1::2])):
            words = _sentence_words(tokenizer, sentence, marks["common"])
            assert (first[3], b["input_ids"][row, first[2]].item()) == (1, words[0])
            assert (last[3], b["input_ids"][row, last[2]].item()) == (0, words[-1])


def test_icl_copy_pairs_are_averaged_apart_from_the_needles(tokenizer):
    """A needle answer brings dozens of copy pairs and an ICL answer a few: the collator keeps ICL's
    apart and the loss adds their own means, so that ICL is not a few percent of the copy loss."""
    from difflora.demo.base.copy_supervision import icl_pairs, label_marks
    from difflora.demo.conversations import icl_conversation
    from difflora.evaluation import icl
    from difflora.testing import tiny_model

    examples = icl.load_examples()
    rng = random.Random(4)
    docs = [retrieval_document(rng, 6, 4, ("mk2:needles",)) for _ in range(3)]
    docs += [{"messages": icl_conversation(rng, examples, 12)} for _ in range(3)]
    rows = [tokenize_document(d, tokenizer, 4096, "values") for d in docs]
    marks = label_marks(tokenizer)
    collate = CopyPairCollator(ChatCollator(tokenizer.pad_token_id), digit_token_ids(tokenizer),
                               needle_marks(tokenizer), marks)
    b = collate(rows)
    expected, _ = icl_pairs(b["input_ids"], b["labels"], digit_token_ids(tokenizer), marks)
    assert len(b["icl_pairs"]) > 0 and torch.equal(b["icl_pairs"], expected)
    needles = {tuple(p) for p in b["copy_pairs"].tolist()}
    assert needles and not needles & {tuple(p) for p in expected.tolist()}  # kept apart
    torch.manual_seed(0)
    model = tiny_model("llama", vocab_size=len(tokenizer), hidden_size=64, layers=2)
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        _, _, total, out = supervised_loss(model, b, weight=1.0, head=None)
        parts = (copy_attention_loss(out.attentions, b["copy_pairs"], None)
                 + gather_attention_loss(out.attentions, b["gather_pairs"])
                 + copy_attention_loss(out.attentions, b["icl_pairs"], None))
    assert torch.isclose(total, parts)
    captured = {}
    hook = model.model.layers[-1].self_attn.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o[0]))
    with torch.no_grad():
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        hook.remove()
        _, _, readout, _ = supervised_loss(model, b, weight=0.0, readout=1.0)
        ids = b["input_ids"]
        both = (readout_loss(model, captured["out"], b["copy_pairs"], ids)
                + readout_loss(model, captured["out"], b["icl_pairs"], ids))
    assert torch.isclose(readout, both, rtol=1e-4)
