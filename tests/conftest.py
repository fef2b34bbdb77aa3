"""Shared fixtures: tiny models built from config and a tiny locally trained tokenizer (no hub)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from a second thread, and an oversubscribed core makes them up to 40x
# slower (measured when another process held a core); subprocesses inherit OMP_NUM_THREADS.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "One of the special magic numbers for apple is: 1234567.",
    "What are all the special magic numbers for apple mentioned in the provided text?",
    "Use the provided mapping from the text to label to assign a label to the text.",
    "label: 3\nlabel: 12\nThe weather today is sunny and warm.",
    "Question: what is the capital of France? Answer: Paris.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from difflora.data.tokenizer import train_tokenizer

    return train_tokenizer(CORPUS, vocab_size=384)


@pytest.fixture
def tiny_model_factory():
    from difflora.testing import tiny_model

    return tiny_model


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny Llama checkpoint + tokenizer saved to disk, loadable with from_pretrained like a real one."""
    from difflora.testing import tiny_model

    path = tmp_path_factory.mktemp("tiny-base")
    model = tiny_model("llama", vocab_size=len(tiny_tokenizer), hidden_size=64, layers=2)
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path
