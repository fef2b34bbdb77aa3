"""run_training: one fine-tuning run from a TrainConfig, through transformers.Trainer (Accelerate
underneath, so `accelerate launch` / torchrun give DDP or FSDP with no code change).

The output folder ends up holding the adapter (or the full model for method.type=full), the
tokenizer, run_config.yaml, log_history.json and a completion marker; checkpoint-N folders hold the
adapter plus optimizer/scheduler/RNG state for --resume.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import torch
import yaml
from transformers import AutoTokenizer, TrainingArguments, set_seed

from ..errors import UserError
from ..models import load_base
from .chat_data import ChatCollator, ReadStats, build_dataset
from .checkpoints import latest_complete_checkpoint
from .config import TrainConfig, load_train_config
from .method import method_label, prepare_model
from .trainer import DiffLoRATrainer

DONE_MARKER = "training_complete.json"

# Our defaults where TrainingArguments' own differ from what a DiffLoRA run wants.
DEFAULT_TRAINING = dict(
    learning_rate=1e-4, num_train_epochs=1, per_device_train_batch_size=1, gradient_accumulation_steps=1,
    lr_scheduler_type="linear", warmup_steps=0.03,  # a float < 1 is a fraction of the steps
    weight_decay=0.0, logging_steps=10, save_strategy="steps",
    save_steps=200, save_total_limit=2, seed=0, report_to=["tensorboard"], remove_unused_columns=False,
    dataloader_num_workers=0,
)


@dataclass
class TrainResult:
    output_dir: str
    method: str
    log_history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    resumed_from: str | None = None
    already_complete: bool = False
    data_stats: dict = field(default_factory=dict)

    @property
    def losses(self) -> list[tuple[int, float]]:
        return [(h["step"], h["loss"]) for h in self.log_history if "loss" in h]


def run_training(config: TrainConfig | dict | str, overrides: list[str] | None = None, resume: bool = True,
                 quiet: bool = False, callbacks: list | None = None) -> TrainResult:
    """Train, or finish an interrupted run (resume=True picks up the newest complete checkpoint),
    or return at once if output_dir already holds a completed run of the same config."""
    cfg = config if isinstance(config, TrainConfig) else load_train_config(config, overrides)
    finished = _completed_run(cfg)
    if finished is not None:
        return finished
    set_seed(int(cfg.training.get("seed", DEFAULT_TRAINING["seed"])))
    model, tokenizer = _load_model_and_tokenizer(cfg)
    train_set, eval_set, stats = _datasets(cfg, tokenizer)
    model = prepare_model(model, cfg.method)
    args = _training_arguments(cfg, quiet, has_eval=eval_set is not None)
    trainer = DiffLoRATrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                              data_collator=ChatCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                              callbacks=callbacks)
    if not quiet and trainer.is_world_process_zero():
        _print_start(cfg, model, len(train_set), stats)
    checkpoint = latest_complete_checkpoint(cfg.output_dir, full_model=cfg.method.get("type") == "full") if resume else None
    started = time.time()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(output.metrics, wall_seconds=round(time.time() - started, 1))
    if eval_set is not None:
        metrics.update(trainer.evaluate())
    result = TrainResult(cfg.output_dir, method_label(cfg.method), trainer.state.log_history, metrics, checkpoint,
                         data_stats=stats.__dict__)
    if trainer.is_world_process_zero():
        _save_outputs(trainer, tokenizer, cfg, result)
        if not quiet:
            _print_summary(result)
    return result


def _completed_run(cfg: TrainConfig) -> TrainResult | None:
    marker = os.path.join(cfg.output_dir, DONE_MARKER)
    if not os.path.isfile(marker):
        return None
    with open(marker) as f:
        saved = json.load(f)
    if saved.get("config") != json.loads(json.dumps(cfg.to_dict(), default=str)):
        raise UserError(f"'{cfg.output_dir}' holds a finished run of a different config: choose another output_dir "
                        "or delete that folder")
    with open(os.path.join(cfg.output_dir, "log_history.json")) as f:
        history = json.load(f)
    return TrainResult(cfg.output_dir, saved["method"], history, saved["metrics"], already_complete=True,
                       data_stats=saved.get("data_stats", {}))


def _load_model_and_tokenizer(cfg: TrainConfig):
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = "bfloat16" if cfg.training.get("bf16") else "float32"
    model, tokenizer = load_base(cfg.model, dtype=dtype, attn_implementation=cfg.attn_implementation)
    if cfg.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer)
    if tokenizer.chat_template is None:
        raise UserError(f"the tokenizer of '{cfg.tokenizer or cfg.model}' has no chat template; give one with "
                        "tokenizer: PATH (a tokenizer folder whose tokenizer_config.json has chat_template)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.training.get("gradient_checkpointing"):
        model.config.use_cache = False
    return model, tokenizer


def _datasets(cfg: TrainConfig, tokenizer):
    if not cfg.data.train:
        raise UserError("data.train is required: a chat JSONL file, a folder of them, or a datasets name")
    stats = ReadStats()
    kw = dict(max_length=cfg.data.max_length, packing=cfg.data.packing, skip_bad_rows=cfg.data.skip_bad_rows)
    train = build_dataset(cfg.data.train, tokenizer, max_examples=cfg.data.max_examples, stats=stats, **kw)
    evaluation = build_dataset(cfg.data.eval, tokenizer, **kw) if cfg.data.eval else None
    if evaluation is None and cfg.data.eval_fraction:
        if not 0 < cfg.data.eval_fraction < 1:
            raise UserError(f"data.eval_fraction must be in (0, 1), got {cfg.data.eval_fraction}")
        split = train.train_test_split(test_size=cfg.data.eval_fraction, seed=0)
        train, evaluation = split["train"], split["test"]
    return train, evaluation, stats


def _training_arguments(cfg: TrainConfig, quiet: bool, has_eval: bool) -> TrainingArguments:
    values = {**DEFAULT_TRAINING, **cfg.training}
    if has_eval:
        values.setdefault("eval_strategy", "steps")
        values.setdefault("eval_steps", values.get("save_steps"))
    if quiet:
        values.update(disable_tqdm=True, report_to=[])
    if not torch.cuda.is_available():
        values.setdefault("use_cpu", True)  # also what makes torchrun's CPU processes form a gloo DDP group
    if values.get("bf16") and not torch.cuda.is_available() and not values.get("use_cpu"):
        values["bf16"] = False  # bf16 mixed precision is for GPUs; CPU runs stay in fp32
    if values.get("gradient_checkpointing"):
        values.setdefault("gradient_checkpointing_kwargs", {"use_reentrant": False})
    try:
        return TrainingArguments(output_dir=cfg.output_dir, **values)
    except (ValueError, TypeError) as exc:
        raise UserError(f"invalid training settings: {str(exc).splitlines()[0]}") from exc


def _save_outputs(trainer, tokenizer, cfg: TrainConfig, result: TrainResult) -> None:
    os.makedirs(cfg.output_dir, exist_ok=True)
    trainer.save_model(cfg.output_dir)
    tokenizer.save_pretrained(cfg.output_dir)
    with open(os.path.join(cfg.output_dir, "run_config.yaml"), "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    with open(os.path.join(cfg.output_dir, "log_history.json"), "w") as f:
        json.dump(result.log_history, f, indent=1)
    marker = {"config": cfg.to_dict(), "method": result.method, "metrics": result.metrics,
              "data_stats": result.data_stats}
    tmp = os.path.join(cfg.output_dir, DONE_MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=1, default=str)
    os.replace(tmp, os.path.join(cfg.output_dir, DONE_MARKER))  # written last, atomically


def _print_start(cfg, model, n_examples, stats) -> None:
    from rich.console import Console

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    skipped = f", {stats.skipped} bad rows skipped" if stats.skipped else ""
    Console(stderr=True).print(
        f"[bold]difflora train[/]: {method_label(cfg.method)} on {cfg.model} -> {cfg.output_dir}\n"
        f"  {n_examples} training examples ({stats.truncated} truncated to {cfg.data.max_length} tokens{skipped}); "
        f"trainable parameters {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)"
    )


def _print_summary(result: TrainResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"difflora train: {result.method} done")
    table.add_column("metric")
    table.add_column("value", justify="right")
    losses = result.losses
    if losses:
        table.add_row("first / last logged loss", f"{losses[0][1]:.4f} / {losses[-1][1]:.4f}")
    lambdas_logged = {k: v for k, v in (result.log_history[-2] if len(result.log_history) > 1 else {}).items()
                      if k.startswith("lambda/")}
    if lambdas_logged:
        table.add_row("final lambdas", " ".join(f"{v:.3f}" for v in lambdas_logged.values()))
    for key in ("train_runtime", "train_steps_per_second", "eval_loss", "wall_seconds"):
        if key in result.metrics:
            table.add_row(key, f"{result.metrics[key]:.4g}")
    if result.resumed_from:
        table.add_row("resumed from", result.resumed_from)
    table.add_row("adapter", result.output_dir)
    Console(stderr=True).print(table)
