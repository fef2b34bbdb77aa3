"""What every evaluation task returns, and how its per-sample rows identify a sample.

A task (one module in evaluation/tasks/) runs already-loaded models ({label: (model, tokenizer)})
with an EvalSettings and its own options, and returns a TaskResult: the summary per model and one
row per sample and model, in memory. With settings.out_dir the same result is also written as
<name>_samples.jsonl, <name>_summary.json and <name>_settings.json (results.save_result).

A sample is identified by the values of its task's SAMPLE_ID fields in a row (needles: task,
length, index), as a tuple: the same sample has the same id for every model, which is what a paired
comparison of two models pairs on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SampleId = tuple


def sample_id(row: dict, fields: tuple[str, ...]) -> SampleId:
    """The id of the sample a row is about: its values of `fields`, in order."""
    return tuple(row[f] for f in fields)


@dataclass
class TaskResult:
    name: str                 # the task's name: its key in a results dict and its files' prefix
    summary: dict             # {model label: the task's summary for that model}
    rows: list[dict] = field(default_factory=list)  # one per sample and model, each with "model"
    settings: dict = field(default_factory=dict)    # how it was run (written as <name>_settings.json)
    sample_fields: tuple[str, ...] = ()             # the row fields that identify a sample
    score_field: str = "score"                      # the row field holding a sample's score

    def scores(self, label: str) -> dict[SampleId, float]:
        """{sample id: score} of one model (empty when the task has no per-sample score)."""
        if not self.sample_fields:
            return {}
        return {sample_id(r, self.sample_fields): float(r[self.score_field]) for r in self.rows if r["model"] == label}
