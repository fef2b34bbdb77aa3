"""Attention-mass segments on prompts with known boundaries; masses on known maps and on real
tiny models (softmax rows sum to 1, DiffLoRA net rows to 1 - lambda)."""

import json

import pytest
import torch

from difflora.analysis.segments import SEGMENTS, segment_mass, segment_token_spans
from difflora.errors import UserError
from difflora.evaluation import attention_mass
from difflora.evaluation.tasks.attention_mass import NeedlePrompt, _render_with_query, load_prompts

BEFORE, AFTER = "Some text here. ", " More text follows."
NEEDLE = "One of the special magic numbers for apple is: 1234567."
QUERY = "\nWhat is the special magic number for apple?"


def test_segments_follow_the_text(tiny_tokenizer):
    rendered = tiny_tokenizer.bos_token + BEFORE + NEEDLE + AFTER + QUERY
    ids, spans = segment_token_spans(tiny_tokenizer, rendered, NEEDLE, rendered.index(QUERY))
    assert spans["bos"] == [0] and ids[0] == tiny_tokenizer.bos_token_id
    assert sorted(i for s in spans.values() for i in s) == list(range(len(ids))), "every token in one segment"
    for name in SEGMENTS:  # each segment is one contiguous run of tokens, in order
        assert spans[name] == list(range(spans[name][0], spans[name][-1] + 1))
    decode = lambda seg: tiny_tokenizer.decode([ids[i] for i in spans[seg]])  # noqa: E731
    assert decode("needle").strip() == NEEDLE and decode("query") == QUERY
    assert decode("before") == BEFORE and decode("after") == AFTER


def test_chat_rendering_keeps_the_boundaries(tiny_tokenizer):
    p = NeedlePrompt(BEFORE + NEEDLE + AFTER + QUERY, NEEDLE, QUERY.strip(), " The special magic number is")
    rendered, start = _render_with_query(tiny_tokenizer, p, chat=None)
    assert rendered.startswith(tiny_tokenizer.bos_token) and rendered.endswith("The special magic number is")
    assert rendered[start:].startswith(QUERY.strip())
    ids, spans = segment_token_spans(tiny_tokenizer, rendered, NEEDLE, start)
    query_text = tiny_tokenizer.decode([ids[i] for i in spans["query"]])
    assert query_text.startswith(QUERY.strip()) and query_text.endswith("The special magic number is")


def test_mass_is_normalised_by_segment_length():
    spans = {"bos": [0], "before": [1, 2], "needle": [3], "after": [], "query": [4, 5]}
    attn = torch.zeros(2, 6, 6)
    attn[:, 4, 0], attn[:, 4, 1], attn[:, 4, 2], attn[:, 4, 4] = 0.5, 0.2, 0.2, 0.1
    attn[:, 5, 3], attn[:, 5, 5] = 0.6, 0.4
    mass = segment_mass(attn, spans)
    assert mass == pytest.approx({"bos": 0.25, "before": 0.1, "needle": 0.3, "query": 0.125})
    assert sum(m * len(spans[k]) for k, m in mass.items()) == pytest.approx(1.0), "rows sum to one"


def test_masses_of_real_models_sum_consistently(loaded):
    summary = attention_mass(loaded, length=300, n_prompts=1)
    for label, entry in summary.items():
        assert set(entry["mean"]) == ({"positive", "negative", "net"} if label == "difflora" else {"positive", "net"})
        assert entry["segment_tokens"]["bos"] == 1 and entry["segment_tokens"]["needle"] > 5
        assert sum(entry["segment_tokens"].values()) <= 300
        for i, layer in enumerate(entry["layers"]["positive"]):
            total = sum(layer[k] * entry["segment_tokens"][k] for k in layer)
            assert total == pytest.approx(1.0, abs=1e-5), "a softmax row sums to one"
            lam = entry["lambda"][i]
            assert entry["row_total"][i] == pytest.approx(1.0 - lam, abs=1e-5), "net rows sum to 1 - lambda"
            if label == "difflora":
                neg = entry["layers"]["negative"][i]
                assert sum(neg[k] * entry["segment_tokens"][k] for k in neg) == pytest.approx(lam, abs=1e-5)
                assert 0 < lam < 1
        assert entry["layer"] == [0, 1]


def test_user_prompts(loaded, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": BEFORE + NEEDLE + AFTER + QUERY, "needle": NEEDLE}) + "\n")
    prompts = load_prompts(str(path))
    assert prompts[0].query is None
    summary = attention_mass({"base": loaded["base"]}, str(path), out_dir=str(tmp_path / "out"))
    assert summary["base"]["n_prompts"] == 1 and summary["base"]["segment_tokens"]["needle"] > 5
    assert (tmp_path / "out" / "attention_mass_layers.png").stat().st_size > 5000
    for row, message in (({"prompt": "abc\nquery?", "needle": "zzz"}, "must appear in the prompt before the query"),
                         ({"prompt": "abc", "needle": "a", "query": "nope"}, "query 'nope' is not in the prompt"),
                         ({"text": "abc"}, "expected")):
        path.write_text(json.dumps(row) + "\n")
        with pytest.raises(UserError, match=message):
            load_prompts(str(path))


def test_per_token_lambda_on_a_bf16_model(tiny_tokenizer):
    """The path a CUDA run broke: lambda comes back beside its maps (the model's device, float32,
    though the layer computes it in bf16), and scaling the negative map by it needs no move."""
    from peft import get_peft_model

    from difflora import DiffLoRAConfig, attention_maps
    from difflora.analysis.segments import analyse_prompt
    from difflora.devices import device_of
    from difflora.testing import tiny_model

    base = tiny_model("llama", vocab_size=len(tiny_tokenizer)).to(torch.bfloat16)
    model = get_peft_model(base, DiffLoRAConfig.from_preset("difflora-64", r=8, lambda_mode="token")).eval()
    rendered = tiny_tokenizer.bos_token + BEFORE + NEEDLE + AFTER + QUERY
    ids = torch.tensor([tiny_tokenizer(rendered, add_special_tokens=False)["input_ids"]], device=device_of(model))
    for m in attention_maps(model, ids):
        assert m["lambda"].shape == (1, ids.shape[1], 4)  # batch x query x heads
        assert {t.device for t in (m["positive"], m["negative"], m["lambda"])} == {device_of(model)}
        assert {t.dtype for t in (m["positive"], m["negative"], m["lambda"])} == {torch.float32}
    result = analyse_prompt(model, tiny_tokenizer, rendered, NEEDLE, rendered.index(QUERY))
    query = result["segment_tokens"]["query"]
    for i, m in enumerate(attention_maps(model, ids)):
        expected = float(m["lambda"][0, -query:].mean())  # each query row of the negative map sums to its lambda
        negative = result["negative"][i]
        assert sum(v * result["segment_tokens"][k] for k, v in negative.items()) == pytest.approx(expected, abs=1e-4)
        assert result["row_total"][i] == pytest.approx(1 - expected, abs=1e-4)
