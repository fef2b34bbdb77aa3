"""What the DiffLoRA paper reports for Llama-3.2-1B-Instruct fine-tuned on Tulu-2, for reports to set
beside measured results: shapes to compare, not targets. Where each figure comes from (the paper's
Figure 1, Table 3, Figure 4): docs/evaluation.md."""

from __future__ import annotations

# One sentence per evaluation, as the paper states it.
FINDINGS = {
    "nih": "LoRA far ahead at MK-2; every DiffLoRA variant far ahead of LoRA at MV.",
    "icl": "DiffLoRA near the base model, below LoRA, and worse as demonstrations grow past the 4096-token "
           "training length.",
    "attention": "DiffLoRA moves attention mass off BOS and slightly denoises around the needle.",
    "degeneration": "DiffLoRA models sometimes loop ('The question is not a valid question. ...') or emit uuids "
                    "ending '0a0a0a'.",
    "general": "HumanEval: base 0.64, LoRA 0.53, DiffLoRA-64 0.64, DiffLoRA-32 0.61; averages 0.42-0.43 for all "
               "but +GN (0.15).",
    "rag": "RAG, LLM judge (Table 3 average): base 0.556, LoRA 0.601, DiffLoRA-64 0.520, DiffLoRA-64 fixed 0.534, "
           "DiffLoRA-32 0.508, +GN 0.051.",
}

# The paper's numbers (Figure 1) for benchmarks that lm-eval also has, by lm-eval task name.
NUMBERS = {
    "humaneval": {"base": 0.64, "LoRA": 0.53, "DiffLoRA-64": 0.64, "DiffLoRA-32": 0.61},
    "drop": {"base": 0.29, "LoRA": 0.33, "DiffLoRA": 0.26},
}


def numbers_for(task: str) -> dict | None:
    """The paper's numbers for an lm-eval task name (humaneval, humaneval_instruct, drop, ...)."""
    for name, numbers in NUMBERS.items():
        if task == name or task.startswith(name + "_"):
            return numbers
    return None
