"""What a demo run does: the base model, the models to fine-tune, the data, the evaluation settings.

The default plan is the CPU miniature on the project's own base model; `quick_plan()` is the smoke
run of the tests; `plan_from_config(path)` takes the base model, data and training settings of a
real training config (configs/paper/...) and keeps everything else, so the same pipeline runs the
real comparison on a GPU machine with no code change; `real_base_plan(name)` is the study on a
real small pretrained base (issue 27) on a CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import UserError
from ..evaluation.nih import NEEDLE_TASKS
from ..train.method_spec import MethodSpec
from .base import QUICK_RECIPE, BaseRecipe
from .state import fingerprint

DEMO_MODELS = ("lora-8", "difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn", "shared-diff",
               "difflora-shared-kv", "diffora-lora", "diffora-difflora")
ALL_MODELS = (*DEMO_MODELS, "shared-diff-kv")
# The study on a real base (issue 27): LoRA-8, the paper's four rows and the two shared-key forms
STUDY_MODELS = ("lora-8", "difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn", "difflora-shared-kv",
                "shared-diff-kv")
# DiffoRA (module selection): a search (difflora select) picks the modules, then the kept adapters train
# from their search weights. Each is compared with the uniform model named here.
DIFFORA_MODELS = {"diffora-lora": "lora-8", "diffora-difflora": "difflora-64"}
ALL_TASKS = ("nih", "icl", "attention", "degeneration", "loss")
# Room for the answer after RULER's answer prefix: a 7-digit number is 8 tokens with one token per
# digit, a uuid about 25, MV's four numbers about 36 (decoding is most of a short needle's cost on a CPU)
CPU_NEW_TOKENS = {"mk2": 16, "mk3": 40, "mv": 48}
NIH_TASKS = tuple(NEEDLE_TASKS)


@dataclass
class DemoPlan:
    recipe: BaseRecipe | None = field(default_factory=BaseRecipe)  # None: the base model is `base_model`
    base_model: str | None = None
    train_data: str | None = None      # None: the project's generated instruction data
    heldout_data: str | None = None    # None: a held-out slice of the generated instruction data
    models: tuple[str, ...] = DEMO_MODELS
    tasks: tuple[str, ...] = ALL_TASKS
    train_examples: int = 1200
    heldout_examples: int = 64
    instruction_units: int = 18        # haystack units per generated retrieval instruction (up to ~450 tokens)
    train_max_length: int = 512
    # 60 steps (480 of the ~1050 conversations): nine fine-tunes and ten evaluations fit the demo's
    # 8-minute budget on 2 cores (120 steps took 810 s in all; docs/notes/demo-base-model.md)
    training: dict = field(default_factory=lambda: dict(
        max_steps=60, per_device_train_batch_size=8, learning_rate=1e-3, lr_scheduler_type="linear",
        warmup_steps=0.05, logging_steps=5, save_steps=20, save_total_limit=1, seed=0))
    # the paper's ranks (64 / 32, for hidden 2048) capped for a small base: see rank_overrides
    cap_ranks: bool = True
    select_steps: int = 40             # DiffoRA search steps (train + held-out update each)
    # MK-2 only by default: the shipped base was pretrained on MK-2 alone and scores 0.00 on MK-3 and MV,
    # and each extra needle task costs about 10 s per model (--needles mk2 mk3 mv runs all three)
    nih_tasks: tuple[str, ...] = ("mk2",)
    nih_lengths: tuple[int, ...] = (256, 512, 1024)
    nih_samples: int = 100           # per needle cell: a paired bootstrap resolves a 0.1 difference
    # new tokens per needle task; None: the suite's own, generous defaults (nih.new_tokens_for)
    nih_new_tokens: dict | None = field(default_factory=lambda: dict(CPU_NEW_TOKENS))
    icl_shots: tuple[int, ...] = (2, 6, 12, 24)
    icl_samples: int = 100
    attention_length: int = 384
    attention_prompts: int = 4
    degeneration_tokens: int = 40
    batch_size: int = 8                # generation batch
    seed: int = 0
    # ICL sentences: False, one pool for fine-tuning conversations and evaluation (the embedded base was
    # pretrained on every one of them anyway); True, each topic's sentences split in two, one half for the
    # fine-tuning data and the other for evaluation, so that no evaluated text was seen in fine-tuning
    icl_split: bool = False

    def digest(self, *names: str) -> str:
        """A short hash of the named fields (all fields when none): what a stage's results depend on."""
        values = dataclasses.asdict(self)
        chosen = {n: values[n] for n in (names or values)}
        return fingerprint(chosen)

    @property
    def embedded_base(self) -> bool:
        return self.recipe is not None

    def method_for(self, name: str, hidden_size: int) -> MethodSpec:
        """The method one demo model trains (for a DiffoRA model: the candidates its search starts
        from, see selection_for)."""
        if name == "diffora-lora":  # twice LoRA-8's rank on half the parameters' worth of modules
            return MethodSpec.parse({"type": "lora", "preset": "lora-8", "r": 16, "lora_alpha": 32})
        if name in DIFFORA_MODELS:
            return self.method_for(DIFFORA_MODELS[name], hidden_size)
        if name == "lora-8":
            return MethodSpec.default("lora")
        overrides = rank_overrides(hidden_size)[name] if self.cap_ranks else {}
        return MethodSpec.parse({"type": "difflora", "preset": name, **overrides})


def selection_for(name: str, lora_8_params: int) -> dict:
    """How a DiffoRA model's search is discretised: LoRA within LoRA-8's parameter count (the DiffoRA
    paper's comparison at equal size); DiffLoRA on half the layers (sampling rate 0.5)."""
    return {"budget": lora_8_params} if name == "diffora-lora" else {"sampling_rate": 0.5}


def rank_overrides(hidden_size: int) -> dict[str, dict]:
    """The presets' ranks are for hidden 2048 (r=64 there is hidden/32). On a small base they are
    capped at hidden/4 for the r=64 presets and hidden/8 for the r=32 ones (alpha = 2r, as in the
    presets), which keeps their ratio and keeps each adapter low-rank. LoRA keeps r=8."""
    big, small = min(64, max(4, hidden_size // 4)), min(32, max(2, hidden_size // 8))
    both = dict(r=small, lora_alpha=2 * small, positive_r=small, positive_alpha=2 * small)
    return {"difflora-64": dict(r=big, lora_alpha=2 * big), "difflora-64-fixed": dict(r=big, lora_alpha=2 * big),
            "difflora-32": both, "difflora-32-gn": both, "shared-diff": both, "shared-diff-kv": both,
            "difflora-shared-kv": dict(r=big, lora_alpha=2 * big)}


# The smoke run's sizes: a few steps, a few samples (with --base, the study's smoke run)
QUICK_SIZES = dict(
    train_examples=48, heldout_examples=8, instruction_units=4, train_max_length=320,
    training=dict(max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1, save_steps=2,
                  save_total_limit=1, seed=0), select_steps=2,
    nih_tasks=NIH_TASKS, nih_lengths=(256, 320, 384), nih_samples=2, icl_shots=(2, 4), icl_samples=2,
    attention_length=256, attention_prompts=1, degeneration_tokens=6)


def quick_plan() -> DemoPlan:
    """The smoke run: a tiny base, a few steps, a few samples (about a minute on 2 cores)."""
    return DemoPlan(recipe=QUICK_RECIPE, **QUICK_SIZES)


def real_base_plan(base_model: str) -> DemoPlan:
    """The study on a real pretrained base (a fetched name such as smollm2-135m-instruct, or a folder):
    LoRA-8 and the paper's rows fine-tuned on the generated instruction data, sized to finish within
    about two hours on 2 CPU cores for a 135M-parameter base (docs/results/smollm2-study/report.md gives
    the measured stage times). Needles: MK-2 (LoRA's finding) and MV (DiffLoRA's) at 512 tokens, where
    SmolLM2-135M-Instruct's own accuracy is neither 0 nor 1 (0.25 and 0.88 there, docs/results/smollm2-base)
    and one cell costs 2-4 minutes a model. Sample counts: 100 per needle cell, which gives a 95%
    interval of about +-0.08 on an accuracy of 0.25 and resolves paired differences of about 0.1."""
    return dataclasses.replace(
        DemoPlan(), recipe=None, base_model=base_model, models=STUDY_MODELS, train_examples=64,
        heldout_examples=48, instruction_units=10, train_max_length=512,
        # 16 steps of 4 conversations (about 15-25 s a step on 2 cores), each seen once and in the same order
        # by every row; the demo's learning rate, since 16 steps at the paper's 1e-4 barely move an adapter
        training=dict(max_steps=16, per_device_train_batch_size=4, learning_rate=1e-3, lr_scheduler_type="linear",
                      warmup_steps=0.1, logging_steps=2, save_steps=4, save_total_limit=1, seed=0),
        nih_tasks=("mk2", "mv"), nih_lengths=(512,), nih_samples=100, icl_shots=(4, 16), icl_samples=60,
        attention_length=512, attention_prompts=4, degeneration_tokens=48, icl_split=True)


def plan_from_config(path: str, plan: DemoPlan) -> DemoPlan:
    """A real run: the config's base model, data and training settings; the paper's presets as
    they are (no rank cap); RULER lengths around the config's max_length."""
    from ..train import load_train_config

    cfg = load_train_config(path)
    n = cfg.data.max_length
    return dataclasses.replace(
        plan, recipe=None, base_model=cfg.model, train_data=cfg.data.train, heldout_data=cfg.data.eval,
        train_max_length=n, training={k: v for k, v in cfg.training.items() if k != "report_to"}, cap_ranks=False,
        nih_tasks=NIH_TASKS, nih_lengths=tuple(sorted({max(256, n // 4), max(256, n), 2 * max(256, n)})),
        nih_new_tokens=None,
        nih_samples=50, icl_shots=(6, 12, 24, 48, 96), icl_samples=50,
        attention_length=min(n, 2048), attention_prompts=8, degeneration_tokens=96, icl_split=True)


def check_plan(plan: DemoPlan) -> None:
    for name in plan.models:
        if name not in ALL_MODELS:
            raise UserError(f"unknown demo model '{name}': choose from {', '.join(ALL_MODELS)}")
    for task in plan.tasks:
        if task not in ALL_TASKS:
            raise UserError(f"unknown demo task '{task}': choose from {', '.join(ALL_TASKS)}")
    if not plan.nih_lengths or min(plan.nih_lengths) < 64:
        raise UserError(f"needle lengths must be at least 64 tokens, got {list(plan.nih_lengths)}")
    if plan.recipe is None and not plan.base_model:
        raise UserError("a demo without the embedded base model needs a base model (the config's model:)")
