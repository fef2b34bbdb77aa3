"""LearnedLambda.rescale_: lambda becomes factor * lambda, checked against lambda recomputed in float64
from the parameters (exp(q1.k1) - exp(q2.k2) + lambda_init)."""

import math

import pytest
import torch

from difflora.core.lambda_param import LearnedLambda


def _lambda64(lam: LearnedLambda) -> float:
    vectors = (lam.lambda_q1, lam.lambda_k1, lam.lambda_q2, lam.lambda_k2)
    q1, k1, q2, k2 = (p.detach().double() for p in vectors)
    return math.exp(float(q1 @ k1)) - math.exp(float(q2 @ k2)) + lam.lambda_init


@pytest.mark.parametrize("init,factor", [(0.3, 0.4), (0.8, 2.0), (2.0, 0.01), (0.5, 0.0), (0.2, -1.5)])
def test_rescale_multiplies_lambda(init, factor):
    # (2.0, 0.01) and the negative factor need the second exponential moved: exp(q1.k1) cannot go below 0
    torch.manual_seed(0)
    lam = LearnedLambda(16, init)  # parameters that require grad, as in a trained model
    before = _lambda64(lam)
    lam.rescale_(factor)
    assert _lambda64(lam) == pytest.approx(factor * before, rel=1e-5, abs=1e-6)
    assert float(lam().detach()) == pytest.approx(factor * before, rel=1e-5, abs=1e-6)
    assert all(p.requires_grad for p in lam.parameters())


def test_rescale_by_one_changes_nothing_measurable():
    torch.manual_seed(1)
    lam = LearnedLambda(8, 0.4)
    before = [p.detach().clone() for p in lam.parameters()]
    lam.rescale_(1.0)
    for old, new in zip(before, lam.parameters()):
        torch.testing.assert_close(new.detach(), old, rtol=0, atol=1e-6)
