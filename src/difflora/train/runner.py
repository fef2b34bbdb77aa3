"""run_training: one fine-tuning run from a TrainConfig, through transformers.Trainer (Accelerate
underneath, so `accelerate launch` / torchrun give DDP or FSDP with no code change).

The output folder ends up holding the adapter (or the full model for method.type=full), the
tokenizer, run_config.yaml, log_history.json and a completion marker; checkpoint-N folders hold the
adapter plus optimizer/scheduler/RNG state for --resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field

import torch
import yaml
from transformers import PrinterCallback, TrainingArguments, set_seed
from transformers.utils import logging as hf_logging

from .. import compat
from ..errors import UserError
from ..loading import load_base, load_chat_tokenizer
from ..quantization import prepare_for_training
from .chat_data import ChatCollator, ReadStats, build_dataset
from .checkpoints import latest_complete_checkpoint
from .config import PLACEMENT_KEYS, TrainConfig, load_train_config, read_yaml_config
from .fsdp import check_fsdp_arguments
from .method import load_initial_weights, prepare_model
from .method_spec import MethodSpec
from .trainer import DiffLoRATrainer, lambda_series

DONE_MARKER = "training_complete.json"  # written last: its presence means the run finished
RUN_CONFIG = "run_config.yaml"
# What a checkpoint must agree with to be resumed.
RESUME_KEYS = ("model", "tokenizer", "method", "data", "quantization")

# Our defaults where TrainingArguments' own differ from what a DiffLoRA run wants.
DEFAULT_TRAINING = dict(
    learning_rate=1e-4, num_train_epochs=1, per_device_train_batch_size=1, gradient_accumulation_steps=1,
    lr_scheduler_type="linear", warmup_steps=0.03,  # a float < 1 is a fraction of the steps
    weight_decay=0.0, logging_steps=10, save_strategy="steps",
    save_steps=200, save_total_limit=2, seed=0, report_to=["tensorboard"], remove_unused_columns=False,
    dataloader_num_workers=0,
    ddp_find_unused_parameters=False,  # every trainable adapter weight takes part in each forward
)


@dataclass
class TrainResult:
    """What run_training returns.

    output_dir: the adapter folder (PeftModel.from_pretrained; tokenizer beside it), or the full model.
    method: the method's label (the preset name, "lora-8", "lora" or "full").
    log_history: Trainer's log entries, one dict per logging step (step, loss, grad_norm,
        learning_rate, lambda/NN per transformed layer NN, epoch), then eval entries and the final summary.
    metrics: train_runtime, train_loss, ..., wall_seconds, and eval_loss when there is eval data.
    resumed_from: the checkpoint this call resumed from, if any.
    already_complete: True when output_dir held a finished run of this config and nothing was trained.
    data_stats: rows read, skipped (bad rows), truncated, empty_after_truncation, problems (first few).
    """

    output_dir: str
    method: str
    log_history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    resumed_from: str | None = None
    already_complete: bool = False
    data_stats: dict = field(default_factory=dict)

    @property
    def losses(self) -> list[tuple[int, float]]:
        """(step, training loss) at every logging step."""
        return [(h["step"], h["loss"]) for h in self.log_history if "loss" in h]

    @property
    def lambda_history(self) -> dict[int, list[tuple[int, float]]]:
        """layer index -> [(step, lambda)] at every logging step (empty for LoRA and full fine-tuning)."""
        return lambda_series(self.log_history)


def run_training(config: TrainConfig | dict | str, overrides: list[str] | None = None, resume: bool = True,
                 quiet: bool = False, callbacks: list | None = None) -> TrainResult:
    """Train, or finish an interrupted run (resume=True picks up the newest complete checkpoint),
    or return at once if output_dir already holds a completed run of the same config.

    quiet=True prints nothing (no progress bars, no log lines, no TensorBoard) but a one-line notice
    for each damaged checkpoint set aside; callbacks are extra transformers.TrainerCallback objects."""
    cfg = config if isinstance(config, TrainConfig) else load_train_config(config, overrides)
    finished = completed_run(cfg)
    if finished is not None:
        return finished
    with _silenced(quiet):
        return _train(cfg, resume, quiet, callbacks)


def _train(cfg: TrainConfig, resume: bool, quiet: bool, callbacks: list | None) -> TrainResult:
    args = _training_arguments(cfg, quiet, has_eval=bool(cfg.data.eval or cfg.data.eval_fraction))
    check_fsdp_arguments(args)  # an FSDP setting that would train unsharded is refused (train/fsdp.py)
    with args.main_process_first(local=False, desc="checking output_dir"):
        checkpoint = _prepare_output_dir(cfg, args, resume)
    set_seed(args.seed)
    tokenizer = load_chat_tokenizer(*cfg.tokenizer_source)
    # the data before the model: a bad row fails in seconds, not after loading billions of weights
    train_set, eval_set, stats = _datasets(cfg, tokenizer, progress=not quiet and args.should_save)
    model = prepare_model(_load_model(cfg), cfg.method)
    if cfg.init_from:  # a resumed run's checkpoint overrides these weights, as it should
        load_initial_weights(model, cfg.init_from)
    trainer = DiffLoRATrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                              data_collator=ChatCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                              callbacks=callbacks)
    if quiet:
        trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the progress bar for a log printer
    elif trainer.is_world_process_zero():
        _print_start(cfg, model, len(train_set), stats, checkpoint)
    _record_config(cfg, args)
    started = time.time()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(output.metrics, wall_seconds=round(time.time() - started, 1))
    if eval_set is not None:
        metrics.update(trainer.evaluate())
    result = TrainResult(cfg.output_dir, cfg.method.label, trainer.state.log_history, metrics, checkpoint,
                         data_stats=dataclasses.asdict(stats))
    _save_outputs(trainer, tokenizer, cfg, result)
    if not quiet and trainer.is_world_process_zero():
        _print_summary(result)
    return result


@contextlib.contextmanager
def _silenced(quiet: bool):
    """With quiet, no transformers progress bars (weights loading, shard writing) or warnings for
    the duration of the call; the caller's settings come back afterwards."""
    if not quiet:
        yield
        return
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def completed_run(cfg: TrainConfig) -> TrainResult | None:
    """The result of a finished run of this config in cfg.output_dir, or None if there is none."""
    marker = os.path.join(cfg.output_dir, DONE_MARKER)
    if not os.path.isfile(marker):
        return None
    try:
        with open(marker) as f:
            saved = json.load(f)
    except ValueError as exc:
        raise UserError(f"{marker} is damaged ({exc}); delete it to train this run again") from None
    if _comparable(saved.get("config", {})) != _comparable(cfg.to_dict()):
        raise UserError(f"'{cfg.output_dir}' holds a finished run of a different config (see its run_config.yaml): "
                        "choose another output_dir or delete that folder")
    with open(os.path.join(cfg.output_dir, "log_history.json")) as f:
        history = json.load(f)
    return TrainResult(cfg.output_dir, saved["method"], history, saved["metrics"], already_complete=True,
                       data_stats=saved.get("data_stats", {}))


def _comparable(config: dict, keys: tuple[str, ...] | None = None) -> dict:
    """The config as JSON values, without output_dir (a moved folder is still the same run), without
    where it trains (PLACEMENT_KEYS: a run finished on a GPU is found again from a CPU) and without
    unset settings (a run saved before a setting existed is the same run as one leaving it unset)."""
    plain = json.loads(json.dumps(config, default=str))
    plain.pop("output_dir", None)
    plain = {k: v for k, v in plain.items() if v is not None}
    if isinstance(plain.get("training"), dict):
        plain["training"] = {k: v for k, v in plain["training"].items() if k not in PLACEMENT_KEYS}
    if isinstance(plain.get("method"), dict):  # a section saved without `type:` is the same method
        plain["method"] = _method_section(plain["method"])
    return {k: plain.get(k) for k in keys} if keys else plain


def _method_section(section: dict) -> dict:
    try:
        return MethodSpec.parse(section).as_dict()
    except UserError:  # not a method this version knows: compared as written
        return section


def _prepare_output_dir(cfg: TrainConfig, args: TrainingArguments, resume: bool) -> str | None:
    """The checkpoint to resume from (None: start afresh), after checking it was made by the same
    model, method and data. Runs on the main process first, since it may set aside a half-written
    or damaged checkpoint."""
    if not resume:
        checkpoint = None
    else:
        checkpoint = latest_complete_checkpoint(cfg.output_dir, set_aside=args.should_save, notify=_notice)
    saved_path = os.path.join(cfg.output_dir, RUN_CONFIG)
    if checkpoint and os.path.isfile(saved_path):
        saved = read_yaml_config(saved_path)
        if _comparable(saved, RESUME_KEYS) != _comparable(cfg.to_dict(), RESUME_KEYS):
            raise UserError(f"'{cfg.output_dir}' holds checkpoints of a run with a different model, method or data "
                            f"(see {saved_path}): choose another output_dir, or delete that folder to start over")
    return checkpoint


def _record_config(cfg: TrainConfig, args: TrainingArguments) -> None:
    """run_config.yaml, written once the tokenizer, data and model have loaded: a run refused for
    bad input leaves nothing in output_dir."""
    if args.should_save:
        os.makedirs(cfg.output_dir, exist_ok=True)
        with open(os.path.join(cfg.output_dir, RUN_CONFIG), "w") as f:
            yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)


def _notice(message: str) -> None:
    """A one-line notice on stderr (even with quiet: it says that files were moved)."""
    print(f"difflora train: {message}", file=sys.stderr)


def _load_model(cfg: TrainConfig):
    # Trainer (Accelerate) moves the model to each process's GPU; a quantized base is placed as it loads,
    # so --device cpu (training.use_cpu) must reach it here
    model, _ = load_base(cfg.model, dtype=cfg.weights_dtype, attn_implementation=cfg.attention_backend,
                         quantization=cfg.quantization, device="cpu" if cfg.device == "cpu" else None)
    model = prepare_for_training(model)  # a quantized base as QLoRA prepares it; a float base is untouched
    if compat.training_arguments(cfg.training).get(compat.checkpointing_argument()):
        model.config.use_cache = False  # the cache is useless in training and clashes with recomputation
    return model


def _datasets(cfg: TrainConfig, tokenizer, progress: bool):
    stats = ReadStats()
    kw = dict(max_length=cfg.data.max_length, packing=cfg.data.packing, skip_bad_rows=cfg.data.skip_bad_rows,
              progress=progress)
    train = build_dataset(cfg.data.train, tokenizer, max_examples=cfg.data.max_examples, stats=stats, **kw)
    evaluation = build_dataset(cfg.data.eval, tokenizer, **kw) if cfg.data.eval else None
    if evaluation is None and cfg.data.eval_fraction:
        split = train.train_test_split(test_size=cfg.data.eval_fraction, seed=0)
        train, evaluation = split["train"], split["test"]
    return train, evaluation, stats


def _training_arguments(cfg: TrainConfig, quiet: bool, has_eval: bool) -> TrainingArguments:
    values = {**DEFAULT_TRAINING, **cfg.training}
    if has_eval:
        values.setdefault("eval_strategy", "steps")
        values.setdefault("eval_steps", values["save_steps"])
    if quiet:
        values.update(disable_tqdm=True, report_to=[])
    if not torch.cuda.is_available():
        # also what makes torchrun's CPU processes form a gloo DDP group; bf16: true then means
        # CPU autocast in bf16, which Trainer supports
        values.setdefault("use_cpu", True)
    values = compat.training_arguments(values)  # the checkpointing options under this release's names
    checkpointing = compat.checkpointing_argument()
    if values.get(checkpointing):
        values.setdefault(checkpointing + "_kwargs", {"use_reentrant": False})
    try:
        return TrainingArguments(output_dir=cfg.output_dir, **values)
    except (ValueError, TypeError) as exc:
        raise UserError(f"invalid training settings: {str(exc).splitlines()[0]}") from exc


def _save_outputs(trainer, tokenizer, cfg: TrainConfig, result: TrainResult) -> None:
    trainer.save_model(cfg.output_dir)  # every process: FSDP gathers the weights; only the main one writes
    if not trainer.is_world_process_zero():
        return
    tokenizer.save_pretrained(cfg.output_dir)
    with open(os.path.join(cfg.output_dir, "log_history.json"), "w") as f:
        json.dump(result.log_history, f, indent=1)
    marker = {"config": cfg.to_dict(), "method": result.method, "metrics": result.metrics,
              "data_stats": result.data_stats}
    tmp = os.path.join(cfg.output_dir, DONE_MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=1, default=str)
    os.replace(tmp, os.path.join(cfg.output_dir, DONE_MARKER))  # written last, atomically


def _print_start(cfg, model, n_examples, stats, checkpoint) -> None:
    from rich.console import Console

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    skipped = f", {stats.skipped} bad rows skipped" if stats.skipped else ""
    Console(stderr=True).print(
        f"[bold]difflora train[/]: {cfg.method.label} on {cfg.model} -> {cfg.output_dir}\n"
        f"  {n_examples} training examples ({stats.truncated} truncated to {cfg.data.max_length} tokens{skipped}); "
        f"trainable parameters {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)"
        + (f"\n  resuming from {checkpoint}" if checkpoint else "")
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
    if result.lambda_history:
        table.add_row("last lambda per layer",
                      " ".join(f"{layer}:{points[-1][1]:.3f}" for layer, points in result.lambda_history.items()))
    stats = result.data_stats
    table.add_row("rows read / skipped / truncated",
                  f"{stats.get('rows', 0)} / {stats.get('skipped', 0)} / {stats.get('truncated', 0)}")
    for key in ("train_runtime", "train_steps_per_second", "eval_loss", "wall_seconds"):
        if key in result.metrics:
            table.add_row(key, f"{result.metrics[key]:.4g}")
    if result.resumed_from:
        table.add_row("resumed from", result.resumed_from)
    table.add_row("adapter", result.output_dir)
    Console(stderr=True).print(table)
