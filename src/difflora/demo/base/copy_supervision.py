"""Supervising one attention head of the demo's base model to look where a retrieved value is.

Needle retrieval takes two circuits: a *copy* circuit (attend to a value's digits and write them
out) and a *match* circuit (the attention's query carries the asked key, each needle's value
carries its own key, and the two are compared). A tiny model trained on answers alone learns the
first within a few hundred steps and then sits on a plateau: its answer is the value of a needle
chosen at random (loss ln(needles) on the first digit; docs/notes/demo-base-model.md records about
thirty such recipes). The match circuit gets no gradient until attention already prefers the right
needle, so nothing starts it.

The base recipe therefore adds three losses. Copy: the heads of the last layer are told, at every
answered digit, which context position holds that digit of the right value (cross-entropy of
their attention rows against that position). Gather: two first-layer heads are told to look at the
key's words, at every needle value and at every answer, so that both sides carry the key. Readout:
the last layer's attention output alone must name the digit its heads look at, so the model reads
them. The gradients reach the projections directly, so the key comparison is learned within a few
hundred steps. The pairs are found in the batch itself: an answered run of digits is a copy of the
same digits earlier in the row. The finished model is an ordinary Llama checkpoint; the supervision
only shapes pretraining.
"""

from __future__ import annotations

import torch

from ...train.chat_data import IGNORE_INDEX

VALUE_DIGITS = 7  # the needles' numbers have 7 digits (evaluation/haystack.number_value)


def digit_token_ids(tokenizer) -> set[int]:
    """Ids of the ten one-digit tokens (the recipe's tokenizer splits numbers into digits)."""
    ids = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    return {i for i in ids if i is not None and i != tokenizer.unk_token_id}


def copy_pairs(input_ids: torch.Tensor, labels: torch.Tensor, digits: set[int]) -> torch.Tensor:
    """(row, query, source) triples: for each learned run of VALUE_DIGITS digit tokens whose digits
    also appear, unlearned, earlier in the row (a value answered from the context), the position
    predicting digit i (query) and the context position of digit i (source)."""
    triples: list[tuple[int, int, int]] = []
    for row, (ids, labs) in enumerate(zip(input_ids.tolist(), labels.tolist())):
        is_digit = [t in digits for t in ids]
        start = 0
        while start < len(ids):
            if not (is_digit[start] and labs[start] != IGNORE_INDEX and (start == 0 or not is_digit[start - 1])):
                start += 1
                continue
            end = start
            while end < len(ids) and is_digit[end]:
                end += 1
            run = ids[start:end]
            if len(run) == VALUE_DIGITS and start > 0:
                source = _earlier_copy(ids, labs, run, start)
                if source is not None:
                    triples += [(row, start + i - 1, source + i) for i in range(len(run))]
            start = end
    return torch.tensor(triples, dtype=torch.long).reshape(-1, 3)


def _earlier_copy(ids: list[int], labels: list[int], run: list[int], before: int) -> int | None:
    """Start of the first unlearned occurrence of `run` before position `before`."""
    n = len(run)
    for s in range(0, before - n + 1):
        if ids[s:s + n] == run and labels[s] == IGNORE_INDEX:
            return s
    return None


def needle_marks(tokenizer) -> dict[str, int]:
    """Ids of the tokens around a needle's value in the recipe's tokenizer: "-" inside a word key,
    then " is", ":", " " before the value's first digit (" amber-apple is: 1")."""
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(" amber-apple is: 1", add_special_tokens=False)["input_ids"])
    if len(pieces) != 7 or pieces[-1] != "1":
        raise ValueError(f"the tokenizer splits a needle as {pieces}: key gathering needs one token per key word")
    ids = tokenizer.convert_tokens_to_ids(pieces)
    return {"hyphen": ids[1], "is": ids[3], "colon": ids[4], "space": ids[5]}


def unambiguous(input_ids: torch.Tensor, pairs: torch.Tensor, digits: set[int], marks: dict[str, int]) -> torch.Tensor:
    """The copy pairs without the first digits of values whose key several needles share (a
    multi-value question): which of those needles comes next is a matter of order, not of the key,
    and supervising it would pull the matching heads away from the key."""
    rows = input_ids.tolist()
    keys: dict[int, dict[tuple, int]] = {}
    for row, ids in enumerate(rows):
        counts: dict[tuple, int] = {}
        for p in needle_starts(ids, digits, marks):
            counts[tuple(ids[p - 6:p - 3])] = counts.get(tuple(ids[p - 6:p - 3]), 0) + 1
        keys[row] = counts
    keep = []
    for row, query, source in pairs.tolist():
        ids = rows[row]
        first = ids[query] not in digits  # the pair of a value's first digit
        shared = source >= 6 and keys[row].get(tuple(ids[source - 6:source - 3]), 0) > 1
        keep.append(not (first and shared))
    return pairs[torch.tensor(keep, dtype=torch.bool)] if keep else pairs


def gather_pairs(input_ids: torch.Tensor, copies: torch.Tensor, digits: set[int],
                 marks: dict[str, int]) -> torch.Tensor:
    """(row, position, target, head) for the first layer's key-gathering heads: at every needle
    value's first digit and at every answered value's first query, head 0 looks at the key's noun
    and head 1 at its adjective (of the needle there, or of the asked key in the question's answer)."""
    quads: list[tuple[int, int, int, int]] = []
    rows = input_ids.tolist()
    for row, ids in enumerate(rows):
        quads += [q for p in needle_starts(ids, digits, marks) for q in ((row, p, p - 4, 0), (row, p, p - 6, 1))]
    for row, q, source in copies.tolist():
        ids = rows[row]
        if source < 6 or not _is_needle_start(ids, source, marks) or ids[q + 1] != ids[source] or \
                (q > 0 and ids[q] in digits):
            continue  # not a value's first digit answered from a needle
        key = ids[source - 6:source - 3]
        for o in range(q - 3, source, -1):
            if ids[o:o + 3] == key:
                quads += [(row, q, o + 2, 0), (row, q, o, 1)]
                break
    return torch.tensor(quads, dtype=torch.long).reshape(-1, 4)


def needle_starts(ids: list[int], digits: set[int], marks: dict[str, int]) -> list[int]:
    """Positions of the first digit of every needle value in a row ("... amber-apple is: 1...")."""
    return [p for p in range(6, len(ids)) if ids[p] in digits and _is_needle_start(ids, p, marks)]


def _is_needle_start(ids: list[int], p: int, marks: dict[str, int]) -> bool:
    return (ids[p - 1] == marks["space"] and ids[p - 2] == marks["colon"] and ids[p - 3] == marks["is"]
            and ids[p - 5] == marks["hyphen"])


ICL_GATHER_HEADS = (2, 3)  # first-layer heads left free by the key gathering (heads 0 and 1)


def label_marks(tokenizer, examples: list[dict] | None = None) -> dict:
    """Ids of the tokens around an in-context-classification label (".", line break, "label", ":",
    " " before the class id; evaluation/icl.py's "{text}\nlabel: {id}") and the special tokens; with
    `examples` ({text, label} rows) also the words that say nothing of the class ("common": tokens in
    the texts of more than half the classes, such as "the"), which the gathering heads then skip."""
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(".\nlabel: 4", add_special_tokens=False)["input_ids"])
    if len(pieces) != 6 or pieces[-1] != "4":
        raise ValueError(f"the tokenizer splits an ICL label line as {pieces}: ICL supervision needs one token each")
    ids = tokenizer.convert_tokens_to_ids(pieces)
    classes: dict[int, set] = {}
    for row in examples or []:
        for token in tokenizer(row["text"], add_special_tokens=False)["input_ids"]:
            classes.setdefault(token, set()).add(row["label"])
    n_classes = len({row["label"] for row in examples or []})
    return {"period": ids[0], "newline": ids[1], "label": ids[2], "colon": ids[3], "space": ids[4],
            "special": set(tokenizer.all_special_ids),
            "common": {t for t, seen in classes.items() if len(seen) > n_classes / 2}}


def icl_pairs(input_ids: torch.Tensor, labels: torch.Tensor, digits: set[int], marks: dict,
              heads: tuple[int, ...] = ICL_GATHER_HEADS, overlap: bool = False,
              ends: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(copy pairs, gather quads) of in-context classification. A learned class id ("label: 3" in the
    answer) is copied from the ids of the demonstrations of the same class: its query (the position
    predicting it) points at each of them. The first layer's `heads` gather a sentence's words at its
    label (every demonstration's, and the answer's query for the test sentence), so that both sides
    of the comparison carry the sentence's topic, as the key words do for a needle. With `overlap`
    the copy points only at the same-class demonstrations whose sentence shares a word with the test
    sentence (an exact match, like a needle's key, rather than a topic the model must first know).
    With `ends` a sentence is keyed like a needle: heads[1] looks at its first word and heads[0] at
    its last (the subject's and the object's, "The chef ... garlic bread."), and `overlap` compares those."""
    triples: list[tuple[int, int, int]] = []
    quads: list[tuple[int, int, int, int]] = []
    for row, (ids, labs) in enumerate(zip(input_ids.tolist(), labels.tolist())):
        label_ids = [p for p in range(3, len(ids)) if ids[p] in digits and ids[p - 1] == marks["space"]
                     and ids[p - 2] == marks["colon"] and ids[p - 3] == marks["label"]]
        demos = [p for p in label_ids if labs[p] == IGNORE_INDEX]
        sentences = {p: _sentence_before(ids, p - 3, marks) for p in label_ids}
        keys = {p: _sentence_key(ids, sentences[p], ends) for p in label_ids} if overlap else {}
        for p in label_ids:
            answered = labs[p] != IGNORE_INDEX
            if answered:
                triples += [(row, p - 1, s) for s in demos if s < p and ids[s] == ids[p] and
                            (not overlap or keys[p] & keys[s])]
            at = p - 1 if answered else p
            sentence = sentences[p]
            if ends and sentence:
                quads += [(row, at, sentence[0], heads[1]), (row, at, sentence[-1], heads[0])]
            elif not ends:
                quads += [(row, at, w, h) for w in sentence for h in heads]
    return (torch.tensor(triples, dtype=torch.long).reshape(-1, 3),
            torch.tensor(quads, dtype=torch.long).reshape(-1, 4))


def _sentence_key(ids: list[int], words: list[int], ends: bool) -> set:
    """What a sentence (the positions of its words) is matched on: its words, or (ends) its first and
    its last word."""
    if ends:
        return {("first", ids[words[0]]), ("last", ids[words[-1]])} if words else set()
    return {ids[w] for w in words}


def _sentence_before(ids: list[int], label: int, marks: dict, longest: int = 32) -> list[int]:
    """Positions of the words of the sentence a "label" token at `label` closes (back to the line
    break before it, skipping the line breaks, special tokens and full stop after it, and the
    class-neutral words when `marks` has them)."""
    j = label - 1
    while j >= 0 and (ids[j] == marks["newline"] or ids[j] in marks["special"] or ids[j] == marks["period"]):
        j -= 1
    words = []
    while j >= 0 and ids[j] != marks["newline"] and ids[j] not in marks["special"] and len(words) < longest:
        if ids[j] not in marks["common"]:
            words.append(j)
        j -= 1
    return words[::-1]


def gather_attention_loss(attentions: tuple[torch.Tensor, ...], quads: torch.Tensor) -> torch.Tensor:
    """Mean negative log attention weight of the first layer's heads on their gathering targets."""
    if quads.numel() == 0:
        return attentions[0].sum() * 0.0
    quads = quads.to(attentions[0].device)
    picked = attentions[0][quads[:, 0], quads[:, 3], quads[:, 1], quads[:, 2]]
    return -(picked.float().clamp_min(1e-6)).log().mean()


def copy_attention_loss(attentions: tuple[torch.Tensor, ...], pairs: torch.Tensor,
                        head: int | None = 0) -> torch.Tensor:
    """Mean negative log attention weight of the last layer's `head` (None: each of its heads) on
    each pair's source."""
    if pairs.numel() == 0:
        return attentions[-1].sum() * 0.0
    weights = attentions[-1] if head is None else attentions[-1][:, head:head + 1]  # (batch, heads, query, key)
    pairs = pairs.to(weights.device)
    picked = weights[pairs[:, 0], :, pairs[:, 1], pairs[:, 2]]
    return -(picked.float().clamp_min(1e-6)).log().mean()


def readout_loss(model, attention_output: torch.Tensor, pairs: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the last layer's attention output alone (through the final norm and the
    unembedding) at each pair's query against the token its heads are supervised to look at.
    Without it the heads look at the right digit but their output projections, two small matrices
    trained only through the language-model loss, stay near zero: the model never reads them (with
    the copy and gathering losses alone the heads found the right digit while the language-model
    loss stayed on its plateau for 600 steps; docs/notes/demo-base-model.md)."""
    if pairs.numel() == 0:
        return attention_output.sum() * 0.0
    pairs = pairs.to(attention_output.device)
    hidden = attention_output[pairs[:, 0], pairs[:, 1]]
    logits = model.get_output_embeddings()(model.get_decoder().norm(hidden))
    return torch.nn.functional.cross_entropy(logits.float(), input_ids[pairs[:, 0], pairs[:, 2]].to(logits.device))


class CopyPairCollator:
    """A collator that also returns the batch's copy pairs (as "copy_pairs"), with needle marks the
    gathering quads ("gather_pairs", ICL's added with icl_marks) and with icl_marks ICL's copy pairs
    ("icl_pairs")."""

    def __init__(self, collator, digits: set[int], marks: dict[str, int] | None = None, icl_marks: dict | None = None,
                 icl_heads: tuple[int, ...] = ICL_GATHER_HEADS, icl_overlap: bool = False, icl_ends: bool = False):
        self.collator, self.digits, self.marks, self.icl_marks = collator, digits, marks, icl_marks
        self.icl_heads, self.icl_overlap, self.icl_ends = icl_heads, icl_overlap, icl_ends

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collator(features)
        batch["copy_pairs"] = copy_pairs(batch["input_ids"], batch["labels"], self.digits)
        if self.marks:
            batch["gather_pairs"] = gather_pairs(batch["input_ids"], batch["copy_pairs"], self.digits, self.marks)
            batch["copy_pairs"] = unambiguous(batch["input_ids"], batch["copy_pairs"], self.digits, self.marks)
        if self.icl_marks:
            pairs, quads = icl_pairs(batch["input_ids"], batch["labels"], self.digits, self.icl_marks,
                                     self.icl_heads, self.icl_overlap, self.icl_ends)
            batch["icl_pairs"] = pairs  # averaged on their own: a needle answer has far more pairs
            batch["gather_pairs"] = torch.cat([batch.get("gather_pairs", quads[:0]), quads])
        return batch


def supervised_loss(model, batch: dict, weight: float, head: int | None = 0, readout: float = 0.0):
    """(total loss, language-model loss, attention-supervision loss, model outputs) of one batch with
    copy pairs: the copy (and, with gather pairs, gathering) attention losses times `weight`, plus the
    readout loss times `readout`. ICL's copy pairs ("icl_pairs") add their own copy and readout losses,
    each a mean over ICL's pairs alone: pooled with a needle batch's pairs they would be 2-6 % of them,
    too small a share of the loss to teach the match (docs/notes/demo-base-model.md)."""
    batch = dict(batch)
    pairs, quads, icl = batch.pop("copy_pairs"), batch.pop("gather_pairs", None), batch.pop("icl_pairs", None)
    captured: dict = {}
    hook = model.get_decoder().layers[-1].self_attn.register_forward_hook(
        lambda module, inputs, output: captured.__setitem__("out", output[0])) if readout > 0 else None
    try:
        out = model(**batch, output_attentions=weight > 0)
    finally:
        if hook is not None:
            hook.remove()
    extra = out.loss * 0.0
    if weight > 0:
        extra = copy_attention_loss(out.attentions, pairs, head)
        if quads is not None:
            extra = extra + gather_attention_loss(out.attentions, quads)
        if icl is not None:
            extra = extra + copy_attention_loss(out.attentions, icl, head)
        extra = weight * extra
    if readout > 0:
        extra = extra + readout * readout_loss(model, captured["out"], pairs, batch["input_ids"])
        if icl is not None:
            extra = extra + readout * readout_loss(model, captured["out"], icl, batch["input_ids"])
    return out.loss + extra, out.loss, extra, out


def copy_supervised(trainer_class, weight: float, head: int | None, readout: float = 0.0):
    """A subclass of a transformers Trainer class whose loss adds the copy-attention loss (the batches
    come from CopyPairCollator); both parts are logged."""

    class CopySupervisedTrainer(trainer_class):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            total, lm_loss, copy, out = supervised_loss(model, inputs, weight, head, readout)
            self._parts = getattr(self, "_parts", []) + [(lm_loss.item(), copy.item())]
            return (total, out) if return_outputs else total

        def log(self, logs: dict, *args, **kwargs):
            parts = getattr(self, "_parts", [])
            if parts and "loss" in logs:
                logs["lm_loss"] = round(sum(p[0] for p in parts) / len(parts), 4)
                logs["copy_loss"] = round(sum(p[1] for p in parts) / len(parts), 4)
                self._parts = []
            super().log(logs, *args, **kwargs)

    return CopySupervisedTrainer
