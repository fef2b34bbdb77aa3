"""The FLOP model of benchmarks/flops.py against numbers worked out by hand (no timing).

Hand shape: T = 4 tokens, d = 8, H = 2 query heads, Hk = 1 kv head, h = 4 (q width 8, kv width 4),
I = 16, V = 32, adapters of rank 2. A Linear in -> out costs 2*T*in*out forward:
  q 512, k 256, v 256, o 512, gate/up/down 1024 each, lm_head 2048.
Causal attention: T(T+1)/2 = 10 query-key pairs; forward 2*2*H*h*10 = 320, backward 2.5x = 800.
"""

import pytest
from flops import ADAM_FLOPS_PER_PARAM, SHAPES, Method, ModelShape, flop_bound, method, step_flops

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")

HAND = ModelShape(hidden=8, layers=1, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=32)
TOKENS = 4
ALL7 = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FULL = Method("full", "full")
LORA2 = Method("lora-2", "lora", lora_r=2, lora_targets=ALL7)
DIFF2 = Method("diff-2", "difflora", negative_r=2)


def matmul_components(shape, config):
    return step_flops(shape, config, TOKENS, elementwise=False).components()


def test_full_finetuning_pays_forward_plus_two_gradients_everywhere():
    c = matmul_components(HAND, FULL)
    assert c["projections"] == 3 * (512 + 256 + 256 + 512)
    assert c["mlp"] == 3 * 3 * 1024
    assert c["lm_head"] == 3 * 2048
    assert c["attention"] == 320 + 800
    # embedding 256 + 3 norms of 8 + q 64 + k 32 + v 32 + o 64 + mlp 3 * 128 + head 256
    assert c["optimizer"] == ADAM_FLOPS_PER_PARAM * 1112


def test_lora_skips_weight_gradients_and_layer0_qkv_backward():
    c = matmul_components(HAND, LORA2)
    # layer 0's frozen q/k/v read the frozen embedding: forward only; o gets its input gradient
    assert c["projections"] == (512 + 256 + 256) + 2 * 512
    assert c["mlp"] == 2 * 3 * 1024
    assert c["lm_head"] == 2 * 2048
    assert c["attention"] == 320 + 800
    # q: A 128 + 128 (weight grad only), B 128 + 256 | k, v: A 256, B 64 + 128 | o: A 384, B 384
    # gate, up: A 384, B 256 + 512 | down: A 256 + 512, B 128 + 256
    assert c["adapters"] == 640 + 448 + 448 + 768 + 2 * 1152 + 1152
    assert c["optimizer"] == ADAM_FLOPS_PER_PARAM * (32 + 24 + 24 + 32 + 48 + 48 + 48)


def test_difflora_layer0_positive_term_has_no_backward():
    c = matmul_components(HAND, DIFF2)
    assert c["projections"] == (512 + 256 + 256) + 2 * 512
    assert c["attention"] == 320  # q1, k1, v all come from the frozen embedding
    assert c["attention-2"] == 320 + 800
    assert c["adapters"] == 640 + 448  # Q2 and K2 low-rank projections
    assert c["mlp"] == 2 * 3 * 1024
    assert c["optimizer"] == ADAM_FLOPS_PER_PARAM * (32 + 24)


def test_difflora_second_layer_needs_every_input_gradient():
    two = ModelShape(**{**HAND.__dict__, "layers": 2})
    c = matmul_components(two, DIFF2)
    assert c["projections"] == (1024 + 1024) + (2 * 1024 + 2 * 512)
    assert c["attention"] == 320 + (320 + 800)
    assert c["attention-2"] == 2 * (320 + 800)
    assert c["adapters"] == (640 + 448) + (768 + 576)


def test_softmax_and_rotary_elementwise_terms():
    with_ew = step_flops(HAND, FULL, TOKENS).components()
    # softmax over the 2 heads x 10 computed scores: 4 forward + 5 backward per score
    assert with_ew["attention"] == 1120 + 2 * 10 * (4 + 5)
    diff = step_flops(HAND, DIFF2, TOKENS).components()["elementwise"]
    lora = step_flops(HAND, LORA2, TOKENS).components()["elementwise"]
    # DiffLoRA adds rotary on Q2/K2 (3 + 3 per element of T x (8 + 4)) and O1 - lambda O2 (2 + 2 on T x 8),
    # and loses layer 0's rotary backward on Q1/K1 (3 per element): LoRA's adapters make those need grad.
    assert diff - lora == 6 * TOKENS * 12 + 4 * TOKENS * 8 - 3 * TOKENS * 12


def test_shared_keys_and_token_lambda():
    shared = Method("skv", "difflora", negative_r=2, shared_keys=True, token_lambda=True)
    c = matmul_components(HAND, shared)
    # one call over 2H heads: the positive half's backward runs too, even in layer 0
    assert c["attention"] == 320 + 800 and c["attention-2"] == 320 + 800
    # Q2 low-rank 640 (no K2 adapter) + lambda Linear d -> H: forward 2*4*8*2 = 128 + weight gradient 128
    assert c["adapters"] == 640 + 256
    # Q2's A 16 + B 16, lambda w 16 + b 2
    assert c["optimizer"] == ADAM_FLOPS_PER_PARAM * (32 + 16 + 2)
    ew = step_flops(HAND, shared, TOKENS).components()["elementwise"]
    plain = step_flops(HAND, DIFF2, TOKENS).components()["elementwise"]
    # no rotary on K2 (6 per element of T x 4); sigmoid on T x H (4 + 3)
    assert ew - plain == -6 * TOKENS * 4 + 7 * TOKENS * 2
    assert method("difflora-shared-kv") == Method("difflora-shared-kv", "difflora", negative_r=64, shared_keys=True,
                                                  token_lambda=True)


def test_group_norm_and_learned_lambda_are_counted():
    gn = Method("gn", "difflora", negative_r=2, group_norm=True, learned_lambda=True)
    plain = step_flops(HAND, DIFF2, TOKENS)
    with_gn = step_flops(HAND, gn, TOKENS)
    assert with_gn.params - plain.params == 4 * 4 + 4
    assert with_gn.components()["elementwise"] - plain.components()["elementwise"] == (4 + 8) * TOKENS * 8


def test_bounds_reproduce_the_issue_figures():
    # issue 2: about 1.13 at 512 and 1.5 at 4096 on a hidden-512 shape, about 1.16 at 4096 on Llama-3.2-1B
    assert flop_bound(SHAPES["hidden-512"], "difflora-32", 512) == pytest.approx(1.13, abs=0.02)
    assert flop_bound(SHAPES["hidden-512"], "difflora-32", 4096) == pytest.approx(1.5, abs=0.05)
    assert flop_bound(SHAPES["hidden-512"], "difflora-64", 4096) == pytest.approx(1.5, abs=0.08)
    assert flop_bound(SHAPES["llama-1b"], "difflora-64", 4096) == pytest.approx(1.16, abs=0.02)
    assert flop_bound(SHAPES["llama-1b"], "difflora-32", 4096) == pytest.approx(1.16, abs=0.02)
    # the extra attention work grows with length, so the bound does too
    bounds = [flop_bound(SHAPES["hidden-512"], "difflora-64", n) for n in (512, 1024, 2048, 4096)]
    assert bounds == sorted(bounds) and bounds[0] > 1


def test_presets_map_to_their_adapters():
    assert method("difflora-64") == Method("difflora-64", "difflora", negative_r=64, learned_lambda=True)
    assert method("difflora-32-gn").positive_r == 32 and method("difflora-32-gn").group_norm
    assert method("lora-8").lora_targets == ALL7
    with pytest.raises(ValueError, match="unknown configuration 'nope'"):
        method("nope")


@pytest.mark.parametrize("config", ["base", "lora-8", "difflora-64", "difflora-32-gn", "shared-diff",
                                    "difflora-shared-kv", "shared-diff-kv"])
def test_trainable_parameter_count_matches_the_built_model(config):
    import torch
    from setups import build

    shape = SHAPES["tiny"]
    setup = build(config, shape, "cpu", torch.float32)
    assert step_flops(shape, config, 8).params == setup.trainable
