"""Does supervising in-context classification teach the demo's base model many-shot ICL? A probe.

The shipped default base retrieves needles (its attention was supervised to gather each needle's key
and to match the asked one: demo/base/copy_supervision.py) but its many-shot ICL is at chance. This probe
continues training a base model (the shipped one by default) on a mix of the recipe's retrieval
conversations and ICL conversations, with the recipe's supervision plus the same supervision for ICL
(`icl_pairs`): at an answered class id the last layer's heads are trained onto the ids of the
same-class demonstrations, and first-layer heads 2 and 3 gather each sentence's words at its label.
Every --every steps it prints the mean language-model and supervision losses, many-shot ICL accuracy
(the evaluation suite's task; 8, 16 and 24 shots) and greedy MK-2 (so that a loss of retrieval shows).

The targets can be narrowed to exact word matches (--overlap), sentences keyed like needles by their
first and last word (--ends, with --gather-heads 0 1: the needle key-gathering heads), and the corpus
can add topical paragraphs and ICL labelled with topic names (--topic-prose, --named-icl).

    python benchmarks/icl_supervision_probe.py --steps 400 --out /work/base-build/icl1
    python benchmarks/icl_supervision_probe.py --icl-share 0.8 --lr 1e-3 --steps 600 --threads 2
    python benchmarks/icl_supervision_probe.py --steps 400 --icl-share 0.5 --overlap --ends --content-words \
        --gather-heads 0 1 --threads 2 --out /work/base-build/icl6

docs/notes/demo-base-model.md records the runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from probe_corpus import probe_documents  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from difflora.demo import default_base_path  # noqa: E402
from difflora.demo.base import BaseRecipe  # noqa: E402
from difflora.demo.base.copy_supervision import (  # noqa: E402
    CopyPairCollator,
    digit_token_ids,
    label_marks,
    needle_marks,
    supervised_loss,
)
from difflora.demo.base.icl_finish import IclFinish, optimizer_and_schedule  # noqa: E402
from difflora.demo.base.training import tokenize_document  # noqa: E402
from difflora.evaluation import icl, run_nih  # noqa: E402
from difflora.evaluation.tasks import many_shot_icl  # noqa: E402
from difflora.train.chat_data import ChatCollator  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", help="the model to continue (default: the shipped default base)")
    p.add_argument("--out", help="save the continued model here at the end")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4, help="peak rate (20 warm-up steps, then constant)")
    p.add_argument("--icl-share", type=float, default=0.5, help="share of ICL conversations (the rest: retrieval)")
    p.add_argument("--topic-prose", type=float, default=0.0,
                   help="share of topical paragraphs (ICL sentences of one topic, learned on every token)")
    p.add_argument("--named-icl", type=float, default=0.0,
                   help="share of ICL conversations labelled with the topic names")
    p.add_argument("--content-words", action="store_true",
                   help="gather only the words that tell classes apart (skip those in most classes' texts)")
    p.add_argument("--overlap", action="store_true",
                   help="copy only from same-class demonstrations that share a word with the test sentence")
    p.add_argument("--ends", action="store_true",
                   help="key a sentence like a needle: its first word (second gather head) and last word (first head)")
    p.add_argument("--gather-heads", type=int, nargs="+", default=[2, 3],
                   help="first-layer heads that gather each sentence (0 1: the needle key-gathering heads)")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=4242)
    return p.parse_args()


def training_rows(args, tokenizer) -> list[dict]:
    """The recipe's corpus with ICL at --icl-share, topical paragraphs and named ICL at theirs and
    retrieval for the rest (no short answers, no prose)."""
    retrieval = 1 - args.icl_share - args.topic_prose - args.named_icl
    mix = dataclasses.replace(BaseRecipe().mix, retrieval=retrieval, icl=args.icl_share, short_answer=0.0)
    docs = probe_documents(args.steps * args.batch, args.seed, mix, topic_prose=args.topic_prose,
                           named_icl=args.named_icl)
    return [tokenize_document(d, tokenizer, 4096, "values") for d in docs]


def probe(model, tokenizer) -> dict:
    """Many-shot ICL at 8/16/24 shots (60 samples) and greedy MK-2 at 256/512 tokens (30 samples, seed 7)."""
    model.eval()
    with torch.no_grad():
        shots = many_shot_icl.run({"m": (model, tokenizer)}, shots=(8, 16, 24), n_samples=60).summary["m"]
        nih = run_nih({"m": (model, tokenizer)}, ("mk2",), (256, 512), 30, seed=7, batch_size=8, max_new_tokens=12,
                      show_progress=False)["m"]["mk2"]
    model.train()
    return {"icl": {k: round(v["mean"], 3) for k, v in shots.items()},
            "mk2": {k: round(v["mean"], 3) for k, v in nih.items()}}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    source = args.base or default_base_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, attn_implementation="eager")
    rows = training_rows(args, tokenizer)
    collate = CopyPairCollator(ChatCollator(tokenizer.pad_token_id), digit_token_ids(tokenizer),
                               needle_marks(tokenizer),
                               label_marks(tokenizer, icl.load_examples() if args.content_words else None),
                               tuple(args.gather_heads), args.overlap, args.ends)
    optimizer, schedule = optimizer_and_schedule(model, IclFinish(learning_rate=args.lr))  # the recipe's phase
    started, losses = time.time(), []
    model.train()
    for step in range(1, args.steps + 1):
        batch = collate(rows[(step - 1) * args.batch: step * args.batch])
        total, lm, extra, _ = supervised_loss(model, batch, 1.0, None, 1.0)  # the recipe's weights and heads
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append((lm.item(), extra.item()))
        if step % args.every == 0 or step == 1:
            lm_mean, sup_mean = (round(sum(x) / len(x), 3) for x in zip(*losses))
            print(json.dumps({"step": step, "lm": lm_mean, "supervision": sup_mean, **probe(model, tokenizer),
                              "seconds": round(time.time() - started)}), flush=True)
            losses = []
            if args.out and step > 1:  # the schedule is constant after warm-up: a shorter run is this run cut
                model.save_pretrained(os.path.join(args.out, f"step-{step}"))
                tokenizer.save_pretrained(os.path.join(args.out, f"step-{step}"))
    if args.out:
        model.save_pretrained(args.out)
        tokenizer.save_pretrained(args.out)


if __name__ == "__main__":
    main()
