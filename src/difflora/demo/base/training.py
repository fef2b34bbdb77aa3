"""What both phases of a base build train with (pretraining in build.py, the ICL finish in
icl_finish.py): a document's token ids and labels, whole-document packing, and a Trainer that takes
its rows in dataset order.
"""

from __future__ import annotations

MAX_DOCUMENT = 4096  # tokens: longer than any generated document (a 26-needle context with 8 questions is ~900)


def tokenize_document(doc: dict | str, tokenizer, max_length: int, loss_on: str = "all") -> dict:
    """Token ids and labels of one document. Prose: every token is learned. Conversations: every
    token (loss_on="all"), the assistant turns ("answers"), or ("values") the assistant turns but,
    in a retrieval answer, only from its first value on: the words before it restate the question,
    and learning them drowns the one thing worth learning there, finding the value in the context
    (measured: a 2-layer model copies 7-digit values within a few hundred steps this way, and not
    at all in 900 steps when the restated words are learned too)."""
    from ...train.chat_data import IGNORE_INDEX

    if not isinstance(doc, dict):
        ids = tokenizer(tokenizer.bos_token + doc + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        return {"input_ids": ids[:max_length], "labels": list(ids[:max_length])}
    enc = tokenizer.apply_chat_template(doc["messages"], tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    if loss_on == "all":
        learned = [True] * len(ids)
    elif loss_on == "values" and doc.get("values"):
        learned = _from_first_value(tokenizer, doc, ids, mask)
    else:
        learned = [bool(m) for m in mask]
    return {"input_ids": ids[:max_length],
            "labels": [t if keep else IGNORE_INDEX for t, keep in zip(ids[:max_length], learned)]}


def _from_first_value(tokenizer, doc: dict, ids: list[int], mask: list[int]) -> list[bool]:
    """Assistant tokens from the first occurrence of a value in each assistant turn to its end."""
    text = tokenizer.apply_chat_template(doc["messages"], tokenize=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != ids:  # the template tokenises as its text does; else learn whole turns
        return [bool(m) for m in mask]
    learned, learning = [], False
    for m, (start, _) in zip(mask, enc["offset_mapping"]):
        if not m:
            learning = False
        elif not learning:
            learning = any(text.startswith(v, start) or text.startswith(v, start + 1) for v in doc["values"])
        learned.append(bool(m) and learning)
    return learned


def pack_whole(examples: list[dict], max_length: int) -> list[dict]:
    """First-fit packing of whole documents (none is split, so no question loses its context) into
    blocks of at most max_length tokens: little padding, every block a batch row."""
    blocks: list[dict] = []
    room: list[int] = []
    for ex in sorted(examples, key=lambda e: -len(e["input_ids"])):
        n = len(ex["input_ids"])
        slot = next((i for i, r in enumerate(room) if r >= n), None)
        if slot is None:
            blocks.append({"input_ids": [], "labels": []})
            room.append(max_length)
            slot = len(blocks) - 1
        blocks[slot]["input_ids"] += ex["input_ids"]
        blocks[slot]["labels"] += ex["labels"]
        room[slot] -= n
    return blocks


def in_order_trainer():
    """A transformers Trainer class that takes the rows in dataset order."""
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class InOrderTrainer(Trainer):
        """Takes the blocks in dataset order (a curriculum's stages come one after another; each
        stage's blocks are already shuffled, deterministically)."""

        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    return InOrderTrainer
