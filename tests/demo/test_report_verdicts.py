"""The report's verdict section on made-up findings: the grid (rows per finding and measure, a column
per model), one explanation of disagreement however many findings disagree, and each disagreement in
the comparison section pointing to it."""

from difflora.demo.compare import Finding
from difflora.demo.plan import quick_plan
from difflora.demo.report import GRID, HOW_RUN, VERDICTS, WHY_DISAGREE, _paper_comparison, _verdicts, verdict_grid
from difflora.evaluation.document import Report
from difflora.evaluation.stats import Estimate

MODELS = ("lora-8", "difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn")


def _found() -> list[Finding]:
    mk2 = Finding("NIH MK-2", "LoRA far ahead", "LoRA-8 minus each variant.")
    for m, verdict in zip(MODELS[1:], ("agrees", "disagrees", "cannot tell", "disagrees")):
        mk2.add(f"LoRA - {m} +0.10 [+0.02, +0.18]", verdict, m, diff=Estimate(0.1, 0.02, 0.18, 100))
    mv = Finding("NIH MV", "DiffLoRA far ahead", "Each variant minus LoRA-8.")
    mv.measured.append("not run")
    gn = Finding("GroupNorm", "GroupNorm destroys the model", "difflora-32 minus difflora-32-gn.")
    gn.add("nih: difflora-32 - difflora-32-gn -0.30 [-0.40, -0.20]", "disagrees", "difflora-32-gn", "nih",
           Estimate(-0.3, -0.4, -0.2, 100))
    gn.add("icl: difflora-32 - difflora-32-gn +0.30 [+0.20, +0.40]", "agrees", "difflora-32-gn", "icl",
           Estimate(0.3, 0.2, 0.4, 100))
    return [mk2, mv, gn]


def test_the_grid_has_a_row_per_finding_and_measure_and_a_column_per_model():
    rows, columns, cells = verdict_grid(_found(), MODELS)
    assert rows == ["NIH MK-2", "NIH MV (not measured)", "GroupNorm: needles", "GroupNorm: ICL"]
    assert columns == list(MODELS[1:])
    assert cells[(0, 1)] == "disagrees" and cells[(2, 3)] == "disagrees" and cells[(3, 3)] == "agrees"
    assert not any(row == 1 for row, _ in cells) and (2, 0) not in cells


def test_disagreement_is_explained_once_and_referred_to(tmp_path):
    report = Report("t")
    found = _found()
    _verdicts(report, found, quick_plan(), str(tmp_path / "no-base"), str(tmp_path))
    _paper_comparison(report, found)
    md_path, _ = report.write(str(tmp_path))
    md = open(md_path).read()
    assert md.splitlines()[2] == f"## {VERDICTS}" and (tmp_path / GRID).stat().st_size > 5000
    assert f"]({GRID})" in md
    assert md.count(f"### {WHY_DISAGREE}") == 1 and md.count("need not behave like a 1B model") == 1
    assert "Here 3 of the 6 verdicts disagree (in NIH MK-2, GroupNorm)." in md
    assert "the 95% intervals of this run's differences are 0.16 wide (the median)" in md
    assert md.count(f'Why it can: "{WHY_DISAGREE}", at the top.') == 2  # one per disagreeing finding
    assert "| NIH MK-2 | agrees | disagrees | cannot tell | disagrees |" in md
    assert "| NIH MV | Each variant minus LoRA-8. Not measured in this run. |" in md
    assert "1 fine-tuning seed (seed 0) per model; intervals are over evaluation samples only" in md
    assert HOW_RUN not in md  # the logistics are written last, by write_demo_report
