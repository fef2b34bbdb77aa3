"""The demo's paired comparisons pair rows by sample id, not by their order, and ignore samples only
one model was scored on."""

import random

from difflora.demo.compare import findings
from difflora.evaluation.task import TaskResult
from difflora.evaluation.tasks import needles


def _rows(label, scores):
    return [{"model": label, "task": "mk2", "length": n, "index": i, "score": s} for (n, i), s in scores.items()]


def test_identical_per_sample_scores_in_shuffled_order_differ_by_exactly_zero():
    rng = random.Random(0)
    scores = {(n, i): float(rng.random() < 0.5) for n in (256, 512) for i in range(20)}
    lora, diff = _rows("lora-8", scores), _rows("difflora-64", scores)
    rng.shuffle(diff)
    diff.append({"model": "difflora-64", "task": "mk2", "length": 256, "index": 99, "score": 1.0})  # unpaired
    result = TaskResult("nih", {"lora-8": {}, "difflora-64": {}}, lora + diff, {}, needles.SAMPLE_ID)
    mk2 = next(f for f in findings({"nih": result}, ("lora-8", "difflora-64"), (2,), 512) if f.name == "NIH MK-2")
    assert mk2.measured == ["LoRA - difflora-64 +0.00 [+0.00, +0.00]"] and mk2.verdicts == ["cannot tell"]


def test_a_one_sample_change_moves_the_difference_by_one_over_n():
    scores = {(256, i): 0.0 for i in range(40)}
    better = {**scores, (256, 7): 1.0}
    result = TaskResult("nih", {}, _rows("lora-8", better) + _rows("difflora-64", scores)[::-1], {}, needles.SAMPLE_ID)
    mk2 = next(f for f in findings({"nih": result}, ("lora-8", "difflora-64"), (2,), 512) if f.name == "NIH MK-2")
    assert mk2.measured[0].startswith(f"LoRA - difflora-64 {1 / 40:+.2f} [")
