"""DiffoRA: learn which modules get adapters (the Differential Adaptation Matrix), for LoRA and DiffLoRA.

    from difflora.select import run_selection, lora_for_budget
    result = run_selection("config.yaml", method="lora", sampling_rate=0.5, out_dir="runs/select")
    baseline = lora_for_budget(base_model_path, result.trainable_params)   # LoRA everywhere, same cost

Steps (one module each): candidates -> relaxation (a learned weight scales each candidate's adapter
output) -> search (adapters on train, weights on held-out, alternating) -> discretize (top fraction
or parameter budget) -> to_adapter (inherited weights, PEFT adapter, train config) + dam / heatmap.
"""

from .candidates import Candidate, enumerate_candidates
from .dam import DAM
from .discretize import discretize, keep_count
from .matching import MatchedLoRA, lora_for_budget, lora_params_per_rank
from .pipeline import SelectionResult, run_selection
from .relaxation import ArchitectureWeights, SearchModel, build_search_model
from .search import SearchHistory, SearchSettings, run_search
from .to_adapter import build_exported_model, equivalent_gates, export_method, inherit

__all__ = [
    "ArchitectureWeights", "Candidate", "DAM", "MatchedLoRA", "SearchHistory", "SearchModel", "SearchSettings",
    "SelectionResult", "build_exported_model", "build_search_model", "discretize", "enumerate_candidates",
    "equivalent_gates", "export_method", "inherit", "keep_count", "lora_for_budget", "lora_params_per_rank",
    "run_search", "run_selection",
]
