"""Attention mass per segment (the paper's Figure 4).

A needle prompt is cut into five segments: BOS, the context before the needle (instruction and
chat header included), the needle, the context after it, and the query (the question, the chat
template's tail and the answer prefix). For every layer, the attention that the query tokens give
to each segment is summed over the segment's keys, averaged over heads and query tokens, and
divided by the segment's length (so a long haystack does not win by size). Multiplying each
segment's mass back by its length and summing gives the row sum of the map: 1 for a softmax map,
1 - lambda for a DiffLoRA layer's net map.

For DiffLoRA models the positive map and the lambda-scaled negative map are reported separately
(kinds "positive" and "negative") with the net map (positive - lambda * negative) beside them;
the maps come from difflora.attention_maps, which covers the transformed layers. Base and LoRA
models are read with output_attentions under the eager backend (kinds "positive" and "net").
All layers' maps of one prompt are held at once (layers x heads x tokens^2 floats), so keep the
prompts to a few thousand tokens on a large model.

Prompts: generated needle prompts (the RULER tasks of difflora.evaluation.nih) or the user's own
JSONL rows {"prompt": text containing the needle, "needle": the needle text, "query": optional,
the question at the end of the prompt (default: the prompt's last line), "answer_prefix": optional}.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from .. import compat
from ..errors import UserError
from ..evaluation.generation import check_length, device_of, measure_fn, n_tokens, render
from ..evaluation.nih import make_sample
from ..evaluation.results import progress_bar, write_json
from ..inspect import attention_maps, difflora_layers
from ..textfiles import read_lines

SEGMENTS = ("bos", "before", "needle", "after", "query")
SEGMENT_NAMES = ("BOS", "before needle", "needle", "after needle", "query")
KINDS = ("positive", "negative", "net")


@dataclass
class NeedlePrompt:
    """A user prompt whose needle and query are known as text."""

    prompt: str
    needle: str
    query: str | None = None
    answer_prefix: str = ""


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
    "lambda_rows": what scales the negative map (lambda, or H x T x 1 for a per-token lambda)}."""
    if difflora_layers(model):
        layers = []
        for m in attention_maps(model, ids):
            lam = m["lambda"]
            rows = lam[0].T.unsqueeze(-1) if lam.dim() else float(lam)  # per-token: row t of head h
            layers.append({"layer": m["layer"], "positive": m["positive"][0], "negative": m["negative"][0],
                           "lambda": float(lam.mean()), "lambda_rows": rows})
        return layers
    with compat.eager_attention(model), torch.no_grad():
        out = model(input_ids=ids, output_attentions=True, use_cache=False)
    if not out.attentions:
        raise UserError("the model returned no attention maps (output_attentions): its attention class is not supported")
    return [{"layer": i, "positive": a[0].float(), "negative": None, "lambda": 0.0} for i, a in enumerate(out.attentions)]


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
            neg = segment_mass(layer["negative"] * layer.get("lambda_rows", layer["lambda"]), spans)
        result["positive"].append(pos)
        result["negative"].append(neg)
        result["net"].append({k: pos[k] - (neg[k] if neg else 0.0) for k in pos})
        result["lambda"].append(layer["lambda"])
        result["layer"].append(layer["layer"])
        result["row_total"].append(row_total(result["net"][-1], spans))
    result["segment_tokens"] = {k: len(v) for k, v in spans.items()}
    return result


def load_prompts(path: str) -> list[NeedlePrompt]:
    """User prompts from a JSONL file (see the module docstring)."""
    if not os.path.isfile(path):
        raise UserError(f"prompt file '{path}' does not exist")
    prompts = []
    for line_no, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("needle"), str):
            raise UserError(f'{path}:{line_no}: expected {{"prompt": ..., "needle": ..., "query": optional}}')
        prompt = NeedlePrompt(row["prompt"], row["needle"], row.get("query"), row.get("answer_prefix", ""))
        _query_start(prompt, f"{path}:{line_no}")
        prompts.append(prompt)
    if not prompts:
        raise UserError(f"prompt file '{path}' is empty")
    return prompts


def _query_start(p: NeedlePrompt, where: str = "prompt") -> int:
    """Character index in p.prompt where the query begins."""
    if p.query is not None:
        start = p.prompt.rfind(p.query)
        if start < 0:
            raise UserError(f"{where}: the query {p.query[:60]!r} is not in the prompt")
    else:
        start = p.prompt.rstrip("\n").rfind("\n") + 1
    if p.needle not in p.prompt[:start]:
        raise UserError(f"{where}: the needle {p.needle[:60]!r} must appear in the prompt before the query")
    return start


def _render_with_query(tokenizer, p: NeedlePrompt, chat: bool | None) -> tuple[str, int]:
    """The rendered text and the character where the query starts in it."""
    start = _query_start(p)
    marker = "\x00"  # find the query's position after the chat template wraps the prompt
    rendered = render(tokenizer, p.prompt[:start] + marker + p.prompt[start:], p.answer_prefix, chat)
    position = rendered.index(marker)
    return rendered.replace(marker, "", 1), position


def needle_prompts(tokenizer, task: str, length: int, n: int, seed: int, chat: bool | None) -> list[NeedlePrompt]:
    """Generated RULER prompts; the needle analysed is the first gold needle; the query is the question."""
    prompts = []
    for i in range(n):
        s = make_sample(task, length, i, measure_fn(tokenizer, chat), seed)
        question = s.prompt[s.prompt.rindex("\nWhat ") + 1:]
        prompts.append(NeedlePrompt(s.prompt, s.needle_text[0], question, s.answer_prefix))
    return prompts


def attention_mass(models: dict, prompts: list[NeedlePrompt] | str | None = None, length: int = 512,
                   n_prompts: int = 4, task: str = "mk2", seed: int = 0, out_dir: str | None = None,
                   chat: bool | None = None, show_progress: bool = False) -> dict:
    """Figure 4 for every model: {label: (model, tokenizer)}.

    prompts: NeedlePrompt list, a JSONL path, or None for n_prompts generated `task` prompts of
    `length` tokens. Returns summary[label] = {"layers": {kind: [per layer {segment: mass}]},
    "mean": {kind: {segment: mass}} (averaged over layers), "layer": [layer indices],
    "lambda": [per layer], "segment_tokens": {segment: mean tokens}, "row_total": [per layer]}.
    With out_dir: attention_mass.json, attention_mass.png (averaged) and attention_mass_layers.png."""
    if isinstance(prompts, str):
        prompts = load_prompts(prompts)
    if prompts is not None and not prompts:
        raise UserError("no prompts to analyse")
    rendered = {}  # label -> [(text, needle, query start)], every prompt checked before any forward
    for label, (model, tokenizer) in models.items():
        if prompts is None:
            check_length(model, length, 0, label)
        todo = prompts or needle_prompts(tokenizer, task, length, n_prompts, seed, chat)
        rendered[label] = [(*_render_with_query(tokenizer, p, chat), p.needle) for p in todo]
        check_length(model, max(n_tokens(tokenizer, text) for text, _, _ in rendered[label]), 0, label)
    summary = {}
    with progress_bar("attention mass", sum(map(len, rendered.values())), show_progress) as advance:
        for label, (model, tokenizer) in models.items():
            per_prompt = []
            for text, question_start, needle in rendered[label]:
                per_prompt.append(analyse_prompt(model, tokenizer, text, needle, question_start))
                advance(1)
            summary[label] = _average(per_prompt)
    if out_dir:
        write_json(os.path.join(out_dir, "attention_mass.json"), summary)
        plot_attention_mass(summary, os.path.join(out_dir, "attention_mass.png"))
        plot_attention_layers(summary, os.path.join(out_dir, "attention_mass_layers.png"))
    return summary


def run_attention_mass(models: dict, length: int = 512, n_prompts: int = 4, task: str = "mk2", seed: int = 0,
                       out_dir: str | None = None, prompts=None, chat: bool | None = None,
                       show_progress: bool = False) -> dict:
    """attention_mass with the generated-prompt settings first (the demo's call)."""
    return attention_mass(models, prompts, length, n_prompts, task, seed, out_dir, chat, show_progress)


def _average(per_prompt: list[dict]) -> dict:
    """Mean over prompts (per layer), then over layers."""
    def mean(dicts):
        keys = [k for k in SEGMENTS if all(k in d for d in dicts)]
        return {k: sum(d[k] for d in dicts) / len(dicts) for k in keys}

    n_layers = len(per_prompt[0]["positive"])
    entry = {"layers": {}, "mean": {}}
    for kind in KINDS:
        if per_prompt[0][kind][0] is None:
            continue
        layers = [mean([p[kind][i] for p in per_prompt]) for i in range(n_layers)]
        entry["layers"][kind] = layers
        entry["mean"][kind] = mean(layers)
    first = per_prompt[0]
    entry["layer"] = first["layer"]
    entry["lambda"] = first["lambda"]
    entry["row_total"] = [sum(p["row_total"][i] for p in per_prompt) / len(per_prompt) for i in range(n_layers)]
    entry["segment_tokens"] = {k: sum(p["segment_tokens"][k] for p in per_prompt) / len(per_prompt) for k in SEGMENTS}
    entry["n_prompts"] = len(per_prompt)
    return entry


def plot_attention_mass(summary: dict, path: str) -> str:
    """Grouped bars per segment: each model's positive mass above zero and, for DiffLoRA models,
    the lambda-scaled negative mass below zero (hatched); a dot marks the net mass."""
    from ..evaluation.plots import _save, plt

    labels = list(summary)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.8 / max(1, len(labels))
    for j, label in enumerate(labels):
        mean = summary[label]["mean"]
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(SEGMENTS))]
        bars = ax.bar(xs, [mean["positive"].get(s, 0.0) for s in SEGMENTS], width, label=label)
        if "negative" in mean:
            ax.bar(xs, [-mean["negative"].get(s, 0.0) for s in SEGMENTS], width, color=bars[0].get_facecolor(),
                   alpha=0.45, hatch="//")
            ax.plot(xs, [mean["net"].get(s, 0.0) for s in SEGMENTS], "k.", markersize=5)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(SEGMENTS)), SEGMENT_NAMES)
    ax.set_ylabel("attention mass per token of the segment")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title("attention from the query, averaged over layers\n(hatched: -lambda x negative map; dot: net)",
                 fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_attention_layers(summary: dict, path: str) -> str:
    """One panel per segment: mass per token against layer, one colour per model; solid positive
    map, dashed lambda-scaled negative map (DiffLoRA)."""
    from matplotlib.ticker import MaxNLocator

    from ..evaluation.plots import _save, plt

    fig, axes = plt.subplots(1, len(SEGMENTS), figsize=(3.0 * len(SEGMENTS), 3.3), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, seg, name in zip(axes[0], SEGMENTS, SEGMENT_NAMES):
        for j, (label, entry) in enumerate(summary.items()):
            colour = colours[j % len(colours)]
            layers = entry["layer"]
            ax.plot(layers, [m.get(seg, 0.0) for m in entry["layers"]["positive"]], "-o", color=colour,
                    markersize=3, label=label)
            if "negative" in entry["layers"]:
                ax.plot(layers, [m.get(seg, 0.0) for m in entry["layers"]["negative"]], "--", color=colour,
                        label=f"{label} (lambda x negative)")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mass per token")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle("attention from the query per layer")
    return _save(fig, path)
