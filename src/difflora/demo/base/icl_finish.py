"""The base recipe's last phase: teaching the pretrained model many-shot in-context classification.

Pretraining (build.build_base) makes a model that retrieves needles but classifies in context at
chance: its ICL conversations are a few percent of the corpus and nothing supervises where the
answer should look. This phase continues it on ICL and retrieval conversations with the recipe's
attention supervision plus ICL's (copy_supervision.icl_pairs): each sentence is keyed like a needle
(first-layer heads 0 and 1, the needle key-gathering heads, look at its first and last content word),
and at the answer the last layer is trained onto the ids of the same-class demonstrations that share
such a word. Looser targets (every word of the sentence, or its topic) left ICL at chance for a
thousand steps; with sentences keyed like needles the match forms, once ICL's copy pairs are averaged
on their own (pooled with a needle batch's far more numerous pairs they are a few percent of the
loss). docs/notes/demo-base-model.md has the measurements.

The phase is a sequence of parts: a long one mostly on ICL costs some retrieval, which a shorter one
with more retrieval wins back. Each part runs plain torch AdamW at a constant rate after a short
warm-up, so that a shorter part is exactly the start of a longer one; Trainer checkpoints and each
part's written model make it resumable.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class IclFinish:
    """One part of the finishing phase (steps 0: the part does nothing)."""

    steps: int = 0
    batch_size: int = 16
    learning_rate: float = 5e-4
    warmup_steps: int = 20
    icl_share: float = 0.6            # share of ICL conversations; the rest are the recipe's retrieval ones
    gather_heads: tuple[int, int] = (0, 1)
    seed: int = 4747                  # of the phase's documents (fresh ones, not pretraining's)


def finishing_documents(mix, phase: IclFinish) -> list:
    """The phase's documents: the recipe's mix with ICL at its share and retrieval for the rest."""
    from .corpus import pretraining_documents

    mix = dataclasses.replace(mix, retrieval=1 - phase.icl_share, icl=phase.icl_share, short_answer=0.0)
    return pretraining_documents(phase.steps * phase.batch_size, phase.seed, mix)


def icl_collator(tokenizer, gather_heads: tuple[int, ...]):
    """The phase's collator: needle and ICL copy pairs, sentences keyed by their first and last content
    word, copy targets the same-class demonstrations sharing one of them."""
    from ...evaluation import icl
    from ...train.chat_data import ChatCollator
    from .copy_supervision import CopyPairCollator, digit_token_ids, label_marks, needle_marks

    return CopyPairCollator(ChatCollator(tokenizer.pad_token_id), digit_token_ids(tokenizer), needle_marks(tokenizer),
                            label_marks(tokenizer, icl.load_examples()), tuple(gather_heads), icl_overlap=True,
                            icl_ends=True)


def optimizer_and_schedule(model, phase: IclFinish):
    """AdamW without weight decay, linear warm-up over warmup_steps, then constant."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=phase.learning_rate, weight_decay=0.0)
    warmup = max(1, phase.warmup_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))


def finish_icl(recipe, pretrained: str, work_dir: str, log=print, callbacks: list | None = None) -> str:
    """Run the recipe's finishing parts in order, the first from the model in `pretrained`, each from
    the one before with a fresh optimizer and schedule (checkpoints in work_dir/trainer-icl-<i>; a part
    whose model is written is not rerun, so an interrupted build resumes). The last part's model goes
    to work_dir/model, the others to work_dir/finished-<i>; each appends its log entries to the log it
    started from, steps counted on from its last."""
    source, first_step = pretrained, recipe.steps
    parts = [part for part in recipe.icl_finish if part.steps]  # a part of 0 steps does nothing
    for i, part in enumerate(parts):
        out = os.path.join(work_dir, "model" if i == len(parts) - 1 else f"finished-{i}")
        if not os.path.isfile(os.path.join(out, "pretraining_log.json")):  # written last: the part is done
            log(f"finishing the default base model, part {i + 1} of {len(parts)}: {part.steps} steps of "
                f"{part.batch_size} conversations ({part.icl_share:.0%} many-shot ICL) with ICL attention supervision")
            _run_part(recipe, part, source, out, os.path.join(work_dir, f"trainer-icl-{i}"), first_step, callbacks)
        source, first_step = out, first_step + part.steps
    return source


def _run_part(recipe, part: IclFinish, source: str, out: str, trainer_dir: str, first_step: int,
              callbacks: list | None) -> None:
    """One finishing part from the model in `source` to `out` through a Trainer (resumable)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from .copy_supervision import copy_supervised
    from .training import MAX_DOCUMENT, in_order_trainer, tokenize_document

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, attn_implementation="eager")
    rows = [tokenize_document(d, tokenizer, MAX_DOCUMENT, recipe.loss_on)
            for d in finishing_documents(recipe.mix, part)]
    args = TrainingArguments(
        output_dir=trainer_dir, max_steps=part.steps, per_device_train_batch_size=part.batch_size, max_grad_norm=1.0,
        logging_steps=max(1, part.steps // 100), save_strategy="steps", save_steps=max(1, part.steps // 8),
        save_total_limit=1, report_to=[], use_cpu=not torch.cuda.is_available(), seed=part.seed,
        dataloader_num_workers=0, disable_tqdm=False)
    trainer_class = copy_supervised(in_order_trainer(), recipe.copy_weight,
                                    None if recipe.copy_head < 0 else recipe.copy_head, recipe.readout_weight)
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), callbacks=callbacks,
                            data_collator=icl_collator(tokenizer, part.gather_heads),
                            optimizers=optimizer_and_schedule(model, part))
    trainer.train(resume_from_checkpoint=bool(glob.glob(os.path.join(trainer_dir, "checkpoint-*"))) or None)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    with open(os.path.join(source, "pretraining_log.json")) as f:
        history = json.load(f)
    history += [{**entry, "step": entry.get("step", 0) + first_step, "phase": "icl_finish"}
                for entry in trainer.state.log_history]
    with open(os.path.join(out, "pretraining_log.json"), "w") as f:
        json.dump(history, f, indent=1)
