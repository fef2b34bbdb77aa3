"""The segments of one needle prompt and the attention mass each gets (the paper's Figure 4, for
one model and one prompt).

A needle prompt is cut into five segments: BOS, the context before the needle (instruction and
chat header included), the needle, the context after it, and the query (the question, the chat
template's tail and the answer prefix). For every layer, the attention that the query tokens give
to each segment is summed over the segment's keys, averaged over heads and query tokens, and
divided by the segment's length (so a long haystack does not win by size). Multiplying each
segment's mass back by its length and summing gives the row sum of the map: 1 for a softmax map,
1 - lambda for a DiffLoRA layer's net map.

For DiffLoRA models the positive map and the lambda-scaled negative map are measured separately
(kinds "positive" and "negative") with the net map (positive - lambda * negative) beside them;
the maps come from difflora.attention_maps, which covers the transformed layers. Base and LoRA
models are read with output_attentions under the eager backend (kinds "positive" and "net").
All layers' maps of one prompt are held at once (layers x heads x tokens^2 floats), so keep the
prompts to a few thousand tokens on a large model.

The evaluation task built on this (prompts, models, averaging, plots, report section) is
difflora.evaluation.tasks.attention_mass.
"""

from __future__ import annotations

import torch

from .. import compat
from ..devices import device_of
from ..errors import UserError
from ..introspection import attention_maps, difflora_layers

SEGMENTS = ("bos", "before", "needle", "after", "query")


def segment_token_spans(tokenizer, rendered: str, needle: str, question_start: int) -> tuple[list[int], dict]:
    """Token ids of `rendered` and {segment: [token indices]}; every token lies in exactly one
    segment. The BOS segment is the first token when it is a special token (the attention sink);
    the query segment is every token starting at character `question_start` or later."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("attention segments need a fast tokenizer (character offsets); this tokenizer is not one")
    enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    n_start = rendered.find(needle, 0, question_start)
    if n_start < 0:
        raise UserError(f"the needle {needle[:60]!r} is not in the prompt before its query")
    n_end = n_start + len(needle)
    special = set(tokenizer.all_special_ids)
    spans = {name: [] for name in SEGMENTS}
    for i, (start, end) in enumerate(offsets):
        if i == 0 and ids[0] in special:
            spans["bos"].append(i)
        elif start >= question_start:
            spans["query"].append(i)
        elif end <= n_start:
            spans["before"].append(i)
        elif start >= n_end:
            spans["after"].append(i)
        else:
            spans["needle"].append(i)
    return ids, spans


def segment_mass(attn: torch.Tensor, spans: dict) -> dict:
    """attn: heads x T x T (one sample). For each non-empty segment: the attention from the query
    rows to the segment's keys, summed over keys, averaged over heads and rows, / segment length."""
    rows = torch.tensor(spans["query"], device=attn.device)
    from_query = attn[:, rows].double()
    out = {}
    for name, cols in spans.items():
        if cols:
            block = from_query[:, :, torch.tensor(cols, device=attn.device)]
            out[name] = float(block.sum(-1).mean()) / len(cols)
    return out


def row_total(mass: dict, spans: dict) -> float:
    """sum over segments of mass x length: the mean row sum of the map over the query rows."""
    return sum(value * len(spans[name]) for name, value in mass.items())


def _layer_maps(model, ids: torch.Tensor) -> list[dict]:
    """Per layer {"layer", "positive": H x T x T, "negative": H x T x T or None, "lambda": float,
    "lambda_rows": what scales the negative map (a scalar tensor, or H x T x 1 for a per-token lambda)}.
    The maps stay on the model's device, float32; only the segment masses leave it, as floats."""
    if difflora_layers(model):
        layers = []
        for m in attention_maps(model, ids):
            lam = m["lambda"]  # float32, beside its maps (attention_maps' contract)
            rows = lam[0].T.unsqueeze(-1) if lam.dim() else lam  # per-token: row t of head h
            layers.append({"layer": m["layer"], "positive": m["positive"][0], "negative": m["negative"][0],
                           "lambda": float(lam.mean()), "lambda_rows": rows})
        return layers
    with compat.eager_attention(model), torch.no_grad():
        out = model(input_ids=ids, output_attentions=True, use_cache=False)
    if not out.attentions:
        raise UserError("the model returned no attention maps (output_attentions): "
                        "its attention class is not supported")
    return [{"layer": i, "positive": a[0].float(), "negative": None, "lambda": 0.0}
            for i, a in enumerate(out.attentions)]


def analyse_prompt(model, tokenizer, rendered: str, needle: str, question_start: int) -> dict:
    """Segment masses of one rendered prompt: {kind: [per layer {segment: mass}]}, plus lambda,
    layer indices, the segments' token counts and the row totals (a consistency check)."""
    ids, spans = segment_token_spans(tokenizer, rendered, needle, question_start)
    if not spans["query"]:
        raise UserError("the prompt has no query tokens after its needle")
    layers = _layer_maps(model, torch.tensor([ids], device=device_of(model)))
    result = {"positive": [], "negative": [], "net": [], "lambda": [], "layer": [], "row_total": []}
    for layer in layers:
        pos = segment_mass(layer["positive"], spans)
        neg = None
        if layer["negative"] is not None:
            neg = segment_mass(layer["negative"] * layer["lambda_rows"], spans)
        result["positive"].append(pos)
        result["negative"].append(neg)
        result["net"].append({k: pos[k] - (neg[k] if neg else 0.0) for k in pos})
        result["lambda"].append(layer["lambda"])
        result["layer"].append(layer["layer"])
        result["row_total"].append(row_total(result["net"][-1], spans))
    result["segment_tokens"] = {k: len(v) for k, v in spans.items()}
    return result
