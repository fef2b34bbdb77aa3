"""The demo's row for the shared-key form (issue 13): its ranks, and the report's comparison with the
paper's variants (a non-inferiority verdict per metric and variant)."""

from difflora.demo.compare import SHARED_KEYS, findings
from difflora.demo.plan import ALL_MODELS, DemoPlan, rank_overrides


def test_the_row_is_planned_with_difflora_64s_capped_rank():
    assert SHARED_KEYS in ALL_MODELS
    method = DemoPlan().method_for(SHARED_KEYS, hidden_size=128)
    assert method == {"type": "difflora", "preset": SHARED_KEYS, **rank_overrides(128)["difflora-64"]}


def _scores(shared: float, paper: float, n: int = 40) -> dict:
    """Per-sample scores: the shared-key model right on `shared` of the samples, difflora-64 on `paper`."""
    def row(rate):
        return {f"{i}": float(i < rate * n) for i in range(n)}
    return {"icl": {SHARED_KEYS: row(shared), "difflora-64": row(paper)},
            "degeneration": {SHARED_KEYS: row(0.0), "difflora-64": row(0.5)}}


def _finding(scores):
    found = [f for f in findings({"icl": {}}, scores, (SHARED_KEYS, "difflora-64"), (2,), 512) if f.name.startswith("Shared keys")]
    assert len(found) == 1
    return found[0]


def test_equal_scores_agree_and_a_large_loss_disagrees():
    same = _finding(_scores(0.5, 0.5))
    assert same.verdicts == ["agrees", "agrees"]  # icl: equal; degeneration: fewer loops is better, not a miss
    assert any(m.startswith(f"icl: {SHARED_KEYS} - difflora-64") for m in same.measured)
    worse = _finding(_scores(0.1, 0.9))
    assert worse.verdicts[0] == "disagrees"


def test_no_finding_without_the_row():
    assert not [f for f in findings({"icl": {}}, _scores(0.5, 0.5), ("difflora-64",), (2,), 512) if f.name.startswith("Shared")]
