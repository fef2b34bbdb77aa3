"""DiffLoRA in lm-evaluation-harness (0.4.x): any lm-eval task on a base model and its adapters.

Three ways in, all tested:

1. `difflora eval lm-eval --model SPEC ... --tasks gsm8k,arc_easy [--include-path DIR]`
   (models loaded by difflora, like every other `difflora eval` command; see
   difflora.evaluation.tasks.lm_eval_harness).
2. The registered model type "difflora" (importing this module registers it):
       python -m difflora.evaluation.lm_eval_model --model difflora \\
           --model_args pretrained=ADAPTER_DIR --tasks gsm8k
   `python -m difflora.evaluation.lm_eval_model` is lm-eval's own command line with the type
   registered first. pretrained= may be a base model (with peft=ADAPTER) or an adapter folder
   alone (its adapter_config.json names the base; a tokenizer saved in it is used).
3. lm-eval's own `hf` model with its peft= argument, in any process where difflora is imported
   before PEFT loads the adapter: after `import difflora` (simple_evaluate(model="hf", ...)), under
   `python -m difflora.evaluation.lm_eval_model --model hf --model_args pretrained=BASE,peft=ADAPTER_DIR`,
   or with the plain `lm_eval` executable when difflora was pip-installed (not editable): the
   install's difflora-autoload.pth imports difflora right after peft is first executed (see
   difflora_autoload; a mere probe for peft does not trigger it).
"""

from __future__ import annotations

import os

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

import difflora  # noqa: F401  (registers DIFFLORA with PEFT before HFLM loads an adapter)

from ..loading import adapter_base
from .tasks.lm_eval_harness import task_manager

MODEL_NAME = "difflora"


@register_model(MODEL_NAME)
class DiffLoRALM(HFLM):
    """lm-eval's HFLM with a DiffLoRA (or any PEFT) adapter: pretrained=BASE[,peft=ADAPTER] or
    pretrained=ADAPTER_DIR."""

    def __init__(self, pretrained="", peft: str | None = None, tokenizer=None, **kwargs):
        if (isinstance(pretrained, str) and peft is None
                and os.path.isfile(os.path.join(pretrained, "adapter_config.json"))):
            peft, pretrained = pretrained, adapter_base(pretrained, f"pass pretrained=BASE,peft={pretrained}")
        if tokenizer is None and isinstance(peft, str) and os.path.isfile(os.path.join(peft, "tokenizer_config.json")):
            tokenizer = peft  # the fine-tuning run saved its tokenizer beside the adapter
        super().__init__(pretrained=pretrained, peft=peft, tokenizer=tokenizer, **kwargs)


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


def main() -> None:
    """lm-eval's command line, with the "difflora" model type registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
