"""Batched greedy generation with the KV cache, left padding, and the chat template when the
tokenizer has one (the answer prefix is appended after the generation prompt, as HELMET does)."""

from __future__ import annotations

import torch

from ..errors import UserError


def render(tokenizer, prompt: str, answer_prefix: str = "", chat: bool | None = None) -> str:
    use_chat = bool(tokenizer.chat_template) if chat is None else chat
    if use_chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return text + answer_prefix.lstrip()
    bos = tokenizer.bos_token or ""
    return bos + prompt + answer_prefix


def max_context(model) -> int:
    config = model.config
    return int(getattr(config, "max_position_embeddings", 0) or 1 << 30)


def check_length(model, length: int, max_new_tokens: int) -> None:
    limit = max_context(model)
    if length + max_new_tokens > limit:
        raise UserError(f"context length {length} + {max_new_tokens} new tokens exceeds the model's "
                        f"max_position_embeddings ({limit}): choose shorter --lengths")


@torch.no_grad()
def generate(model, tokenizer, texts: list[str], max_new_tokens: int = 32, batch_size: int = 8,
             progress=None) -> list[str]:
    """Greedy continuations of already-rendered texts (special tokens included in the text)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
        if progress is not None:
            progress(len(batch["input_ids"]))
    return outputs


def count_tokens_fn(tokenizer, chat: bool | None = None, answer_prefix_included: bool = True):
    """count(text) = tokens of the rendered prompt (chat wrapping included)."""
    def count(text: str) -> int:
        return len(tokenizer(render(tokenizer, text, chat=chat), add_special_tokens=False)["input_ids"])
    return count
