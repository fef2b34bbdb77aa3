"""Segments cut at known boundaries; masses computed from known maps."""

import pytest
import torch

from difflora.analysis.attention_mass import segment_mass, segment_token_spans


def test_segments_follow_the_text(tiny_tokenizer):
    before, needle, after, query = "Some text here. ", "One of the special magic numbers for apple is: 1234567.", \
        " More text follows.", "\nWhat is the special magic number for apple?"
    rendered = tiny_tokenizer.bos_token + before + needle + after + query
    ids, spans = segment_token_spans(tiny_tokenizer, rendered, needle, rendered.index(query))
    assert spans["bos"] == [0]
    assert sorted(i for s in spans.values() for i in s) == list(range(len(ids))), "every token in one segment"
    decode = lambda seg: tiny_tokenizer.decode([ids[i] for i in spans[seg]])  # noqa: E731
    assert decode("needle").strip() == needle and decode("query") == query
    assert decode("before") == before and decode("after") == after


def test_mass_is_normalised_by_segment_length():
    T = 6
    spans = {"bos": [0], "before": [1, 2], "needle": [3], "after": [], "query": [4, 5]}
    attn = torch.zeros(2, T, T)
    attn[:, 4, 0], attn[:, 4, 1], attn[:, 4, 2], attn[:, 4, 4] = 0.5, 0.2, 0.2, 0.1
    attn[:, 5, 3], attn[:, 5, 5] = 0.6, 0.4
    mass = segment_mass(attn, spans)
    assert mass == pytest.approx({"bos": 0.25, "before": 0.1, "needle": 0.3, "query": 0.125})
