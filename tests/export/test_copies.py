"""The standalone modeling file's copies of core/ stay identical to it (difflora.export.copies), and the
pieces that must differ compute what core computes."""

import shutil

import pytest
import torch

from difflora.core import attention, lambda_param, lowrank
from difflora.export import copies
from difflora.export.standalone import modeling_difflora as standalone

EXPECTED_COPIES = {
    *(f"difflora.core.lambda_param.{name}" for name in (
        "FixedLambda", "TokenLambda", "LearnedLambda.__init__", "LearnedLambda.reset_parameters",
        "LearnedLambda.forward")),
    *(f"difflora.core.attention.{name}" for name in (
        "HeadRMSNorm", "combine", "stack_head_pairs", "split_head_pairs")),
}


def test_the_standalone_copies_match_core():
    assert copies.check() == []
    found = {c.target for c in copies.find_copies(copies.STANDALONE_MODELING.read_text())}
    assert found == EXPECTED_COPIES


@pytest.fixture
def temp_modeling(tmp_path):
    path = tmp_path / "modeling_difflora.py"
    shutil.copyfile(copies.STANDALONE_MODELING, path)
    return path


def test_an_altered_copy_is_found_and_fixed(temp_modeling, capsys):
    original = temp_modeling.read_text()
    line = "for t in (first, second)], dim=dim + 1)\n"  # stack_head_pairs' torch.cat
    assert original.count(line) == 1
    temp_modeling.write_text(original.replace(line, "for t in (second, first)], dim=dim + 1)\n"))
    problems = copies.check(temp_modeling)
    assert len(problems) == 1 and "difflora.core.attention.stack_head_pairs" in problems[0]
    assert copies.main([str(temp_modeling)]) == 1
    assert copies.main([str(temp_modeling), "--fix"]) == 0
    assert "rewrote the copy of difflora.core.attention.stack_head_pairs" in capsys.readouterr().out
    assert temp_modeling.read_text() == original and copies.check(temp_modeling) == []


def test_an_altered_method_copy_and_a_lost_original_are_found(temp_modeling):
    text = temp_modeling.read_text()
    text = text.replace("nn.init.normal_(p, mean=0.0, std=0.1)", "nn.init.normal_(p, mean=0.0, std=0.2)")
    text = text.replace("core.attention.combine\n", "core.attention.combined\n")
    temp_modeling.write_text(text)
    problems = copies.check(temp_modeling)
    assert len(problems) == 2
    assert "LearnedLambda.reset_parameters" in problems[0] and "original is not found" in problems[1]


def test_an_unmarked_namesake_of_core_is_found(temp_modeling):
    text = temp_modeling.read_text().replace("# Copied from difflora.core.attention.HeadRMSNorm\n", "")
    temp_modeling.write_text(text)
    (problem,) = copies.check(temp_modeling)
    assert "HeadRMSNorm has a namesake in difflora.core" in problem


def test_renames_are_applied(tmp_path):
    path = tmp_path / "renamed.py"
    path.write_text("import torch\n\n\n"
                    "# Copied from difflora.core.attention.split_head_pairs with stacked->packed\n"
                    "def split_head_pairs():\n    pass\n")
    assert copies.fix(path) == ["difflora.core.attention.split_head_pairs"]
    text = path.read_text()
    body = text.split("with stacked->packed\n")[1]
    assert "def split_head_pairs(packed: torch.Tensor," in body and "stacked" not in body
    assert copies.check(path) == []


def test_standalone_lowrank_computes_what_core_computes():
    """Core's LowRank holds alpha / r apart and the tuner casts around it; the exported one has the scale in B
    and casts inside (difflora.export.weights writes (A, scale * B))."""
    torch.manual_seed(0)
    core = lowrank.LowRank(16, 24, 4, alpha=8.0, init="paper")
    exported = standalone.LowRank(16, 24, 4)
    with torch.no_grad():
        exported.A.weight.copy_(core.A.weight)
        exported.B.weight.copy_(core.B.weight * core.scale)
    for dtype in (torch.float32, torch.bfloat16):  # a half-precision model keeps the factors float32
        x = torch.randn(2, 5, 16).to(dtype)
        expected = core(x.to(core.A.weight.dtype)).to(x.dtype)  # as tuner/layer.py's _adapter calls it
        assert exported(x).dtype == dtype
        torch.testing.assert_close(exported(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name, args", [("FixedLambda", (0.3,)), ("LearnedLambda", (8, 0.3)),
                                        ("TokenLambda", (16, 4, 0.3))])
def test_standalone_lambdas_compute_what_core_computes(name, args):
    torch.manual_seed(0)
    core, exported = getattr(lambda_param, name)(*args), getattr(standalone, name)(*args)
    with torch.no_grad():
        for p in core.parameters():
            p.normal_()
    exported.load_state_dict(core.state_dict())
    x = torch.randn(2, 5, 16)
    assert torch.equal(torch.as_tensor(exported(x)), torch.as_tensor(core(x)))


def test_standalone_head_norm_and_head_pairs_compute_what_core_computes():
    torch.manual_seed(0)
    core, exported = attention.HeadRMSNorm(8), standalone.HeadRMSNorm(8)
    with torch.no_grad():
        core.weight.normal_()
    exported.load_state_dict(core.state_dict())
    x = torch.randn(2, 5, 4, 8, dtype=torch.bfloat16)
    assert torch.equal(exported(x), core(x))
    first, second = torch.randn(2, 6, 5, 8), torch.randn(2, 6, 5, 8)
    stacked = standalone.stack_head_pairs(first, second, 2, dim=1)
    assert torch.equal(stacked, attention.stack_head_pairs(first, second, 2, dim=1))
    split = standalone.split_head_pairs(stacked, 2, dim=1)
    assert torch.equal(split[0], first) and torch.equal(split[1], second)
