"""The recipe of the demo's base model: everything that decides what the model is, and its digest.

The digest names the cache folder a recipe builds into and is part of the demo's stage fingerprints,
so it must not change while the recipe does not: fields retired from the recipe are still written by
`to_dict` with the value every recipe had for them (RETIRED, RETIRED_MIX).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..state import fingerprint
from .corpus import CorpusMix
from .icl_finish import IclFinish

# Bump when the code that makes the base changes what it makes (the corpus generators, the packing,
# the tokenizer training), so that every cached base made by older code is rebuilt.
RECIPE_VERSION = 10

# Retired fields and the value each had in every recipe since (the shipped and the quick one
# included): to_dict writes them, so that recipe.json and the digest stay what they were.
RETIRED = {"decay": 0.15}  # the decay share of a warmup-stable-decay schedule, which no recipe uses
RETIRED_MIX = {"recall": 0.0, "topic_prose": 0.0, "named_icl": 0.0}  # shares of document kinds no
# recipe uses (recall drills, topical paragraphs, ICL named by topic: benchmarks/probe_corpus.py)

# The needle kinds of the default base's retrieval documents: MK-2 on distractor needles, the bar it
# must meet. Multi-value questions pull the key match away (which of several needles sharing a key
# comes next is a matter of order, not of the key), and essay haystacks slowed it.
BASE_KINDS = ("mk2:needles",)


@dataclass(frozen=True)
class BaseRecipe:
    """Everything that decides what the default base model is."""

    hidden_size: int = 128
    layers: int = 2
    heads: int = 4                # head_dim 32
    kv_heads: int = 4
    intermediate_size: int = 384
    rope_theta: float = 10000.0   # rotary base (a base of 1e6 did not help the key match)
    vocab_size: int = 2048
    split_digits: bool = True     # one token per digit: a value is copied digit by digit
    compound_words: bool = False  # True (every word key one token) stalled retrieval
    seq_len: int = 0              # block length of the last stage (0: one document per row, else
                                  # documents packed whole into blocks of at most that many tokens)
    documents: int = 10000        # documents of the last stage (at least its steps' rows: no second epoch)
    steps: int = 1350
    batch_size: int = 32
    curriculum: tuple[tuple[int, int, int], ...] = ((2, 200, 0), (4, 250, 0), (8, 300, 0), (14, 300, 0))
                                  # (max needles, steps, block length) stages first, in order: retrieval
                                  # forms among few needles first, then the needle counts of the
                                  # evaluation's 256- and 512-token prompts (about 10 and 23; the last
                                  # stage draws up to mix.max_needles)
    learning_rate: float = 2e-3
    warmup: float = 0.05          # steps (a float below 1: a share of the steps)
    schedule: str = "cosine"      # the learning-rate schedule (a transformers lr_scheduler_type)
    copy_weight: float = 1.0      # weight of the copy-attention loss (copy_supervision.py): it starts
    copy_head: int = -1           # the key-match circuit that answers alone never find; -1: every head of
                                  # the last layer is supervised at answered digits, else that one head
    readout_weight: float = 1.0   # weight of the readout loss: the supervised heads' output must name the
                                  # digit they look at (without it the heads find the digit, but the
                                  # language model never learns to read them)
    loss_on: str = "values"       # conversations: "all" tokens, "answers" (assistant turns) or "values"
                                  # (retrieval answers from their value on; see training.tokenize_document)
    mix: CorpusMix = field(default_factory=lambda: CorpusMix(
        retrieval=0.88, icl=0.08, short_answer=0.03, max_needles=26, questions=4, max_shots=24,
        retrieval_kinds=BASE_KINDS))
    icl_finish: tuple[IclFinish, ...] = (  # last, parts on many-shot ICL (icl_finish.py): without them ICL is
        IclFinish(steps=600),             # at chance; the first part costs some retrieval, which the second,
        IclFinish(steps=200, icl_share=0.3, seed=4848))  # with more retrieval, wins back; (): none
    seed: int = 0
    version: int = RECIPE_VERSION

    def to_dict(self) -> dict:
        """The recipe as recipe.json holds it (retired fields included, see RETIRED)."""
        values = dataclasses.asdict(self)
        return {**values, **RETIRED, "mix": {**values["mix"], **RETIRED_MIX}}

    def digest(self) -> str:
        return fingerprint(self.to_dict())


# --quick: a model that only has to exist and load (the smoke test does not need it to retrieve)
QUICK_RECIPE = BaseRecipe(hidden_size=64, layers=2, heads=8, kv_heads=8, intermediate_size=128, vocab_size=512,
                          compound_words=False, seq_len=256, documents=300, steps=12, batch_size=8,
                          curriculum=(), learning_rate=1e-3, warmup=0.05, schedule="cosine", copy_weight=0.0,
                          readout_weight=0.0, icl_finish=(),
                          mix=CorpusMix(max_needles=6, questions=2, max_shots=6))
