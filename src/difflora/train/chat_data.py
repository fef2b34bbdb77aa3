"""Chat-format instruction data: reading, validating, tokenising with assistant-only labels.

Input: JSON Lines with one {"messages": [{"role": ..., "content": ...}, ...]} per line (the
Tulu-2/Tulu-3 format), a folder of such files, or a `datasets` name (when the hub is reachable).
Labels are -100 everywhere but on assistant turns (open-instruct's default, the paper's setting).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..textfiles import read_jsonl

ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100


@dataclass
class ReadStats:
    rows: int = 0
    skipped: int = 0
    truncated: int = 0
    empty_after_truncation: int = 0
    problems: list[str] = field(default_factory=list)  # the first few skipped rows, for the summary


# ------------------------------------------------------------------------------------------------
# reading and validating


def read_conversations(source: str, skip_bad_rows: bool = False, stats: ReadStats | None = None) -> list[list[dict]]:
    """All conversations in a JSONL file, a folder of them, or a datasets name."""
    stats = stats if stats is not None else ReadStats()
    if os.path.isdir(source):
        files = sorted(glob.glob(os.path.join(source, "**", "*.jsonl"), recursive=True))
        if not files:
            raise UserError(f"data folder '{source}' holds no .jsonl files")
    elif os.path.isfile(source):
        files = [source]
    elif _looks_like_path(source):
        raise UserError(f"data file '{source}' does not exist")
    else:
        return _read_hub_dataset(source, skip_bad_rows, stats)
    conversations = []
    for path in files:
        conversations.extend(_read_jsonl(path, skip_bad_rows, stats))
    if not conversations:
        raise UserError(f"no usable conversations in '{source}' ({stats.skipped} bad rows skipped)")
    return conversations


def _looks_like_path(source: str) -> bool:
    return source.endswith((".jsonl", ".json")) or source.startswith((".", "/", "~"))


FIX_HINT = "(fix the row, or set data.skip_bad_rows: true to skip bad rows)"


def _read_jsonl(path: str, skip_bad_rows: bool, stats: ReadStats) -> list[list[dict]]:
    def skip_invalid_json(where: str, reason: str) -> None:
        stats.rows += 1
        _skip(stats, f"{where}: {reason}")

    rows = read_jsonl(path, hint=FIX_HINT, on_bad_line=skip_invalid_json if skip_bad_rows else None)
    return _conversations(rows, skip_bad_rows, stats)


def _read_hub_dataset(name: str, skip_bad_rows: bool, stats: ReadStats) -> list[list[dict]]:
    try:
        from datasets import load_dataset

        rows = load_dataset(name, split="train")
    except Exception as exc:
        raise UserError(f"data '{name}' is neither a local file/folder nor a loadable datasets name "
                        f"({type(exc).__name__})") from exc
    return _conversations(((f"{name} row {i}", row) for i, row in enumerate(rows)), skip_bad_rows, stats)


def _conversations(rows, skip_bad_rows: bool, stats: ReadStats) -> list[list[dict]]:
    """The valid conversations among (where, row) pairs: a bad row is a UserError naming where it is,
    or, with skip_bad_rows, counted and left out."""
    out = []
    for where, row in rows:
        stats.rows += 1
        try:
            out.append(validate_conversation(row))
        except ValueError as exc:
            if not skip_bad_rows:
                raise UserError(f"{where}: {exc} {FIX_HINT}") from None
            _skip(stats, f"{where}: {exc}")
    return out


def _skip(stats: ReadStats, problem: str) -> None:
    stats.skipped += 1
    if len(stats.problems) < 5:
        stats.problems.append(problem)


def validate_conversation(row) -> list[dict]:
    """The row's messages, or ValueError naming what is wrong with it."""
    if not isinstance(row, dict) or "messages" not in row:
        raise ValueError('expected an object with a "messages" list')
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f'message {i} must be {{"role": str, "content": str}}')
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role '{m['role']}', expected one of {', '.join(ROLES)}")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the conversation has no assistant turn, so nothing to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# ------------------------------------------------------------------------------------------------
# tokenising


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int,
                          stats: ReadStats | None = None) -> dict | None:
    """input_ids and labels (-100 outside assistant turns), truncated to max_length; None if no
    assistant token survives truncation."""
    ids, mask = _ids_and_assistant_mask(tokenizer, messages)
    if len(ids) > max_length:
        ids, mask = ids[:max_length], mask[:max_length]
        if stats is not None:
            stats.truncated += 1
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
    if all(label == IGNORE_INDEX for label in labels):
        if stats is not None:
            stats.empty_after_truncation += 1
        return None
    return {"input_ids": ids, "labels": labels}


def _ids_and_assistant_mask(tokenizer, messages):
    if "{% generation %}" in (tokenizer.chat_template or ""):
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        return list(enc["input_ids"]), list(enc["assistant_masks"])
    return _mask_from_rendered_prefixes(tokenizer, messages)


def _mask_from_rendered_prefixes(tokenizer, messages):
    """For chat templates without {% generation %} markers (most real ones): an assistant turn
    starts where rendering messages[:i] with a generation prompt ends; the learned span is the
    message content there plus the end-of-turn token that follows it (as the markers would give)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    eos = tokenizer.eos_token or ""
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt_end = len(tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True))
        content = m["content"] if text.find(m["content"], prompt_end) >= 0 else m["content"].strip()  # Llama 3 trims
        start = text.find(content, prompt_end)
        if start < 0:
            raise UserError("the tokenizer's chat template rewrites assistant text, so the assistant tokens cannot be "
                            "found: give a template with {% generation %} markers (tokenizer: PATH)")
        end = start + len(content)
        if eos and text.startswith(eos, end):
            end += len(eos)
        spans.append((start, end))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= a < e for s, e in spans)) for a, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def pack(examples: list[dict], max_length: int) -> list[dict]:
    """Concatenate tokenised examples into blocks of exactly max_length tokens (the last, shorter
    block is kept). Labels keep their assistant-only masking."""
    blocks, ids, labels = [], [], []
    for ex in examples:
        ids.extend(ex["input_ids"])
        labels.extend(ex["labels"])
        while len(ids) >= max_length:
            blocks.append({"input_ids": ids[:max_length], "labels": labels[:max_length]})
            ids, labels = ids[max_length:], labels[max_length:]
    if ids and any(label != IGNORE_INDEX for label in labels):
        blocks.append({"input_ids": ids, "labels": labels})
    return blocks


@dataclass
class ChatCollator:
    """Right-pads input_ids (pad id), labels (-100) and builds the attention mask."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def build_dataset(source: str, tokenizer, max_length: int, packing: bool = False, skip_bad_rows: bool = False,
                  max_examples: int | None = None, stats: ReadStats | None = None, progress: bool = False):
    """A datasets.Dataset of tokenised examples (input_ids, labels)."""
    from datasets import Dataset
    from rich.progress import track

    stats = stats if stats is not None else ReadStats()
    conversations = read_conversations(source, skip_bad_rows, stats)
    if max_examples:
        conversations = conversations[:max_examples]
    conversations = track(conversations, description=f"tokenising {os.path.basename(source.rstrip('/'))}",
                          disable=not progress, transient=True)
    examples = [ex for c in conversations if (ex := tokenize_conversation(tokenizer, c, max_length, stats))]
    if not examples:
        raise UserError(f"'{source}': no example keeps an assistant token within max_length={max_length}")
    if packing:
        examples = pack(examples, max_length)
    return Dataset.from_list(examples)
