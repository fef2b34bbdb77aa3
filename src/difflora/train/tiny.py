"""A CPU-sized setup for configs/tiny/: a tiny random Llama with a locally trained chat tokenizer,
and a chat JSONL of arithmetic questions. It shows the pipeline end to end in seconds (no hub);
its numbers say nothing about the method (the demo's pretrained base is the one for that).

    python -m difflora.train.tiny runs/tiny     # writes runs/tiny/base and runs/tiny/train.jsonl
    difflora train configs/tiny/difflora-64-fixed.yaml
"""

from __future__ import annotations

import json
import os
import random
import sys


def arithmetic_conversations(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append({"messages": [{"role": "system", "content": "Answer briefly."},
                                  {"role": "user", "content": f"What is {a} plus {b}?"},
                                  {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]})
    return rows


def make_tiny_setup(out_dir: str, examples: int = 512, hidden_size: int = 64, layers: int = 2) -> tuple[str, str]:
    """(base model folder, train.jsonl path) under out_dir; reused when already there."""
    from ..data.tokenizer import train_tokenizer
    from ..testing import tiny_model

    base, data = os.path.join(out_dir, "base"), os.path.join(out_dir, "train.jsonl")
    rows = arithmetic_conversations(examples)
    if not os.path.isfile(data):
        os.makedirs(out_dir, exist_ok=True)
        with open(data, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    if not os.path.isfile(os.path.join(base, "config.json")):
        texts = [m["content"] for r in rows for m in r["messages"]]
        tokenizer = train_tokenizer(texts, vocab_size=384)
        model = tiny_model("llama", vocab_size=len(tokenizer), hidden_size=hidden_size, layers=layers)
        tmp = base + ".tmp"
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        if os.path.isdir(base):  # left by an interrupted earlier call
            import shutil

            shutil.rmtree(base)
        os.replace(tmp, base)  # a complete folder or none
    return base, data


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "runs/tiny"
    base_path, data_path = make_tiny_setup(target)
    print(f"tiny base model: {base_path}\nchat data: {data_path}")
