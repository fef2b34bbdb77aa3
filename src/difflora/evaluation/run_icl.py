"""Running many-shot ICL over models x shot counts."""

from __future__ import annotations

import os

from .generation import check_length, generate, render
from .icl import ANSWER_PREFIX, BUNDLED, load_examples, make_sample, score
from .plots import accuracy_lines
from .results import progress_bar, write_json, write_jsonl
from .stats import bootstrap

DEFAULT_SHOTS = (6, 12, 24, 48)


def run_icl(models: dict, shots=DEFAULT_SHOTS, n_samples: int = 30, data: str = BUNDLED, seed: int = 0,
            out_dir: str | None = None, batch_size: int = 8, show_progress: bool = True) -> dict:
    """Returns summary[label][shots] = {mean, ci_low, ci_high, n}."""
    rows = load_examples(data)
    samples = {k: [make_sample(rows, k, i, seed) for i in range(n_samples)] for k in shots}
    summary, records = {}, []
    with progress_bar("many-shot ICL", len(models) * len(shots) * n_samples, show_progress) as advance:
        for label, (model, tokenizer) in models.items():
            for k in shots:
                texts = [render(tokenizer, s.prompt, ANSWER_PREFIX) for s in samples[k]]
                longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
                check_length(model, longest, 6)
                outputs = generate(model, tokenizer, texts, 6, batch_size, advance)
                scores = [score(o, s.gold) for o, s in zip(outputs, samples[k])]
                summary.setdefault(label, {})[k] = dict(bootstrap(scores).to_dict(), prompt_tokens=longest)
                records += [{"model": label, "shots": k, "index": s.index, "gold": s.gold, "output": o, "score": sc}
                            for s, o, sc in zip(samples[k], outputs, scores)]
    if out_dir:
        write_jsonl(os.path.join(out_dir, "icl_samples.jsonl"), records)
        write_json(os.path.join(out_dir, "icl_summary.json"), summary)
        accuracy_lines(summary, "demonstrations (shots)", "many-shot in-context classification",
                       os.path.join(out_dir, "icl.png"))
    return summary
