"""Chatting with a trained output folder (adapter + tokenizer, or a full model)."""

from __future__ import annotations

import torch

from ..devices import device_of
from ..loading import load_model


def chat(model, tokenizer, prompt: str, max_new_tokens: int = 128, temperature: float = 0.0,
         system: str | None = None) -> str:
    """One assistant reply to `prompt`, using the tokenizer's chat template and the KV cache."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    inputs = {k: v.to(device_of(model)) for k, v in inputs.items()}
    sampling = dict(do_sample=True, temperature=temperature) if temperature > 0 else dict(do_sample=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def load_for_chat(output_dir: str, device: str | None = None):
    """(model, tokenizer) from a training output folder or a BASE::ADAPTER spec, on `device`
    (default: the GPU when there is one, else the CPU)."""
    return load_model(output_dir, device=device or ("cuda" if torch.cuda.is_available() else None))
