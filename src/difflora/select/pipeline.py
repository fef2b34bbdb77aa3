"""run_selection: a DiffoRA search from a training config, end to end.

    search (relaxed DAM, alternating updates) -> discretise (sampling rate or budget)
    -> kept adapters inherit their search weights -> adapter folder + train config + DAM JSON + heat map
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..loading import load_base, load_chat_tokenizer
from ..train.config import PLACEMENT_KEYS, TrainConfig, load_train_config, read_yaml_config
from ..train.method_spec import MethodSpec
from ..validation import check_output_folder
from .candidates import Candidate
from .dam import DAM
from .data import batches, search_splits
from .discretize import check_budget, check_sampling_rate, discretize
from .heatmap import plot_dam
from .relaxation import build_search_model
from .search import SearchHistory, SearchSettings, run_search
from .to_adapter import (
    build_exported_model,
    equivalent_gates,
    export_method,
    inherit,
    save_adapter,
    write_train_config,
)

SELECTABLE_TYPES = ("lora", "difflora")
NUMERIC_KEYS = ("sampling_rate", "budget", "search_steps", "heldout_fraction", "learning_rate", "arch_learning_rate",
                "batch_size")
SELECT_KEYS = ("method", "out", *NUMERIC_KEYS)


@dataclass
class SelectionResult:
    method: str                      # lora | difflora
    dam: DAM                         # architecture weights of every candidate, and which were kept
    kept: list[Candidate]
    trainable_params: int            # of the selected adapter
    selected_method: MethodSpec      # the selected configuration's method (its `method:` section)
    out_dir: str
    adapter_dir: str                 # PEFT adapter folder with the inherited weights (+ tokenizer)
    config_path: str                 # training config for `difflora train`
    dam_json: str
    heatmap: str
    folded: bool                     # architecture weights folded into the exported weights (see to_adapter.py)
    equivalent_gates: list[float]    # weights under which the search model equals the exported one
    history: SearchHistory = field(default_factory=SearchHistory)


def run_selection(config: str | os.PathLike | dict, method: str | None = None, sampling_rate: float | None = None,
                  budget: int | None = None, search_steps: int | None = None, out_dir: str | None = None,
                  heldout_fraction: float | None = None, overrides: list[str] | None = None,
                  progress: bool = True) -> SelectionResult:
    """Search, discretise and export. Options not given here come from the config's optional
    `select:` section, then the defaults (sampling rate 0.5 unless a budget is given, 200 steps)."""
    raw, options = _options(config, dict(method=method, sampling_rate=sampling_rate, budget=budget,
                                         search_steps=search_steps, out=out_dir, heldout_fraction=heldout_fraction))
    cfg = load_train_config(raw, overrides)
    method = _method_for(cfg, options.get("method"))
    rate, budget = options.get("sampling_rate"), options.get("budget")
    if rate is not None and budget is not None:
        raise UserError("give either a sampling rate or a parameter budget, not both")
    if rate is not None:
        check_sampling_rate(rate)
    seed = int(cfg.training.get("seed", 0))
    settings = SearchSettings(steps=options.get("search_steps", SearchSettings.steps),
                              learning_rate=options.get("learning_rate", cfg.training.get("learning_rate", 1e-4)),
                              arch_learning_rate=options.get("arch_learning_rate", SearchSettings.arch_learning_rate))
    settings.check()
    if options.get("out"):  # the config's output_dir is checked with the config
        check_output_folder(options["out"], "the selection's output folder (out)")

    from transformers import set_seed

    set_seed(seed)
    base, tokenizer = _load(cfg)
    train_set, heldout_set = search_splits(cfg, tokenizer, options.get("heldout_fraction"), seed)
    batch_size = int(options.get("batch_size", cfg.training.get("per_device_train_batch_size", 1)))
    search = build_search_model(base, method)
    if budget is not None:
        check_budget(budget, search.candidates)
    history = run_search(search, batches(train_set, batch_size, tokenizer.pad_token_id, seed),
                         batches(heldout_set, batch_size, tokenizer.pad_token_id, seed + 1), settings,
                         progress=progress)
    weights = search.arch().detach().float().cpu().tolist()
    kept = discretize(weights, search.candidates, rate, budget)
    inherited = inherit(search, kept)
    dam = DAM(method.type, search.candidates, weights, kept)
    selected = export_method(search.method, kept)
    del search, base  # the exported model is built on a fresh copy of the base weights
    _free_memory()

    exported, folded = build_exported_model(_load(cfg)[0], selected, kept, inherited)
    out = options.get("out") or cfg.output_dir
    os.makedirs(out, exist_ok=True)
    adapter_dir = save_adapter(exported, tokenizer, os.path.join(out, "adapter"))
    trainable = sum(p.numel() for p in exported.parameters() if p.requires_grad)
    how = f"within a budget of {budget:,} parameters" if budget is not None else f"(sampling rate {rate or 0.5})"
    note = (f"{len(kept)} of {len(dam.candidates)} {dam.method} candidates kept {how}, "
            f"{trainable:,} trainable parameters")
    gates = equivalent_gates(dam.candidates, kept, inherited, folded)
    dam_json = dam.save_json(os.path.join(out, "dam.json"), sampling_rate=rate, budget=budget,
                             trainable_params=trainable, folded=folded, equivalent_gates=gates,
                             search=dict(steps=history.steps, train_loss=history.train_loss,
                                         heldout_loss=history.heldout_loss, settings=settings.__dict__))
    result = SelectionResult(dam.method, dam, kept, trainable, selected, out, adapter_dir,
                             write_train_config(_train_dict(cfg), selected, out, adapter_dir, note), dam_json,
                             plot_dam(dam, os.path.join(out, "dam.png")), folded, gates, history)
    if progress:
        _print_summary(result, note)
    return result


def _options(config, given: dict) -> tuple[dict, dict]:
    """The training config (a dict) and the selection options: the arguments given, over the
    config's `select:` section (a rate given replaces a budget there and vice versa)."""
    raw, section = _read_config(config)
    given = {k: v for k, v in given.items() if v is not None}
    if "budget" in given:
        section.pop("sampling_rate", None)
    if "sampling_rate" in given:
        section.pop("budget", None)
    options = {**section, **given}
    return raw, {k: _number(v) if k in NUMERIC_KEYS else v for k, v in options.items()}


def _read_config(config) -> tuple[dict, dict]:
    """The training config (as a dict) and its optional `select:` section."""
    if isinstance(config, dict):
        raw = dict(config)
    else:
        raw = read_yaml_config(os.fspath(config))
    options = dict(raw.pop("select", None) or {})
    if unknown := set(options) - set(SELECT_KEYS):
        raise UserError(f"unknown select key(s) {sorted(unknown)}; known: {', '.join(SELECT_KEYS)}")
    return raw, options


def _number(value):
    """YAML 1.1 reads 1e-3 (no dot) as a string; a whole float (2.5e5) is a count."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _method_for(cfg: TrainConfig, kind: str | None) -> MethodSpec:
    """The config's method, or the default method of another type (--method)."""
    kind = kind or cfg.method.type
    if kind not in SELECTABLE_TYPES:
        raise UserError(f"DiffoRA selects modules for LoRA or DiffLoRA: method must be lora or difflora, "
                        f"got '{kind}'")
    return cfg.method if kind == cfg.method.type else MethodSpec.default(kind)


def _load(cfg: TrainConfig):
    # where training would run (training.use_cpu, `--device`), with the same weights and attention backend
    model, _ = load_base(cfg.model, dtype=cfg.weights_dtype, attn_implementation=cfg.attention_backend,
                         device=cfg.device)
    tokenizer = load_chat_tokenizer(*cfg.tokenizer_source)
    return model, tokenizer


def _train_dict(cfg: TrainConfig) -> dict:
    """The config for the selection's train_config.yaml, less where the search ran (`--device`): the
    training that follows may run elsewhere."""
    out = {k: v for k, v in cfg.to_dict().items() if v is not None}
    out["training"] = {k: v for k, v in out.get("training", {}).items() if k not in PLACEMENT_KEYS}
    return out


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _print_summary(result: SelectionResult, note: str) -> None:
    from rich.console import Console

    kept = ", ".join(c.label for c in result.kept[:12]) + (" ..." if len(result.kept) > 12 else "")
    Console(stderr=True).print(
        f"[bold]difflora select[/]: {note}\n  kept: {kept}\n  adapter (inherited weights"
        f"{', architecture weights folded in' if result.folded else ''}): {result.adapter_dir}\n"
        f"  train with: difflora train {result.config_path}\n  DAM: {result.heatmap}, {result.dam_json}"
    )
