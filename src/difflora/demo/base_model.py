"""The demo's default base model: a small Llama-architecture model and its tokenizer, pretrained
by the project on its generated corpus (corpus.py), then finished on many-shot in-context
classification (icl_finish.py).

The default recipe's model is built once by the project and shipped inside the package
(default_base/, with a manifest of sha256 checksums that is checked before it is used); the demo
loads it and pretrains nothing. Any other recipe (--quick's, a changed one) and --rebuild-base build
into a cache folder named by a hash of the recipe (shape, tokenizer, corpus, steps, code version), so
a changed recipe is a new folder. Both phases write Trainer checkpoints into `<folder>.partial`, so
an interrupted build resumes; the finished model is saved with save_pretrained and the folder renamed
into place, so a half-made model is never loaded. Both are ordinary Hugging Face checkpoint folders,
loaded with from_pretrained like any other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources

from ..errors import UserError
from .corpus import CorpusMix
from .icl_finish import IclFinish
from .state import fingerprint

# Bump when the code that makes the base changes what it makes (the corpus generators, the packing,
# the tokenizer training), so that every cached base made by older code is rebuilt.
RECIPE_VERSION = 10


# the needle kinds of the default base's retrieval documents: MK-2 on distractor needles, the bar it must
# meet (multi-value questions and essay haystacks slowed the key match: run p1 in docs/demo-base-model.md)
BASE_KINDS = ("mk2:needles",)


@dataclass(frozen=True)
class BaseRecipe:
    """Everything that decides what the default base model is."""

    hidden_size: int = 128
    layers: int = 2
    heads: int = 4                # head_dim 32
    kv_heads: int = 4
    intermediate_size: int = 384
    rope_theta: float = 10000.0   # rotary base (1e6 did not help the key match either: docs/demo-base-model.md)
    vocab_size: int = 2048
    split_digits: bool = True     # one token per digit: a value is copied digit by digit
    compound_words: bool = False  # True (every word key one token) stalled retrieval: docs/demo-base-model.md
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
    schedule: str = "cosine"      # "wsd": warm up, hold the rate through the plateau, decay over the last
    decay: float = 0.15           # `decay` share of the steps; "cosine": the older schedule
    copy_weight: float = 1.0      # weight of the copy-attention loss (demo/copy_supervision.py): it starts
    copy_head: int = -1           # the key-match circuit that answers alone never find; -1: every head of
                                  # the last layer is supervised at answered digits, else that one head
    readout_weight: float = 1.0   # weight of the readout loss: the supervised heads' output must name the
                                  # digit they look at (without it the model never reads them: run r9)
    loss_on: str = "values"       # conversations: "all" tokens, "answers" (assistant turns) or "values"
                                  # (retrieval answers from their value on; see tokenize_document)
    mix: CorpusMix = field(default_factory=lambda: CorpusMix(
        retrieval=0.88, icl=0.08, short_answer=0.03, max_needles=26, questions=4, max_shots=24,
        retrieval_kinds=BASE_KINDS))
    icl_finish: tuple[IclFinish, ...] = (  # last, parts on many-shot ICL (icl_finish.py): without them ICL is
        IclFinish(steps=600),             # at chance (docs/demo-base-model.md, f1); the second part, with more
        IclFinish(steps=200, icl_share=0.3, seed=4848))  # retrieval, brings MK-2 back up (f2); (): none
    seed: int = 0
    version: int = RECIPE_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        return fingerprint(self.to_dict())


# --quick: a model that only has to exist and load (the smoke test does not need it to retrieve)
QUICK_RECIPE = BaseRecipe(hidden_size=64, layers=2, heads=8, kv_heads=8, intermediate_size=128, vocab_size=512,
                          compound_words=False, seq_len=256, documents=300, steps=12, batch_size=8,
                          curriculum=(), learning_rate=1e-3, warmup=0.05, schedule="cosine", copy_weight=0.0,
                          readout_weight=0.0, icl_finish=(),
                          mix=CorpusMix(max_needles=6, questions=2, max_shots=6))


def cache_root() -> str:
    return os.environ.get("DIFFLORA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "difflora")


def base_dir(recipe: BaseRecipe) -> str:
    return os.path.join(cache_root(), f"base-{recipe.digest()}")


def is_built(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "recipe.json"))


SHIPPED_FOLDER = "default_base"  # package data: the default recipe's model, built once by the project
MANIFEST = "manifest.json"       # {"files": {name: {"bytes": n, "sha256": hex}}}
REBUILD_HINT = "reinstall difflora (pip install .) or rebuild the base with `difflora demo --rebuild-base`"


def default_base_path(verify: bool = True) -> str:
    """The folder of the shipped default base model (a transformers checkpoint folder), its files
    checked against its manifest first (a one-line UserError names a missing or altered file)."""
    path = str(resources.files("difflora.demo").joinpath(SHIPPED_FOLDER))
    if verify:
        verify_base(path)
    return path


def verify_base(path: str) -> None:
    """Every file the manifest lists is there, whole (its size) and unaltered (its sha256)."""
    manifest = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest):
        raise UserError(f"the default base model's manifest {manifest} is missing: {REBUILD_HINT}")
    try:
        with open(manifest) as f:
            files = {name: (int(e["bytes"]), str(e["sha256"])) for name, e in json.load(f)["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"the default base model's manifest {manifest} is unreadable ({err}): {REBUILD_HINT}") from None
    for name, (size, digest) in sorted(files.items()):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            problem = "is missing"
        elif os.path.getsize(file) != size:
            problem = f"is truncated ({os.path.getsize(file)} of {size} bytes)" if os.path.getsize(file) < size \
                else f"has {os.path.getsize(file)} bytes, not {size}"
        elif sha256_of(file) != digest:
            problem = "is altered (its sha256 differs from the manifest's)"
        else:
            continue
        raise UserError(f"default base model file {file} {problem}: {REBUILD_HINT}")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(path: str) -> dict:
    """Write the manifest of every file in `path` (the manifest itself excepted)."""
    files = {name: {"bytes": os.path.getsize(os.path.join(path, name)), "sha256": sha256_of(os.path.join(path, name))}
             for name in sorted(os.listdir(path)) if name != MANIFEST and os.path.isfile(os.path.join(path, name))}
    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump({"files": files}, f, indent=1)
    return files


def ship_base(model_dir: str, recipe: BaseRecipe, build_seconds: float, dest: str | None = None,
              extra_files: tuple[str, ...] = ()) -> dict:
    """Copy a finished build of `recipe` (build_base's model folder) into the package's default_base
    folder (or dest) with its recipe.json, pretraining log, `extra_files` and a manifest; returns the manifest."""
    dest = dest or default_base_path(verify=False)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(model_dir, dest)
    for file in extra_files:
        shutil.copy(file, dest)
    with open(os.path.join(dest, "recipe.json"), "w") as f:
        json.dump({**recipe.to_dict(), "build_seconds": round(build_seconds, 1)}, f, indent=1)
    return write_manifest(dest)


def shipped_base(recipe: BaseRecipe) -> str | None:
    """The shipped default base folder when `recipe` is the default recipe (the one it was built from)
    and the package has that folder, else None (the base is then built into the cache)."""
    if recipe != BaseRecipe():
        return None
    path = default_base_path(verify=False)
    return path if os.path.isdir(path) else None


def needs_build(recipe: BaseRecipe) -> bool:
    """Whether ensure_base(recipe) would pretrain (no shipped model and no cached one)."""
    return shipped_base(recipe) is None and not is_built(base_dir(recipe))


def ensure_base(recipe: BaseRecipe, rebuild: bool = False, log=print) -> tuple[str, bool]:
    """The base model folder for `recipe`: the shipped one (checked against its manifest) for the
    default recipe, else the cached one, pretrained first when missing. `rebuild`: pretrain again
    into the cache (and, for the default recipe, compare the rebuilt model with the shipped one).
    Returns (path, built_now)."""
    shipped = shipped_base(recipe)
    if shipped and not rebuild:
        verify_base(shipped)
        return shipped, False
    path = base_dir(recipe)
    if rebuild:  # the finished model only: an interrupted rebuild resumes from the same recipe's checkpoints
        shutil.rmtree(path, ignore_errors=True)
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
    if shipped:
        log(compare_with_shipped(path, shipped))
    return path, True


def retrieval_scores(path: str, samples: int = 100, seed: int = 0, lengths=(256, 512, 1024)) -> dict:
    """Greedy MK-2 accuracy of the model in `path` at each length (the evaluation's own run_nih)."""
    from ..evaluation import run_nih

    with _loaded(path) as model_and_tokenizer:
        summary = run_nih({"m": model_and_tokenizer}, ("mk2",), lengths, samples, seed=seed, show_progress=False)
    return {n: summary["m"]["mk2"][n]["mean"] for n in lengths}


def icl_scores(path: str, samples: int = 60, seed: int = 0, shots=(8, 16, 24)) -> dict:
    """Many-shot ICL accuracy of the model in `path` at each shot count (the evaluation's run_icl)."""
    from ..evaluation import run_icl

    with _loaded(path) as model_and_tokenizer:
        summary = run_icl({"m": model_and_tokenizer}, shots, samples, seed=seed, show_progress=False)
    return {n: summary["m"][n]["mean"] for n in sorted(int(k) for k in shots)}


@contextlib.contextmanager
def _loaded(path: str):
    """(model, tokenizer) from `path` in float32, evaluation mode, without gradients."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        yield model, AutoTokenizer.from_pretrained(path)


def compare_with_shipped(rebuilt: str, shipped: str, samples: int = 100) -> str:
    """One line: how the rebuilt base scores against the shipped one on the same samples (greedy MK-2 at
    256/512/1024 tokens, `samples` each; many-shot ICL at 8/16/24 shots, 60 each), also written to
    rebuilt/comparison.json."""
    try:
        verify_base(shipped)
    except UserError as err:
        return f"rebuilt base at {rebuilt}; not compared with the shipped one ({err})"
    ours = {"mk2": retrieval_scores(rebuilt, samples), "icl": icl_scores(rebuilt)}
    theirs = {"mk2": retrieval_scores(shipped, samples), "icl": icl_scores(shipped)}
    with open(os.path.join(rebuilt, "comparison.json"), "w") as f:
        json.dump({"samples": samples, "icl_samples": 60, "rebuilt": ours, "shipped": theirs}, f, indent=1)
    mk2 = ", ".join(f"{n} tokens {ours['mk2'][n]:.2f} vs {theirs['mk2'][n]:.2f}" for n in ours["mk2"])
    icl = ", ".join(f"{n} shots {ours['icl'][n]:.2f} vs {theirs['icl'][n]:.2f}" for n in ours["icl"])
    gap = max(abs(ours[task][n] - theirs[task][n]) for task in ours for n in ours[task])
    return (f"rebuilt base vs shipped base: greedy MK-2 on {samples} samples {mk2}; many-shot ICL on 60 samples "
            f"{icl} (largest gap {gap:.2f})")


def build_base(recipe: BaseRecipe, work_dir: str, log=print, callbacks: list | None = None) -> str:
    """Build the base model of `recipe` into work_dir/model: pretraining (checkpoints in work_dir/trainer),
    then the ICL finishing phase when the recipe has one (pretrained model in work_dir/pretrained,
    checkpoints in work_dir/trainer-icl-<i>). On a GPU when there is one (the recipe is the same; a CPU
    build took 74 minutes on 2 cores). Each phase resumes where an interruption left it."""
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

    from ..train.chat_data import ChatCollator
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
        learning_rate=recipe.learning_rate, warmup_steps=recipe.warmup, **schedule_args(recipe),
        weight_decay=0.01, adam_beta2=0.98, max_grad_norm=1.0, logging_steps=max(1, recipe.steps // 100),
        save_strategy="steps", save_steps=max(1, recipe.steps // 24), save_total_limit=1, report_to=[],
        use_cpu=not torch.cuda.is_available(), seed=recipe.seed, dataloader_num_workers=0, disable_tqdm=False)
    trainer_class = _in_order_trainer() if recipe.curriculum else Trainer
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


def _in_order_trainer():
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class InOrderTrainer(Trainer):
        """Takes the blocks in dataset order (a curriculum's stages come one after another; each
        stage's blocks are already shuffled, deterministically)."""

        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    return InOrderTrainer


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


def schedule_args(recipe: BaseRecipe) -> dict:
    """TrainingArguments for the recipe's learning-rate schedule."""
    if recipe.schedule == "wsd":  # retrieval forms after a plateau: a rate that decays early stalls there
        return {"lr_scheduler_type": "warmup_stable_decay",
                "lr_scheduler_kwargs": {"num_decay_steps": max(1, int(recipe.decay * recipe.steps))}}
    return {"lr_scheduler_type": recipe.schedule}


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

    from ..data.tokenizer import train_tokenizer
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
        return rng.sample(rows, len(rows))  # mixed batches: length-sorted ones slowed the key match (r7, r8)

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


MAX_DOCUMENT = 4096  # tokens: longer than any generated document (a 26-needle context with 8 questions is ~900)


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
