"""The demo's row for the shared-key form: its ranks, and the report's comparison with the paper's
variants (a non-inferiority verdict per metric and variant)."""

from difflora.demo.compare import SHARED_KEYS, findings
from difflora.demo.plan import ALL_MODELS, DemoPlan, rank_overrides
from difflora.evaluation.task import TaskResult


def test_the_row_is_planned_with_difflora_64s_capped_rank():
    assert SHARED_KEYS in ALL_MODELS
    method = DemoPlan().method_for(SHARED_KEYS, hidden_size=128)
    assert method.as_dict() == {"type": "difflora", "preset": SHARED_KEYS, **rank_overrides(128)["difflora-64"]}


def _scores(shared: float, paper: float, n: int = 40) -> dict:
    """Per-sample results: the shared-key model right on `shared` of the ICL samples, difflora-64 on
    `paper`; on degeneration the shared-key model never degenerates, difflora-64 on half."""
    def rows(label, rate, score="score"):
        return [{"model": label, "shots": 2, "index": i, score: float(i < rate * n)} for i in range(n)]
    return {"icl": TaskResult("icl", {}, rows(SHARED_KEYS, shared) + rows("difflora-64", paper), {},
                              ("shots", "index")),
            "degeneration": TaskResult("degeneration", {}, rows(SHARED_KEYS, 0.0, "degenerate")
                                       + rows("difflora-64", 0.5, "degenerate"), {}, ("index",), "degenerate")}


def _finding(results):
    found = [f for f in findings(results, (SHARED_KEYS, "difflora-64"), (2,), 512) if f.name.startswith("Shared keys")]
    assert len(found) == 1
    return found[0]


def test_equal_scores_agree_and_a_large_loss_disagrees():
    same = _finding(_scores(0.5, 0.5))
    assert same.verdicts == ["agrees", "agrees"]  # icl: equal; degeneration: fewer loops is better, not a miss
    assert any(m.startswith(f"icl: {SHARED_KEYS} - difflora-64") for m in same.measured)
    worse = _finding(_scores(0.1, 0.9))
    assert worse.verdicts[0] == "disagrees"


def test_no_finding_without_the_row():
    assert not [f for f in findings(_scores(0.5, 0.5), ("difflora-64",), (2,), 512) if f.name.startswith("Shared")]
