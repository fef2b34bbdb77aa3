"""DiffLoRA in lm-evaluation-harness.

`import difflora.evaluation.lm_eval_model` registers the model type "difflora": lm-eval's own HF
model (HFLM) with the DIFFLORA method registered in PEFT first, so its `peft=` argument loads a
DiffLoRA adapter like any LoRA adapter:

    lm_eval --model difflora --model_args pretrained=BASE,peft=ADAPTER --tasks gsm8k \
            --include_path ... --trust_remote_code    # after: python -c "import difflora.evaluation.lm_eval_model"

or from Python / `difflora eval lm-eval` (which does the import for you). With a pip-installed
difflora the plain `--model hf --model_args pretrained=BASE,peft=ADAPTER` works too, because the
package registers DIFFLORA whenever peft is imported.
"""

from __future__ import annotations

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

import difflora  # noqa: F401  (registers DIFFLORA with PEFT before HFLM loads the adapter)

MODEL_NAME = "difflora"


@register_model(MODEL_NAME)
class DiffLoRALM(HFLM):
    """HFLM for a base model plus an optional DiffLoRA (or any PEFT) adapter given as peft=PATH."""


def evaluate(base: str, adapter: str | None, tasks: list[str], include_path: str | None = None,
             limit: int | None = None, batch_size: int = 1, num_fewshot: int | None = None) -> dict:
    """Run lm-eval tasks on BASE (+ ADAPTER); returns lm-eval's results dict."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    model_args = f"pretrained={base}" + (f",peft={adapter}" if adapter else "")
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    return simple_evaluate(model=MODEL_NAME, model_args=model_args, tasks=tasks, task_manager=manager,
                           limit=limit, batch_size=batch_size, num_fewshot=num_fewshot, device="cpu")
