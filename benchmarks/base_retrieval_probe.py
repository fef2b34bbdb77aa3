"""How fast does a small Llama learn needle retrieval? A probe for the demo's base-model recipe.

Pretrains a small Llama from scratch on the demo's generated retrieval conversations (one needle
count per stage, so a curriculum can be tried), in a plain loop, and every --every steps prints the
running loss on the learned tokens and greedy MK-2 accuracy at --length tokens, scored by the
evaluation suite's own run_nih. Used to look for a base recipe that meets the demo's bar (greedy MK-2
>= 0.8 at 256 tokens and >= 0.5 at 512); docs/notes/demo-base-model.md records the runs.

    python benchmarks/base_retrieval_probe.py --stages 4:600                  # 4 needles, 1 thread
    python benchmarks/base_retrieval_probe.py --stages 1:100 3:150 6:350 --lr 2e-3
    python benchmarks/base_retrieval_probe.py --stages 3:150:drill 6:250 --heads 4
    python benchmarks/base_retrieval_probe.py --seq 0 --batch 32 --heads 4 --stages 2:200 4:300 8:400 \
        --copy-weight 1 --copy-head -1 --gather --readout 1   # attention supervision (demo/base/copy_supervision.py)
    python benchmarks/base_retrieval_probe.py --build /work/base-build/r1 --every 200   # the demo's recipe

--build DIR pretrains the demo's default base recipe (demo/base/recipe.py, BaseRecipe) with the demo's own
build_base (Trainer checkpoints in DIR/trainer, so running the same command again resumes) and
probes MK-2 at each --lengths every --every steps (printed, and appended to DIR/probe.jsonl).

A stage is NEEDLES:STEPS[:drill]; "drill" stages train on recall drills (needles stated, then
restated, every token learned) instead of retrieval conversations. --copy-weight adds the recipe's
attention supervision (last-layer heads on the right needle's digits; with --gather also first-layer
heads on the keys' words); the model then runs the eager attention backend, which returns weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from probe_corpus import probe_documents  # noqa: E402
from transformers import LlamaForCausalLM, TrainerCallback  # noqa: E402

from difflora.demo.base import BaseRecipe  # noqa: E402
from difflora.demo.base.build import base_config, build_base, recipe_tokenizer  # noqa: E402
from difflora.demo.base.copy_supervision import (  # noqa: E402
    CopyPairCollator,
    digit_token_ids,
    needle_marks,
    supervised_loss,
)
from difflora.demo.base.corpus import CorpusMix  # noqa: E402
from difflora.demo.base.store import ship_base  # noqa: E402
from difflora.demo.base.training import pack_whole, tokenize_document  # noqa: E402
from difflora.evaluation import run_nih  # noqa: E402
from difflora.train.chat_data import ChatCollator  # noqa: E402


def stage(text: str) -> tuple[int, int, bool]:
    """NEEDLES:STEPS[:drill] -> (needles, steps, drill)."""
    parts = text.split(":")
    if (len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts[:2])
            or parts[2:] not in ([], ["drill"])):
        raise argparse.ArgumentTypeError(f"stage '{text}' is not NEEDLES:STEPS or NEEDLES:STEPS:drill (e.g. 4:600)")
    return int(parts[0]), int(parts[1]), parts[2:] == ["drill"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", nargs="+", type=stage, default=[stage("4:600")], help="NEEDLES:STEPS[:drill] ...")
    p.add_argument("--kinds", default="mk2:needles", help="retrieval kinds, comma-separated (corpus.py)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--copy-weight", type=float, default=0.0,
                   help="weight of the copy-attention loss on the last layer's first head "
                        "(demo/base/copy_supervision.py)")
    p.add_argument("--copy-head", type=int, default=0, help="the supervised head (-1: every head of the last layer)")
    p.add_argument("--readout", type=float, default=0.0,
                   help="weight of the readout loss on the supervised heads' output (demo/base/copy_supervision.py)")
    p.add_argument("--gather", action="store_true", help="also supervise the first layer's key-gathering heads")
    p.add_argument("--rope-theta", type=float, default=10000.0, help="rotary base")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=384, help="packing block length (0: one document per row)")
    p.add_argument("--docs-per-step", type=float, default=13.0, help="documents generated per training step")
    p.add_argument("--length", type=int, default=256, help="MK-2 context length probed")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512], help="MK-2 lengths probed by --build")
    p.add_argument("--build", metavar="DIR", help="pretrain the demo's default base recipe into DIR (resumes)")
    p.add_argument("--ship", metavar="DIR", help="copy the finished --build DIR into the package (default_base/)")
    p.add_argument("--digit-loss", nargs=2, metavar=("MODEL", "NEEDLES"),
                   help="loss on each answer token of a model (a checkpoint folder) on MK-2 with NEEDLES needles")
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--digit-needles", type=int, nargs="*", default=[4, 10],
                   help="needle counts whose per-digit answer loss is printed at every probe (none: off)")
    p.add_argument("--save", metavar="DIR", help="save the probed model (and tokenizer) here at every probe")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokenizer-dir", default=os.path.join("runs", "probe-tokenizer"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plain-words", action="store_true", help="split word keys into their words (the tokenizer "
                   "before compound words)")
    return p.parse_args()


def stage_data(stages: list[tuple[int, int, bool]], args, tokenizer) -> list[tuple[int, list[dict]]]:
    """(steps, training rows) per stage: packed blocks, or single documents with --seq 0."""
    mix = CorpusMix(retrieval=1.0, icl=0.0, short_answer=0.0, retrieval_kinds=tuple(args.kinds.split(",")))
    out = []
    for i, (needles, steps, drill) in enumerate(stages):
        m = dataclasses.replace(mix, max_needles=needles, retrieval=0.0 if drill else mix.retrieval)
        docs = probe_documents(max(200, int(args.docs_per_step * steps)), args.seed + 1 + i, m,
                               recall=1.0 if drill else 0.0)
        rows = [tokenize_document(d, tokenizer, args.seq or 4096, "values") for d in docs]
        out.append((steps, pack_whole(rows, args.seq) if args.seq else rows))
    return out


def probe_recipe(args) -> BaseRecipe:
    """The demo's recipe with the probed model shape (its tokenizer settings are kept)."""
    return dataclasses.replace(BaseRecipe(), hidden_size=args.hidden, layers=args.layers, heads=args.heads,
                               kv_heads=args.heads, intermediate_size=3 * args.hidden,
                               rope_theta=args.rope_theta,
                               compound_words=not args.plain_words)


def mk2_accuracy(model, tokenizer, args, length: int | None = None) -> float:
    length = length or args.length
    model.eval()
    with torch.no_grad():  # seed 7: not a seed the checks use
        result = run_nih({"m": (model, tokenizer)}, ("mk2",), (length,), args.samples, seed=7,
                         batch_size=8, max_new_tokens=12, show_progress=False)
    model.train()
    return result["m"]["mk2"][length]["mean"]


class Probe(TrainerCallback):
    """Every args.every steps: the mean training loss since the last probe and greedy MK-2 per length
    (a longer length only once the shorter one scores 0.3: it costs time and would read 0.00)."""

    def __init__(self, tokenizer, args, log_path: str):
        self.tokenizer, self.args, self.log_path, self.started = tokenizer, args, log_path, time.time()

    def scores(self, model) -> dict:
        out: dict = {}
        for n in self.args.lengths:
            out[f"mk2@{n}"] = mk2_accuracy(model, self.tokenizer, self.args, n)
            if out[f"mk2@{n}"] < 0.3:
                break
        return out

    def on_step_end(self, targs, state, control, model=None, **kwargs):
        if state.global_step % self.args.every and state.global_step != state.max_steps:
            return
        losses = [e["loss"] for e in state.log_history if "loss" in e][-max(1, self.args.every // 32):]
        row = {"step": state.global_step, "seconds": round(time.time() - self.started),
               "loss": round(sum(losses) / max(1, len(losses)), 4),
               **self.scores(model)}
        print(json.dumps(row), flush=True)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")


def digit_losses(model, tokenizer, needles: int, samples: int = 24) -> list[float]:
    """Mean loss (nats) on each token of the answer's value and its ending (". </s>") over fresh MK-2
    samples with `needles` needles: whether the key match (first digit) or the copying (later digits) has
    formed. Chance is ln 9 for the first digit and ln 10 after it; a first digit at ln(needles) means the
    model copies the start of SOME needle's value without matching its key."""
    from difflora.demo.conversations import answer
    from difflora.evaluation import nih

    was_training, rng, per_token = model.training, random.Random(99), []
    model.eval()
    for _ in range(samples):
        sample = nih.random_sample("mk2", needles, rng)
        messages = [{"role": "user", "content": sample.prompt}, {"role": "assistant", "content": answer(sample)}]
        ids = torch.tensor([list(
            tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])])
        tail = len(tokenizer(f" {sample.gold[0]}.", add_special_tokens=False)["input_ids"]) + 1  # + "</s>"
        with torch.no_grad():
            logp = model(ids).logits[0, -tail - 1:-1].log_softmax(-1)
        per_token.append([-logp[i, ids[0, i - tail]].item() for i in range(tail)])
    model.train(was_training)
    width = min(len(p) for p in per_token)
    return [sum(p[i] for p in per_token) / len(per_token) for i in range(width)]


def first_digit(means: list[float]) -> int:
    """Index of the value's first digit in digit_losses' list (a separate space token may come first)."""
    return 1 if means[0] < 0.05 else 0


def digit_loss(path: str, needles: int, tokenizer_dir: str, samples: int = 24) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer_dir = tokenizer_dir if os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")) else path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    means = digit_losses(model, tokenizer, needles, samples)
    print(f"{needles} needles, nats per answer token: " + " ".join(f"{m:.2f}" for m in means))


def digit_summary(model, tokenizer, needle_counts: list[int]) -> str:
    """'first/rest' digit loss per needle count, e.g. 'digits 2: 0.41/0.12  6: 1.62/0.90'."""
    parts = []
    for n in needle_counts:
        means = digit_losses(model, tokenizer, n)
        first = first_digit(means)
        rest = means[first + 1:first + 7]
        parts.append(f"{n}: {means[first]:.2f}/{sum(rest) / len(rest):.2f}")
    return "digits " + "  ".join(parts)


def ship(build_dir: str) -> None:
    """The finished build in build_dir becomes the package's default base (recipe.json, pretraining and
    probe logs, manifest). Its build time is the probe log's last reading (training and probes)."""
    probes = os.path.join(build_dir, "probe.jsonl")
    with open(probes) as f:
        seconds = [json.loads(line)["seconds"] for line in f if line.strip()][-1]
    files = ship_base(os.path.join(build_dir, "model"), BaseRecipe(), seconds, extra_files=(probes,))
    print(f"shipped {len(files)} files, {sum(e['bytes'] for e in files.values()) / 2**20:.1f} MiB")


def build(args) -> None:
    """The demo's own recipe and build_base, probed as it trains."""
    recipe = BaseRecipe()
    tokenizer = recipe_tokenizer(recipe, args.build)
    print(json.dumps(recipe.to_dict()), flush=True)
    build_base(recipe, args.build, callbacks=[Probe(tokenizer, args, os.path.join(args.build, "probe.jsonl"))])


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.build:
        return build(args)
    if args.ship:
        return ship(args.ship)
    if args.digit_loss:
        return digit_loss(args.digit_loss[0], int(args.digit_loss[1]), args.tokenizer_dir)
    torch.manual_seed(args.seed)
    recipe = probe_recipe(args)
    tokenizer = recipe_tokenizer(recipe, args.tokenizer_dir)
    stages = stage_data(args.stages, args, tokenizer)
    total = sum(steps for steps, _ in stages)
    model = LlamaForCausalLM._from_config(base_config(recipe, tokenizer),
                                          attn_implementation="eager" if args.copy_weight else "sdpa")
    collate = CopyPairCollator(ChatCollator(tokenizer.pad_token_id), digit_token_ids(tokenizer),
                               needle_marks(tokenizer) if args.gather else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    rng = random.Random(args.seed)
    shown = " ".join(f"{n}:{k}" + (":drill" if d else "") for n, k, d in args.stages)
    print(f"{args.layers} layers x hidden {args.hidden} x {args.heads} heads, rope {args.rope_theta:g}, "
          f"stages {shown}, lr {args.lr}, "
          f"{total} steps of {args.batch} rows", flush=True)
    started, losses, copies, step = time.time(), [], [], 0
    for steps, rows in stages:
        for _ in range(steps):
            step += 1
            batch = collate([rows[rng.randrange(len(rows))] for _ in range(args.batch)])
            loss, lm_loss, copy_loss, _ = supervised_loss(model, batch, args.copy_weight,
                                                            None if args.copy_head < 0 else args.copy_head,
                                                            args.readout)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(lm_loss.item())
            copies.append(copy_loss.item())
            if step % args.every == 0 or step == total:
                recent = losses[-args.every:]
                digits = digit_summary(model, tokenizer, args.digit_needles) if args.digit_needles else ""
                print(f"step {step:5d}  {time.time() - started:6.0f} s  loss {sum(recent) / len(recent):.3f}  "
                      f"copy {sum(copies[-args.every:]) / len(recent):.3f}  "
                      f"MK-2@{args.length} {mk2_accuracy(model, tokenizer, args):.2f}  {digits}", flush=True)
                if args.save:
                    model.save_pretrained(args.save)
                    tokenizer.save_pretrained(args.save)


if __name__ == "__main__":
    main()
