"""The demo pipeline: base model -> instruction data -> fine-tune every method -> evaluate every
model -> report.

Stages: "base", "data", "train:<model>" per method, "eval:<model>" for the base and every adapter,
"report". OUT/state.json records each finished stage with a fingerprint of its inputs (state.py);
a rerun skips finished stages, redoes stages whose inputs changed, and finishes interrupted ones:
pretraining and fine-tuning resume from their own Trainer checkpoints, evaluation from the
(model, task) results already written. DIFFLORA_DEMO_STOP_AFTER=<stage> stops a run after that
stage, which is how the tests interrupt a run at a known point.
"""

from __future__ import annotations

import os
import shutil
import time

import torch
from rich.console import Console

from ..evaluation.results import write_json
from ..loading import ModelSpec, check_model_source, load_model
from ..train.config import read_yaml_config
from ..train.method_spec import LORA_8, MethodSpec
from .base import ensure_base, needs_build
from .evaluate import icl_eval_file
from .plan import DIFFORA_MODELS, DemoPlan, check_plan, selection_for
from .state import DemoState, StopAfterStage, fingerprint

console = Console(stderr=True)

__all__ = ["StopAfterStage", "run_demo", "stage_names"]


def stage_names(plan: DemoPlan) -> list[str]:
    """Stage names; a DiffoRA model's train stage includes its search ("select:<model>" in the state)."""
    return (["base", "data"] + [f"train:{m}" for m in plan.models]
            + [f"eval:{m}" for m in ("base", *plan.models)] + ["report"])


class Demo:
    def __init__(self, plan: DemoPlan, out_dir: str, rebuild_base: bool = False, command: str | None = None,
                 device: str | None = None):
        check_plan(plan)
        self.plan, self.out, self.rebuild_base, self.command = plan, out_dir, rebuild_base, command
        self.device = device  # None: cuda when available; not part of any fingerprint (where, not what)
        self.state = DemoState(out_dir)
        self.names = stage_names(plan)
        self.base_path: str | None = None
        self.adapters: dict[str, str] = {}
        self.train_file = self.heldout_file = ""

    def banner(self, stage: str, what: str) -> None:
        console.rule(f"[bold][{self.names.index(stage) + 1}/{len(self.names)}] {what}")

    # -- stages ------------------------------------------------------------------------------

    def base(self) -> str:
        """The base model folder: the cached embedded model (pretrained first if missing) or the
        config's model."""
        if not self.plan.embedded_base:  # a folder, a hub id, or a fetched real base's name
            self.base_path = check_model_source(self.plan.base_model)
            return self.base_path
        inputs_digest = self.plan.recipe.digest()
        if self.rebuild_base or needs_build(self.plan.recipe):
            self.banner("base", "pretraining the default base model (once; cached for later runs)")
        started = time.time()
        path, built = ensure_base(self.plan.recipe, rebuild=self.rebuild_base, log=console.print)
        console.print(("built and cached: " if built else "default base model: ") + path)
        self.base_path = path
        write_json(os.path.join(self.out, "base.json"), {"path": path, "built_now": built})
        if built or not self.state.is_done("base", inputs_digest):
            self.state.finish("base", inputs_digest, time.time() - started if built else 0.0,
                              path=path, built_now=built)
        return path

    def data(self) -> None:
        """The generated instruction data (training and held-out), or the config's data."""
        plan = self.plan
        data_dir = os.path.join(self.out, "data")
        generated_train, generated_heldout = (os.path.join(data_dir, "train.jsonl"),
                                              os.path.join(data_dir, "heldout.jsonl"))
        self.train_file = plan.train_data or generated_train
        self.heldout_file = plan.heldout_data or generated_heldout
        inputs_digest = plan.digest("train_data", "heldout_data", "train_examples", "heldout_examples",
                                    "instruction_units", "seed", "icl_split")
        if self.state.is_done("data", inputs_digest) and os.path.isfile(generated_heldout):
            return
        self.banner("data", "generating the instruction data")
        started = time.time()
        from .instructions import split_icl_pool, write_instruction_data

        icl_rows = split_icl_pool(icl_eval_file(self.out), plan.seed + 11) if plan.icl_split else None
        # with the config's own training data, the generated set still gives a held-out loss
        n_train = plan.train_examples if not plan.train_data else 1
        write_instruction_data(generated_train, generated_heldout, n_train, plan.heldout_examples, plan.seed + 7,
                               max_units=plan.instruction_units, icl_rows=icl_rows)
        console.print(f"training data: {self.train_file}; held-out data: {self.heldout_file}")
        self.state.finish("data", inputs_digest, time.time() - started)

    def train(self, name: str, hidden_size: int) -> None:
        from ..train import run_training

        stage = f"train:{name}"
        output_dir = os.path.join(self.out, "adapters", name)
        method = self.plan.method_for(name, hidden_size)
        config = {
            "model": self.base_path, "output_dir": output_dir, "method": method,
            "data": {"train": self.train_file, "max_length": self.plan.train_max_length},
            "training": {**self.plan.training, "report_to": []},
        }
        inputs_digest = self._hash({**config, "method": method.as_dict()},
                                 self.state.stages.get("data", {}).get("fingerprint"), self._base_id(),
                                 self.plan.select_steps if name in DIFFORA_MODELS else None)
        if self.device is not None:  # after the digest: a run resumed on another device is the same run
            config["training"]["use_cpu"] = torch.device(self.device).type == "cpu"
        if name in DIFFORA_MODELS:
            config = self._select(name, config, inputs_digest)
        self.adapters[name] = output_dir
        if self.state.is_done(stage, inputs_digest) and os.path.isdir(output_dir):
            return
        if self.state.changed(stage, inputs_digest):
            console.print(f"{name}: its settings changed since the last run; training it again")
            shutil.rmtree(output_dir, ignore_errors=True)
        self.banner(stage, f"fine-tuning {name}")
        self.state.start(stage, inputs_digest)
        started = time.time()
        result = run_training(config, resume=True)
        self.state.finish(stage, inputs_digest, time.time() - started,
                          train_runtime=result.metrics.get("train_runtime"))

    def _select(self, name: str, config: dict, inputs_digest: str) -> dict:
        """DiffoRA: search which modules (layers) get adapters, then train the kept ones from their
        search weights. The selection is its own stage, so a finished search is not redone."""
        from ..select import run_selection

        stage, out = f"select:{name}", os.path.join(self.out, "select", name)
        options = selection_for(name, self._lora_8_params())
        if not self.state.is_done(stage, inputs_digest) or not os.path.isfile(os.path.join(out, "train_config.yaml")):
            self.banner(f"train:{name}", f"DiffoRA search for {name} ({self.plan.select_steps} steps)")
            self.state.start(stage, inputs_digest)
            started = time.time()
            result = run_selection({**config, "output_dir": out}, search_steps=self.plan.select_steps, **options,
                                   progress=True)
            self.state.finish(stage, inputs_digest, time.time() - started, kept=[c.module_name for c in result.kept],
                              trainable_params=result.trainable_params)
        path = os.path.join(out, "train_config.yaml")
        selected = read_yaml_config(path)  # the selection as `difflora train` reads it
        method = MethodSpec.parse(selected["method"], path)
        return {**config, "method": method, "init_from": selected["init_from"]}

    def _lora_8_params(self) -> int:
        """LoRA-8's trainable parameters on this base (the budget of diffora-lora's selection)."""
        from ..select import lora_params_per_rank

        return LORA_8["r"] * lora_params_per_rank(self.base_path, LORA_8["target_modules"])

    def evaluate(self, label: str) -> None:
        from .evaluate import evaluate_model

        stage = f"eval:{label}"
        plan = self.plan
        eval_settings = plan.digest("tasks", "nih_tasks", "nih_lengths", "nih_samples", "icl_shots", "icl_samples",
                                    "attention_length", "attention_prompts", "degeneration_tokens", "batch_size",
                                    "seed", "train_max_length", "icl_split", "nih_new_tokens")
        trained = self.state.stages.get(f"train:{label}", {}).get("fingerprint")
        inputs_digest = self._hash(eval_settings, trained, self._base_id(), self.heldout_file)
        eval_dir = os.path.join(self.out, "eval", label)
        if self.state.is_done(stage, inputs_digest):
            return
        if self.state.changed(stage, inputs_digest):
            shutil.rmtree(eval_dir, ignore_errors=True)
        self.banner(stage, f"evaluating {label}")
        self.state.start(stage, inputs_digest)
        started = time.time()
        spec = ModelSpec(self.base_path, self.adapters.get(label))
        model, tokenizer = load_model(spec, device=self.device or ("cuda" if torch.cuda.is_available() else None))
        evaluate_model(plan, label, model, tokenizer, self.out, self.heldout_file, log=console.print)
        self.state.finish(stage, inputs_digest, time.time() - started)

    def report(self, compare_with: str | None = None) -> str:
        from .report import write_demo_report

        self.banner("report", "writing the report")
        started = time.time()
        md = write_demo_report(self.plan, self.base_path, self.adapters, self.out, self.state, self.command,
                               compare_with)
        self.state.finish("report", self.plan.digest(), time.time() - started)
        return md

    # -- helpers ------------------------------------------------------------------------------

    def _base_id(self) -> str:
        return self.plan.recipe.digest() if self.plan.embedded_base else str(self.plan.base_model)

    @staticmethod
    def _hash(*parts) -> str:
        return fingerprint(parts)


def run_demo(plan: DemoPlan, out_dir: str = "runs/demo", rebuild_base: bool = False, command: str | None = None,
             device: str | None = None, compare_with: str | None = None) -> str:
    """Runs the demo, or finishes an interrupted one; returns the path of report.md. device: where
    the adapters train and every model is evaluated, cpu or cuda (default: cuda when available);
    compare_with: a finished demo's folder whose verdicts the report sets beside this run's."""
    from transformers import AutoConfig

    demo = Demo(plan, out_dir, rebuild_base, command, device)
    demo.base()
    demo.data()
    hidden_size = AutoConfig.from_pretrained(demo.base_path).hidden_size
    for name in plan.models:
        demo.train(name, hidden_size)
    for label in ("base", *plan.models):
        demo.evaluate(label)
    return demo.report(compare_with)


def default_threads() -> int:
    """Up to 2 threads on a CPU: the demo's matmuls are small, and past 2 threads they gain little
    while an oversubscribed core slows them down many times over."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))
