"""DiffLoRA in lm-evaluation-harness (0.4.x): any lm-eval task on a base model and its adapters.

Three ways in, all tested:

1. `difflora eval lm-eval --model SPEC ... --tasks gsm8k,arc_easy [--include-path DIR]`
   (models loaded by difflora, like every other `difflora eval` command; see run_lm_eval).
2. The registered model type "difflora" (importing this module registers it):
       python -m difflora.evaluation.lm_eval_model --model difflora \\
           --model_args pretrained=ADAPTER_DIR --tasks gsm8k
   `python -m difflora.evaluation.lm_eval_model` is lm-eval's own command line with the type
   registered first. pretrained= may be a base model (with peft=ADAPTER) or an adapter folder
   alone (its adapter_config.json names the base; a tokenizer saved in it is used).
3. lm-eval's own `hf` model with its peft= argument works in any process that imported difflora,
   e.g. `python -m difflora.evaluation.lm_eval_model --model hf --model_args
   pretrained=BASE,peft=ADAPTER_DIR ...` or simple_evaluate(model="hf", ...) after `import difflora`.
   The plain `lm_eval` executable relies on the autoload hook (difflora-autoload.pth), which today
   misses the import when transformers probes for peft first (KeyError 'DIFFLORA'): use 1 or 2.
"""

from __future__ import annotations

import json
import os

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

import difflora  # noqa: F401  (registers DIFFLORA with PEFT before HFLM loads an adapter)

from ..errors import UserError
from .lm_eval_results import plot_lm_eval
from .results import write_results

MODEL_NAME = "difflora"


@register_model(MODEL_NAME)
class DiffLoRALM(HFLM):
    """lm-eval's HFLM with a DiffLoRA (or any PEFT) adapter: pretrained=BASE[,peft=ADAPTER] or
    pretrained=ADAPTER_DIR."""

    def __init__(self, pretrained="", peft: str | None = None, tokenizer=None, **kwargs):
        if isinstance(pretrained, str) and peft is None and _is_adapter(pretrained):
            peft, pretrained = pretrained, _adapter_base(pretrained)
        if tokenizer is None and isinstance(peft, str) and os.path.isfile(os.path.join(peft, "tokenizer_config.json")):
            tokenizer = peft  # the fine-tuning run saved its tokenizer beside the adapter
        super().__init__(pretrained=pretrained, peft=peft, tokenizer=tokenizer, **kwargs)


def _is_adapter(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "adapter_config.json"))


def _adapter_base(path: str) -> str:
    with open(os.path.join(path, "adapter_config.json")) as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise UserError(f"adapter '{path}' does not name its base model: pass pretrained=BASE,peft={path}")
    return base


def run_lm_eval(models: dict, tasks: list[str], include_path: str | None = None, limit: int | float | None = None,
                num_fewshot: int | None = None, batch_size: int = 1, out_dir: str | None = None,
                apply_chat_template: bool = False, bootstrap_iters: int = 1000, seed: int = 0) -> dict:
    """lm-eval tasks on already-loaded models: {label: (model, tokenizer)}.

    Returns summary[label][task] = {metric: value} (lm-eval's "acc,none", "acc_stderr,none", ...).
    With out_dir: lm_eval_samples.jsonl (lm-eval's logged samples), lm_eval_summary.json,
    lm_eval_settings.json and lm_eval.png."""
    from lm_eval import simple_evaluate

    if not tasks:
        raise UserError("lm-eval needs at least one task (--tasks)")
    if include_path and not os.path.isdir(include_path):
        raise UserError(f"--include-path '{include_path}' is not a folder of lm-eval task YAMLs")
    manager = task_manager(tasks, include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"unknown lm-eval task '{unknown[0]}': see `lm_eval ls tasks`, or add --include-path for your own YAML")
    summary, rows = {}, []
    for label, (model, tokenizer) in models.items():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                              log_samples=out_dir is not None, apply_chat_template=apply_chat_template,
                              bootstrap_iters=bootstrap_iters, random_seed=seed, numpy_random_seed=seed,
                              torch_random_seed=seed, fewshot_random_seed=seed)
        summary[label] = {task: _numeric(metrics) for task, metrics in out["results"].items()}
        for task, samples in (out.get("samples") or {}).items():
            rows += [{"model": label, "task": task, **_jsonable(s)} for s in samples]
    if out_dir:
        write_results(out_dir, "lm_eval", summary, rows, dict(tasks=list(tasks), include_path=include_path,
                                                             limit=limit, num_fewshot=num_fewshot, seed=seed))
        plot_lm_eval(summary, os.path.join(out_dir, "lm_eval.png"))
    return summary


def task_manager(tasks: list[str], include_path: str | None = None):
    """lm-eval's TaskManager; when every task is defined under include_path, lm-eval's own
    catalogue (thousands of YAMLs, ~15 s to index) is not indexed."""
    from lm_eval.tasks import TaskManager

    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
        return TaskManager(include_path=include_path)
    return TaskManager()


def evaluate(base: str, adapter: str | None, tasks: list[str], include_path: str | None = None,
             limit: int | None = None, batch_size: int = 1, num_fewshot: int | None = None,
             device: str | None = None) -> dict:
    """BASE (+ ADAPTER) through the registered "difflora" model type; returns lm-eval's output dict."""
    import torch
    from lm_eval import simple_evaluate

    model_args = f"pretrained={base}" + (f",peft={adapter}" if adapter else "")
    return simple_evaluate(model=MODEL_NAME, model_args=model_args, tasks=tasks,
                           task_manager=task_manager(tasks, include_path), limit=limit,
                           batch_size=batch_size, num_fewshot=num_fewshot,
                           device=device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _numeric(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) or k == "alias"}


def _jsonable(sample: dict) -> dict:
    return json.loads(json.dumps(sample, default=str))


def main() -> None:
    """lm-eval's command line, with the "difflora" model type registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
