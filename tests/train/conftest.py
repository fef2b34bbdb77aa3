import json
import random

import pytest


def chat_rows(n=48, seed=0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        rows.append({"messages": [{"role": "system", "content": "Answer briefly."},
                                  {"role": "user", "content": f"What is {a} plus {b}?"},
                                  {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]})
    return rows


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


@pytest.fixture
def chat_file(tmp_path):
    return str(write_jsonl(tmp_path / "train.jsonl", chat_rows()))


@pytest.fixture
def train_cfg(tiny_base_dir, chat_file, tmp_path):
    def make(**method):
        return {
            "model": str(tiny_base_dir), "output_dir": str(tmp_path / "out"),
            "method": method or {"type": "difflora", "preset": "difflora-32", "r": 8, "positive_r": 8},
            "data": {"train": chat_file, "max_length": 64},
            "training": {"max_steps": 8, "per_device_train_batch_size": 4, "logging_steps": 2, "save_steps": 4,
                         "learning_rate": 1e-3, "report_to": []},
        }
    return make
