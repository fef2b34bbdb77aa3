"""Running many-shot ICL over models x numbers of demonstrations."""

from __future__ import annotations

import os

from ..errors import UserError
from .generation import check_length, generate, n_tokens, render
from .icl import ANSWER_PREFIX, BUNDLED, SEPARATOR, load_examples, make_sample, pick_test_example, score
from .plots import accuracy_lines
from .results import progress_bar, write_results
from .stats import bootstrap

DEFAULT_SHOTS = (6, 12, 24, 48)


def run_icl(models: dict, shots=DEFAULT_SHOTS, n_samples: int = 30, data: str = BUNDLED, seed: int = 0,
            out_dir: str | None = None, batch_size: int = 8, show_progress: bool = True,
            test_data: str | None = None, text_field: str = "text", label_field: str = "label",
            split: str = "train", test_split: str = "test", chat: bool | None = None, max_new_tokens: int = 8) -> dict:
    """Many-shot ICL accuracy of every model at every number of demonstrations.

    models: {label: (model, tokenizer)}; data: a (text, label) JSONL, a datasets name or BUNDLED;
    test_data: where test examples come from (default: the same pool, each test example left out
    of its own demonstrations). The same test examples are used at every shot count. Returns
    summary[label][shots] = {"mean", "ci_low", "ci_high", "n", "prompt_tokens"}.
    With out_dir: icl_samples.jsonl, icl_summary.json, icl_settings.json, icl.png."""
    shots = sorted(int(k) for k in shots)
    if not models or not shots or n_samples < 1 or shots[0] < 0:
        raise UserError("many-shot ICL needs at least one model, a non-negative shot count and one sample")
    pool = load_examples(data, text_field, label_field, split)
    tests = load_examples(test_data, text_field, label_field, test_split) if test_data else pool
    test_rows = [pick_test_example(tests, i, seed) for i in range(n_samples)]
    samples = {k: [make_sample(pool, k, i, seed, test=t, demo_pool=pool if test_data else None)
                   for i, t in enumerate(test_rows)] for k in shots}

    jobs = []  # (label, shots, texts, longest prompt)
    for label, (model, tokenizer) in models.items():
        for k in shots:
            texts = [render(tokenizer, s.prompt, ANSWER_PREFIX, chat, SEPARATOR) for s in samples[k]]
            longest = max(n_tokens(tokenizer, t) for t in texts)
            check_length(model, longest, max_new_tokens, label)  # before any generation
            jobs.append((label, k, texts, longest))

    summary: dict = {}
    rows = []
    with progress_bar("many-shot ICL", len(jobs) * n_samples, show_progress) as advance:
        for label, k, texts, longest in jobs:
            model, tokenizer = models[label]
            outputs = generate(model, tokenizer, texts, max_new_tokens, batch_size, advance)
            scores = [score(o, s.answer) for o, s in zip(outputs, samples[k])]
            summary.setdefault(label, {})[k] = dict(bootstrap(scores).to_dict(), prompt_tokens=longest)
            rows += [{"model": label, "shots": k, "index": s.index, "text": s.text, "label": s.label,
                      "gold": s.gold, "output": o, "score": sc} for s, o, sc in zip(samples[k], outputs, scores)]
    if out_dir:
        settings = dict(shots=shots, n_samples=n_samples, data=data, test_data=test_data, seed=seed,
                        classes=len({r["label"] for r in pool}), chat=chat, max_new_tokens=max_new_tokens)
        write_results(out_dir, "icl", summary, rows, settings)
        plot_icl(summary, out_dir)
    return summary


def plot_icl(summary: dict, out_dir: str) -> str:
    return accuracy_lines(summary, "demonstrations (shots)", "many-shot in-context classification",
                          os.path.join(out_dir, "icl.png"))
