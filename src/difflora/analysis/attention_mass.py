"""Attention mass per segment (the paper's Figure 4).

A needle prompt is cut into segments: BOS, the context before the needle (instruction included),
the needle, the context after it, and the query (question + answer prefix). For every layer, the
attention that the query tokens give to each segment is summed over the segment's keys, averaged
over heads and query tokens, and divided by the segment's length (so a long haystack does not win
by size). For DiffLoRA models the positive map and the lambda-scaled negative map are reported
separately, and the net mass is positive - lambda * negative.
"""

from __future__ import annotations

import os

import torch

from .. import compat
from ..evaluation.generation import count_tokens_fn, render
from ..evaluation.nih import make_sample
from ..evaluation.results import write_json
from ..inspect import attention_maps, difflora_layers

SEGMENTS = ("bos", "before", "needle", "after", "query")


def segment_token_spans(tokenizer, rendered: str, needle: str, question_start: int) -> tuple[list[int], dict]:
    """Token ids of `rendered` and {segment: [token indices]} (every token in exactly one segment)."""
    enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    n_start = rendered.index(needle)
    n_end = n_start + len(needle)
    spans = {name: [] for name in SEGMENTS}
    for i, (start, end) in enumerate(offsets):
        if i == 0 and ids[0] == tokenizer.bos_token_id:
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
    """attn: heads x T x T (one sample). Mean over heads and query rows of the mass on each segment,
    divided by the segment length."""
    rows = torch.tensor(spans["query"])
    out = {}
    for name, cols in spans.items():
        if not cols:
            continue
        block = attn[:, rows][:, :, torch.tensor(cols)]
        out[name] = float(block.sum(-1).mean()) / len(cols)
    return out


def _maps(model, ids: torch.Tensor) -> list[dict]:
    """Per layer {"positive": H x T x T, "negative": ... or None, "lambda": float}."""
    if difflora_layers(model):
        return [{"positive": m["positive"][0], "negative": m["negative"][0], "lambda": float(m["lambda"])}
                for m in attention_maps(model, ids)]
    with compat.eager_attention(model), torch.no_grad():
        out = model(input_ids=ids, output_attentions=True, use_cache=False)
    return [{"positive": a[0].float(), "negative": None, "lambda": 0.0} for a in out.attentions]


def analyse_prompt(model, tokenizer, rendered: str, needle: str, question_start: int) -> dict:
    ids, spans = segment_token_spans(tokenizer, rendered, needle, question_start)
    device = next(model.parameters()).device
    layers = _maps(model, torch.tensor([ids], device=device))
    result = {"positive": [], "negative": [], "net": [], "lambda": []}
    for layer in layers:
        pos = segment_mass(layer["positive"], spans)
        neg = segment_mass(layer["negative"] * layer["lambda"], spans) if layer["negative"] is not None else None
        result["positive"].append(pos)
        result["negative"].append(neg)
        result["net"].append({k: pos[k] - (neg[k] if neg else 0.0) for k in pos})
        result["lambda"].append(layer["lambda"])
    result["segment_tokens"] = {k: len(v) for k, v in spans.items()}
    return result


def _mean_dicts(dicts: list[dict]) -> dict:
    keys = dicts[0].keys()
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in keys}


def run_attention_mass(models: dict, length: int = 512, n_prompts: int = 4, task: str = "mk2", seed: int = 0,
                       out_dir: str | None = None) -> dict:
    """summary[label] = {"layers": {kind: [per layer {segment: mass}]}, "mean": {kind: {segment: mass}}}
    with kind in positive / negative (lambda-scaled, DiffLoRA only) / net."""
    summary = {}
    for label, (model, tokenizer) in models.items():
        per_prompt = []
        for i in range(n_prompts):
            sample = make_sample(task, length, i, count_tokens_fn(tokenizer), seed)
            rendered = render(tokenizer, sample.prompt, sample.answer_prefix)
            question_start = rendered.rindex("\nWhat ")
            per_prompt.append(analyse_prompt(model, tokenizer, rendered, sample.needle_text[0], question_start))
        entry = {"layers": {}, "mean": {}}
        for kind in ("positive", "negative", "net"):
            if per_prompt[0][kind][0] is None:
                continue
            layers = [_mean_dicts([p[kind][layer] for p in per_prompt]) for layer in range(len(per_prompt[0][kind]))]
            entry["layers"][kind] = layers
            entry["mean"][kind] = _mean_dicts(layers)
        entry["segment_tokens"] = per_prompt[0]["segment_tokens"]
        summary[label] = entry
    if out_dir:
        write_json(os.path.join(out_dir, "attention_mass.json"), summary)
        plot_attention_mass(summary, os.path.join(out_dir, "attention_mass.png"))
    return summary


def plot_attention_mass(summary: dict, path: str) -> str:
    """Grouped bars per segment: each model's positive mass above zero and, for DiffLoRA models, the
    lambda-scaled negative mass below zero; a dot marks the net mass."""
    from ..evaluation.plots import _save, plt

    labels = list(summary)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.8 / max(1, len(labels))
    for j, label in enumerate(labels):
        mean = summary[label]["mean"]
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(SEGMENTS))]
        pos = [mean["positive"].get(s, 0.0) for s in SEGMENTS]
        bars = ax.bar(xs, pos, width, label=label)
        if "negative" in mean:
            neg = [-mean["negative"].get(s, 0.0) for s in SEGMENTS]
            ax.bar(xs, neg, width, color=bars[0].get_facecolor(), alpha=0.45, hatch="//")
            ax.plot(xs, [mean["net"].get(s, 0.0) for s in SEGMENTS], "k.", markersize=5)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(SEGMENTS)), ["BOS", "before needle", "needle", "after needle", "query"])
    ax.set_ylabel("attention mass per token of the segment")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title("attention from the query, per segment (hatched: -lambda x negative map; dot: net)")
    ax.legend(fontsize=7)
    return _save(fig, path)
