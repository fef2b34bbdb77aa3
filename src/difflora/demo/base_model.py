"""The demo's default base model: a small Llama-architecture model and its tokenizer, pretrained
by the project on its generated corpus (corpus.py) and cached in a versioned folder.

The cache folder is named by a hash of the recipe (shape, tokenizer, corpus, steps, code version),
so a changed recipe is a new folder and the model is rebuilt. Pretraining writes Trainer
checkpoints into `<folder>.partial`, so an interrupted build resumes; the finished model is saved
with save_pretrained and the folder renamed into place, so a half-made model is never loaded. It is
an ordinary Hugging Face checkpoint folder, loaded with from_pretrained like any other.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import time
from dataclasses import dataclass, field

from .corpus import CorpusMix
from .state import fingerprint

# Bump when the code that makes the base changes what it makes (the corpus generators, the packing,
# the tokenizer training), so that every cached base made by older code is rebuilt.
RECIPE_VERSION = 4


@dataclass(frozen=True)
class BaseRecipe:
    """Everything that decides what the default base model is."""

    hidden_size: int = 128
    layers: int = 2               # 2 wide layers learned retrieval sooner than 4 narrow ones (measured)
    heads: int = 8
    kv_heads: int = 8
    intermediate_size: int = 384
    vocab_size: int = 2048
    split_digits: bool = True     # one token per digit: a value is copied digit by digit
    seq_len: int = 384            # pretraining block length (documents are packed whole into blocks)
    documents: int = 16000
    steps: int = 1200
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup: float = 0.05
    loss_on: str = "values"       # conversations: "all" tokens, "answers" (assistant turns) or "values"
                                  # (retrieval answers from their value on; see tokenize_document)
    mix: CorpusMix = field(default_factory=CorpusMix)
    seed: int = 0
    version: int = RECIPE_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        return fingerprint(self.to_dict())


# --quick: a model that only has to exist and load (the smoke test does not need it to retrieve)
QUICK_RECIPE = BaseRecipe(hidden_size=64, layers=2, intermediate_size=128, vocab_size=512, seq_len=256,
                          documents=300, steps=12, batch_size=8,
                          mix=CorpusMix(max_needles=6, questions=2, max_shots=6))


def cache_root() -> str:
    return os.environ.get("DIFFLORA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "difflora")


def base_dir(recipe: BaseRecipe) -> str:
    return os.path.join(cache_root(), f"base-{recipe.digest()}")


def is_built(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "recipe.json"))


def ensure_base(recipe: BaseRecipe, rebuild: bool = False, log=print) -> tuple[str, bool]:
    """The cached base model folder for `recipe`, pretrained first when missing (or when `rebuild`).
    Returns (path, built_now)."""
    path = base_dir(recipe)
    if rebuild:
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(path + ".partial", ignore_errors=True)
    if is_built(path):
        return path, False
    work = path + ".partial"  # survives an interruption: pretraining resumes from its checkpoints
    started = time.time()
    build_base(recipe, work, log)
    with open(os.path.join(work, "model", "recipe.json"), "w") as f:
        json.dump({**recipe.to_dict(), "build_seconds": round(time.time() - started, 1)}, f, indent=1)
    if not is_built(path):  # else a concurrent build finished first; keep it
        shutil.rmtree(path, ignore_errors=True)
        os.replace(os.path.join(work, "model"), path)
    shutil.rmtree(work, ignore_errors=True)
    return path, True


def build_base(recipe: BaseRecipe, work_dir: str, log=print, callbacks: list | None = None) -> str:
    """Pretrain the base model of `recipe` into work_dir/model (checkpoints in work_dir/trainer)."""
    from transformers import LlamaForCausalLM, Trainer, TrainingArguments, set_seed

    from ..train.chat_data import ChatCollator

    os.makedirs(work_dir, exist_ok=True)
    set_seed(recipe.seed)
    tokenizer = recipe_tokenizer(recipe, work_dir)
    data = pretraining_dataset(recipe, tokenizer)
    log(f"pretraining the default base model: {recipe.layers} layers, hidden {recipe.hidden_size}, "
        f"{recipe.steps} steps of {recipe.batch_size} x {recipe.seq_len} tokens ({len(data)} packed blocks)")
    model = LlamaForCausalLM(base_config(recipe, tokenizer))
    trainer_dir = os.path.join(work_dir, "trainer")
    args = TrainingArguments(
        output_dir=trainer_dir, max_steps=recipe.steps, per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, lr_scheduler_type="cosine", warmup_steps=recipe.warmup,
        weight_decay=0.01, adam_beta2=0.98, max_grad_norm=1.0, logging_steps=max(1, recipe.steps // 25),
        save_strategy="steps", save_steps=max(1, recipe.steps // 8), save_total_limit=1, report_to=[],
        use_cpu=True, seed=recipe.seed, dataloader_num_workers=0, disable_tqdm=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=ChatCollator(tokenizer.pad_token_id), callbacks=callbacks)
    checkpoints = glob.glob(os.path.join(trainer_dir, "checkpoint-*"))
    trainer.train(resume_from_checkpoint=bool(checkpoints) or None)
    out = os.path.join(work_dir, "model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    with open(os.path.join(out, "pretraining_log.json"), "w") as f:
        json.dump(trainer.state.log_history, f, indent=1)
    return out


def base_config(recipe: BaseRecipe, tokenizer):
    """The Llama config of the recipe's model (untrained), sized to its tokenizer."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, num_hidden_layers=recipe.layers,
                       num_attention_heads=recipe.heads, num_key_value_heads=recipe.kv_heads,
                       intermediate_size=recipe.intermediate_size, max_position_embeddings=4096,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)


def recipe_tokenizer(recipe: BaseRecipe, work_dir: str):
    """The recipe's tokenizer, trained once per build (kept in work_dir so a resumed build reuses it)."""
    from transformers import AutoTokenizer

    from ..data.tokenizer import train_tokenizer
    from .corpus import tokenizer_texts

    path = os.path.join(work_dir, "tokenizer")
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(path)
    # one token per digit: numbers are then copied digit by digit, which a tiny model learns quickly
    tokenizer = train_tokenizer(tokenizer_texts(recipe.seed), vocab_size=recipe.vocab_size,
                                split_digits=recipe.split_digits)
    tokenizer.save_pretrained(path)
    return tokenizer


def pretraining_dataset(recipe: BaseRecipe, tokenizer):
    """The generated documents, tokenised and packed whole into blocks of at most seq_len tokens."""
    from datasets import Dataset

    from .corpus import pretraining_documents

    docs = pretraining_documents(recipe.documents, recipe.seed + 1, recipe.mix)
    examples = [tokenize_document(doc, tokenizer, recipe.seq_len, recipe.loss_on) for doc in docs]
    return Dataset.from_list(pack_whole(examples, recipe.seq_len))


def tokenize_document(doc: dict | str, tokenizer, max_length: int, loss_on: str = "all") -> dict:
    """Token ids and labels of one document. Prose: every token is learned. Conversations: every
    token (loss_on="all"), the assistant turns ("answers"), or ("values") the assistant turns but,
    in a retrieval answer, only from its first value on: the words before it restate the question,
    and learning them drowns the one thing worth learning there, finding the value in the context
    (measured: a 2-layer model copies 7-digit values within a few hundred steps this way, and not
    at all in 900 steps when the restated words are learned too)."""
    from ..train.chat_data import IGNORE_INDEX

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
