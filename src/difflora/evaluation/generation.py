"""Batched greedy generation with the KV cache and left padding, for any (model, tokenizer) pair.

Prompts are rendered as HELMET does: with the tokenizer's chat template when it has one (the
answer prefix goes right after the generation prompt, so the model continues the assistant turn),
otherwise as plain text: BOS + prompt + separator + answer prefix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..devices import device_of
from ..errors import UserError
from ..loading import ensure_pad_token


def uses_chat(tokenizer, chat: bool | None = None) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat


def render(tokenizer, prompt: str, answer_prefix: str = "", chat: bool | None = None, separator: str = "") -> str:
    """The exact text the model sees (special tokens written out; tokenize it without adding more)."""
    if uses_chat(tokenizer, chat):
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("the tokenizer has no chat template: run without --chat-template")
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return text + answer_prefix.lstrip()
    return (tokenizer.bos_token or "") + prompt + separator + answer_prefix


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def measure_fn(tokenizer, chat: bool | None = None, separator: str = "") -> Callable[[str, str], int]:
    """measure(prompt, answer_prefix) = tokens of the rendered input, chat wrapping included."""
    def measure(prompt: str, answer_prefix: str = "") -> int:
        return n_tokens(tokenizer, render(tokenizer, prompt, answer_prefix, chat, separator))
    return measure


def max_context(model) -> int | None:
    """The longest sequence the model's positions cover (None when the config does not say)."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "max_position_embeddings", None) or None


def check_length(model, length: int, max_new_tokens: int, label: str = "the model") -> None:
    """Refuse, before any work, a prompt the model cannot take."""
    limit = max_context(model)
    if limit is not None and length + max_new_tokens > limit:
        raise UserError(f"{length} prompt tokens + {max_new_tokens} new tokens exceed {label}'s "
                        f"max_position_embeddings ({limit}): choose shorter lengths or fewer shots")


@torch.no_grad()
def generate(model, tokenizer, texts: list[str], max_new_tokens: int = 32, batch_size: int = 8,
             progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy continuations of already-rendered texts, in the order given.

    Texts are batched longest first (similar lengths share a batch, so little padding, and an
    out-of-memory error shows up in the first batch rather than the last)."""
    if not texts:
        return []
    tokenizer.padding_side = "left"
    ensure_pad_token(tokenizer)
    lengths = [n_tokens(tokenizer, t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    device = device_of(model)
    outputs: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                             pad_token_id=tokenizer.pad_token_id)
        decoded = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(chunk, decoded):
            outputs[i] = text
        if progress is not None:
            progress(len(chunk))
    return outputs
