"""Building a base model from its recipe: the tokenizer, pretraining on the generated corpus with the
attention supervision (copy_supervision.py), then the ICL finish (icl_finish.py).

Both phases write Trainer checkpoints into the build folder, so an interrupted build resumes; the
folder records the recipe it is for, so another recipe's checkpoints are never resumed. A build runs
on a GPU when there is one (the recipe is the same).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

from ...errors import UserError
from .corpus import CorpusMix
from .recipe import BaseRecipe
from .training import MAX_DOCUMENT, in_order_trainer, pack_whole, tokenize_document


def build_base(recipe: BaseRecipe, work_dir: str, log=print, callbacks: list | None = None) -> str:
    """Build the base model of `recipe` into work_dir/model: pretraining (checkpoints in work_dir/trainer),
    then the ICL finishing phase when the recipe has one (pretrained model in work_dir/pretrained,
    checkpoints in work_dir/trainer-icl-<i>). On a GPU when there is one (a CPU build of the default
    recipe took 74 minutes on 2 cores). Each phase resumes where an interruption left it."""
    os.makedirs(work_dir, exist_ok=True)
    claim_build_dir(recipe, work_dir)
    if not any(part.steps for part in recipe.icl_finish):
        return pretrain(recipe, work_dir, os.path.join(work_dir, "model"), log, callbacks)
    pretrained = os.path.join(work_dir, "pretrained")
    if not os.path.isfile(os.path.join(pretrained, "pretraining_log.json")):  # written last: pretraining is done
        pretrain(recipe, work_dir, pretrained, log, callbacks)
    from .icl_finish import finish_icl

    return finish_icl(recipe, pretrained, work_dir, log, callbacks)


def pretrain(recipe: BaseRecipe, work_dir: str, out: str, log=print, callbacks: list | None = None) -> str:
    """The recipe's pretraining (checkpoints in work_dir/trainer); the model goes to `out`."""
    import torch
    from transformers import LlamaForCausalLM, Trainer, TrainingArguments, set_seed

    from ...train.chat_data import ChatCollator
    from .copy_supervision import CopyPairCollator, copy_supervised, digit_token_ids, needle_marks

    set_seed(recipe.seed)
    tokenizer = recipe_tokenizer(recipe, work_dir)
    data = pretraining_dataset(recipe, tokenizer)
    rows = f"{recipe.seq_len}-token blocks" if recipe.seq_len else "documents"
    log(f"pretraining the default base model: {recipe.layers} layers, hidden {recipe.hidden_size}, "
        f"{recipe.steps} steps of {recipe.batch_size} {rows} ({len(data)} rows)")
    supervised = recipe.copy_weight > 0 or recipe.readout_weight > 0
    model = LlamaForCausalLM._from_config(base_config(recipe, tokenizer),  # attention weights: eager
                                          attn_implementation="eager" if recipe.copy_weight > 0 else "sdpa")
    trainer_dir = os.path.join(work_dir, "trainer")
    args = TrainingArguments(
        output_dir=trainer_dir, max_steps=recipe.steps, per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, warmup_steps=recipe.warmup, lr_scheduler_type=recipe.schedule,
        weight_decay=0.01, adam_beta2=0.98, max_grad_norm=1.0, logging_steps=max(1, recipe.steps // 100),
        save_strategy="steps", save_steps=max(1, recipe.steps // 24), save_total_limit=1, report_to=[],
        use_cpu=not torch.cuda.is_available(), seed=recipe.seed, dataloader_num_workers=0, disable_tqdm=False)
    trainer_class = in_order_trainer() if recipe.curriculum else Trainer
    collator = ChatCollator(tokenizer.pad_token_id)
    if supervised:
        trainer_class = copy_supervised(trainer_class, recipe.copy_weight,
                                        None if recipe.copy_head < 0 else recipe.copy_head, recipe.readout_weight)
        collator = CopyPairCollator(collator, digit_token_ids(tokenizer), needle_marks(tokenizer))
    trainer = trainer_class(model=model, args=args, train_dataset=data, callbacks=callbacks, data_collator=collator)
    checkpoints = glob.glob(os.path.join(trainer_dir, "checkpoint-*"))
    trainer.train(resume_from_checkpoint=bool(checkpoints) or None)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    with open(os.path.join(out, "pretraining_log.json"), "w") as f:
        json.dump(trainer.state.log_history, f, indent=1)
    return out


def claim_build_dir(recipe: BaseRecipe, work_dir: str) -> None:
    """Record the recipe a build folder is for; refuse to resume another recipe's checkpoints there
    (its data, tokenizer and model would not be the ones the checkpoints were made with)."""
    path = os.path.join(work_dir, "building.json")
    if os.path.isfile(path):
        with open(path) as f:
            digest = json.load(f).get("digest")
        if digest != recipe.digest():
            raise UserError(f"{work_dir} holds a build of another recipe ({digest}, not {recipe.digest()}): "
                            "use another folder or delete it")
        return
    with open(path, "w") as f:
        json.dump({"digest": recipe.digest(), "recipe": recipe.to_dict()}, f, indent=1)


def base_config(recipe: BaseRecipe, tokenizer):
    """The Llama config of the recipe's model (untrained), sized to its tokenizer."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, num_hidden_layers=recipe.layers,
                       num_attention_heads=recipe.heads, num_key_value_heads=recipe.kv_heads,
                       intermediate_size=recipe.intermediate_size, max_position_embeddings=4096,
                       rope_parameters={"rope_type": "default", "rope_theta": recipe.rope_theta},
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)


def recipe_tokenizer(recipe: BaseRecipe, work_dir: str):
    """The recipe's tokenizer, trained once per build (kept in work_dir so a resumed build reuses it)."""
    from transformers import AutoTokenizer

    from ...data.tokenizer import train_tokenizer
    from .corpus import tokenizer_texts

    path = os.path.join(work_dir, "tokenizer")
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(path)
    # one token per digit: numbers are then copied digit by digit, which a tiny model learns quickly
    tokenizer = train_tokenizer(tokenizer_texts(recipe.seed, keys=recipe.compound_words),
                                vocab_size=recipe.vocab_size, split_digits=recipe.split_digits,
                                compound_words=recipe.compound_words)
    tokenizer.save_pretrained(path)
    return tokenizer


def pretraining_dataset(recipe: BaseRecipe, tokenizer):
    """The generated documents, tokenised, in training order. A block length of 0 keeps one document
    per row; any other packs whole documents into blocks of at most that many tokens. With a
    curriculum: each stage's rows (exactly its steps' worth, shuffled), then the last stage's."""
    import random

    from datasets import Dataset

    from .corpus import pretraining_documents

    rng = random.Random(recipe.seed)

    def rows_of(n_docs: int, seed: int, mix: CorpusMix, length: int) -> list[dict]:
        docs = pretraining_documents(n_docs, seed, mix)
        rows = [tokenize_document(doc, tokenizer, length or MAX_DOCUMENT, recipe.loss_on) for doc in docs]
        return pack_whole(rows, length) if length else rows

    def in_order(rows: list[dict]) -> list[dict]:
        return rng.sample(rows, len(rows))  # mixed batches: length-sorted ones slowed the key match

    out: list[dict] = []
    for stage, (needles, steps, length) in enumerate(recipe.curriculum, start=1):
        mix, wanted, made = dataclasses.replace(recipe.mix, max_needles=needles), steps * recipe.batch_size, []
        while len(made) < wanted:  # documents in chunks until the stage has its rows
            made += rows_of(300, recipe.seed + 1000 * stage + len(made), mix, length)
        out += in_order(made[:wanted])
    last = rows_of(recipe.documents, recipe.seed + 1, recipe.mix, recipe.seq_len)
    needed = (recipe.steps - sum(steps for _, steps, _ in recipe.curriculum)) * recipe.batch_size
    if len(last) < needed:  # the sampler would start a second epoch at the curriculum's first stage
        raise ValueError(f"the recipe's {recipe.documents} last-stage documents make {len(last)} rows; its "
                         f"last stage needs {needed}: raise `documents`")
    return Dataset.from_list(out + in_order(last))
