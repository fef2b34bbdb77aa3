"""The demo's default base model: a small Llama-architecture model (and tokenizer) the project
pretrains itself on its generated corpus, cached in a versioned folder.

The cache folder's name is a hash of the recipe (shape, corpus, steps, tokenizer, code version),
so changing any of them rebuilds it; it is written to a temporary folder and renamed when
complete, so an interrupted build never leaves a half-made model behind. The result is a normal
Hugging Face checkpoint folder, loaded through the same from_pretrained path as any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass

RECIPE_VERSION = 2  # bump when the code that makes the base changes what it makes


@dataclass(frozen=True)
class BaseRecipe:
    hidden_size: int = 160
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 448
    vocab_size: int = 1024
    seq_len: int = 384
    documents: int = 12000
    steps: int = 1200
    batch_size: int = 16
    learning_rate: float = 2e-3
    max_units: int = 12       # haystack units per retrieval document
    max_shots: int = 12
    seed: int = 0
    version: int = RECIPE_VERSION

    def digest(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


QUICK_RECIPE = BaseRecipe(hidden_size=64, layers=2, intermediate_size=160, vocab_size=512, seq_len=256,
                          documents=600, steps=40, batch_size=8, max_units=4, max_shots=6)


def cache_root() -> str:
    return os.environ.get("DIFFLORA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "difflora")


def base_dir(recipe: BaseRecipe) -> str:
    return os.path.join(cache_root(), f"base-{recipe.digest()}")


def ensure_base(recipe: BaseRecipe, rebuild: bool = False, log=print) -> tuple[str, bool]:
    """The cached base model folder for `recipe`, pretraining it first if needed.
    Returns (path, built_now)."""
    path = base_dir(recipe)
    if rebuild and os.path.isdir(path):
        shutil.rmtree(path)
    if os.path.isfile(os.path.join(path, "recipe.json")):
        return path, False
    tmp = path + f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.time()
    build_base(recipe, tmp, log)
    with open(os.path.join(tmp, "recipe.json"), "w") as f:
        json.dump({**dataclasses.asdict(recipe), "build_seconds": round(time.time() - started, 1)}, f, indent=1)
    if os.path.isdir(path):  # a concurrent build finished first
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, path)
    return path, True


def build_base(recipe: BaseRecipe, out_dir: str, log=print) -> None:
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments, set_seed

    from ..data.tokenizer import train_tokenizer
    from ..train.chat_data import ChatCollator
    from .corpus import pretraining_documents, tokenizer_texts

    set_seed(recipe.seed)
    log(f"pretraining the default base model ({recipe.layers} layers, hidden {recipe.hidden_size}, "
        f"{recipe.steps} steps) into {out_dir}")
    tokenizer = train_tokenizer(tokenizer_texts(recipe.seed), vocab_size=recipe.vocab_size, split_digits=True)
    docs = pretraining_documents(recipe.documents, recipe.seed + 1, recipe.max_units, recipe.max_shots)
    data = Dataset.from_list([_tokenize(doc, tokenizer, recipe.seq_len) for doc in docs])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, num_hidden_layers=recipe.layers,
                         num_attention_heads=recipe.heads, num_key_value_heads=recipe.kv_heads,
                         intermediate_size=recipe.intermediate_size, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, rope_theta=10000.0)
    model = LlamaForCausalLM(config)
    args = TrainingArguments(output_dir=out_dir + "-trainer", max_steps=recipe.steps,
                             per_device_train_batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
                             lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.01,
                             logging_steps=max(1, recipe.steps // 20), save_strategy="no", report_to=[],
                             use_cpu=True, seed=recipe.seed, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=ChatCollator(tokenizer.pad_token_id))
    trainer.train()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "pretraining_log.json"), "w") as f:
        json.dump(trainer.state.log_history, f, indent=1)
    shutil.rmtree(out_dir + "-trainer", ignore_errors=True)


def _tokenize(doc, tokenizer, max_length: int) -> dict:
    """Conversations learn their answers only (as instruction data does; the random numbers of
    the distractors are unpredictable and would drown the retrieval signal); prose learns all."""
    from ..train.chat_data import tokenize_conversation

    if isinstance(doc, dict):
        example = tokenize_conversation(tokenizer, doc["messages"], max_length)
        if example is not None:
            return example
        doc = tokenizer.apply_chat_template(doc["messages"], tokenize=False)
    ids = tokenizer(tokenizer.bos_token + doc + tokenizer.eos_token, add_special_tokens=False)["input_ids"][:max_length]
    return {"input_ids": ids, "labels": list(ids)}
