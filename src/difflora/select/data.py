"""The search's two data splits: adapters learn on `train`, architecture weights on `held-out`.

Held-out data come from data.eval when the config gives it, else from a deterministic fraction of
data.train (shuffled with the seed, then cut). Tokenising reuses the training pipeline
(difflora.train.chat_data: assistant-only labels, same truncation and packing).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader

from ..errors import UserError
from ..train.chat_data import ChatCollator, build_dataset
from ..train.config import TrainConfig

DEFAULT_HELDOUT_FRACTION = 0.2


def search_splits(cfg: TrainConfig, tokenizer, heldout_fraction: float | None = None, seed: int = 0):
    """(train, held_out) datasets of tokenised examples."""
    data = cfg.data
    if not data.train:
        raise UserError("data.train is required: a chat JSONL file, a folder of them, or a datasets name")
    kw = dict(max_length=data.max_length, packing=data.packing, skip_bad_rows=data.skip_bad_rows)
    train = build_dataset(data.train, tokenizer, max_examples=data.max_examples, **kw)
    if data.eval:
        if heldout_fraction is not None:
            raise UserError("the config gives data.eval as the held-out split: drop --heldout-fraction, or data.eval")
        try:
            return train, build_dataset(data.eval, tokenizer, **kw)
        except UserError as exc:
            raise UserError(f"the held-out split (data.eval) is empty or unusable: {exc}") from None
    fraction = heldout_fraction if heldout_fraction is not None else (data.eval_fraction or DEFAULT_HELDOUT_FRACTION)
    return split_off(train, fraction, seed)


def split_off(dataset, fraction: float, seed: int = 0):
    """(rest, held_out): a deterministic `fraction` of the examples (rounded down) held out."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise UserError(f"the held-out fraction must be in (0, 1), got {fraction!r}")
    n = len(dataset)
    n_heldout = math.floor(n * fraction)
    if n_heldout == 0:
        raise UserError(f"the held-out split is empty: {fraction} of {n} training examples rounds to none; "
                        "give data.eval (a held-out chat JSONL) or raise --heldout-fraction")
    if n_heldout == n:
        raise UserError(f"holding out {fraction} of {n} examples leaves none to train the adapters on")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return dataset.select(sorted(order[n_heldout:])), dataset.select(sorted(order[:n_heldout]))


def batches(dataset, batch_size: int, pad_token_id: int, seed: int = 0) -> DataLoader:
    """Shuffled batches (input_ids, labels, attention_mask) with a seeded order."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=ChatCollator(pad_token_id),
                      generator=torch.Generator().manual_seed(seed))
