"""Discretising the DAM: exact fractions, parameter budgets, and the errors for bad requests."""

import math
import random

import pytest

from difflora.errors import UserError
from difflora.select import Candidate, discretize, keep_count
from difflora.select.discretize import rank


def _candidates(n=28, seed=0):
    rng = random.Random(seed)
    kinds = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    sizes = {"q_proj": 512, "k_proj": 384, "v_proj": 384, "o_proj": 512, "gate_proj": 640, "up_proj": 640,
             "down_proj": 640}
    out = []
    for i in range(n):
        kind = kinds[i % 7]
        out.append(Candidate(i, i // 7, kind, f"model.layers.{i // 7}.x.{kind}", sizes[kind]))
    return out, [rng.random() for _ in range(n)]


@pytest.mark.parametrize("rate", [0.5, 0.25, 1 / 28, 1.0, 0.1, 0.33])
def test_sampling_rate_keeps_exactly_that_fraction_of_the_top(rate):
    candidates, weights = _candidates()
    kept = discretize(weights, candidates, sampling_rate=rate)
    assert len(kept) == keep_count(28, rate) == max(1, math.floor(rate * 28 + 0.5))
    threshold = min(weights[c.index] for c in kept)
    assert all(weights[c.index] < threshold for c in candidates if c not in kept)  # the top ones, no others
    assert [c.index for c in kept] == sorted(c.index for c in kept)  # in candidate order


def test_default_is_half():
    candidates, weights = _candidates()
    assert len(discretize(weights, candidates)) == 14


@pytest.mark.parametrize("budget", [640, 2000, 5000, 9999, 10**6])
def test_budget_is_respected_and_filled(budget):
    candidates, weights = _candidates()
    kept = discretize(weights, candidates, budget=budget)
    used = sum(c.params for c in kept)
    assert used <= budget
    left_out = [c for c in candidates if c not in kept]
    assert all(used + c.params > budget for c in left_out)  # nothing else would still fit
    # greedy in rank order: a candidate is only skipped when it did not fit at its turn
    ranked, total = rank(weights, candidates), 0
    for c in ranked:
        if total + c.params <= budget:
            assert c in kept
            total += c.params


def test_ties_are_broken_by_candidate_order():
    candidates, _ = _candidates(n=7)
    kept = discretize([0.5] * 7, candidates, sampling_rate=3 / 7)
    assert [c.index for c in kept] == [0, 1, 2]


@pytest.mark.parametrize("rate", [0, 0.0, -0.1, 1.01, 2, float("nan"), float("inf"), True, "0.5"])
def test_sampling_rate_outside_0_1_is_a_clear_error(rate):
    candidates, weights = _candidates()
    with pytest.raises(UserError, match=r"sampling rate must be in \(0, 1\]"):
        discretize(weights, candidates, sampling_rate=rate)


def test_budget_smaller_than_one_adapter_is_a_clear_error():
    candidates, weights = _candidates()
    with pytest.raises(UserError, match="smaller than one adapter.*384 parameters"):
        discretize(weights, candidates, budget=383)
    for bad in (0, -5, 1.5, None.__class__):
        with pytest.raises(UserError, match="budget must be a positive number"):
            discretize(weights, candidates, budget=bad)


def test_rate_and_budget_together_is_an_error():
    candidates, weights = _candidates()
    with pytest.raises(UserError, match="either a sampling rate or a parameter budget"):
        discretize(weights, candidates, sampling_rate=0.5, budget=5000)
