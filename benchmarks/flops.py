"""Analytic FLOP model of one training step (forward + backward + AdamW) of a Llama-shaped causal LM
at batch size 1, for the full model, PEFT LoRA and DiffLoRA.

The DiffLoRA/LoRA FLOP bound printed by the benchmark is step_flops(DiffLoRA) / step_flops(LoRA),
i.e. 1 + (what DiffLoRA adds - what it does not do that LoRA does) / LoRA's whole step.

Notation: T tokens (batch 1, sequence length T), d hidden, H query heads, Hk key-value heads,
h head_dim, I intermediate, V vocabulary, L layers. Widths: q = H h, kv = Hk h.

Matmuls (a Linear in -> out over T tokens costs 2 T in out FLOPs forward):
  backward of a Linear = input gradient (2 T in out, only if its input requires grad)
                       + weight gradient (2 T in out, only if its weight is trainable).
  So a frozen Linear costs 1x forward in backward and nothing at all when its input does not
  require grad either (layer 0's q/k/v under DiffLoRA, whose input comes from the frozen
  embedding); a trained one costs 2x.
  Low-rank adapter scale * B A x (rank r): A is in -> r, B is r -> out; both weights get
  gradients; B always needs its input gradient (it is the way to A); A needs it only if x does.
  Per layer: q (d -> q), k, v (d -> kv), o (q -> d), gate, up (d -> I), down (I -> d).
  LM head d -> V (untied weight in these shapes; the embedding lookup is not a matmul).
Attention (per call; fused SDPA, causal, so only the T(T+1)/2 query-key pairs on or below the
  diagonal are computed, which is what PyTorch's CPU and CUDA flash kernels do):
  forward  QK^T and PV: 2 * 2 * H * h * T(T+1)/2   (GQA does not reduce it: every query head works)
  backward: ATTN_BWD_FACTOR (2.5) x forward: recompute QK^T, then dV = P^T dO, dP = dO V^T,
            dQ = dS K, dK = dS^T Q (5 matmuls against 2 in forward). It runs whenever any of
            q, k, v requires grad (the kernel computes all three gradients).
  DiffLoRA calls it twice (positive and negative term); that second call is its main extra cost.
  With shared keys (K2 = K1) it is one call over 2H query heads: the same FLOPs as two calls, but
  the backward of the positive half always runs (one kernel computes every head's gradient).
Elementwise work (estimates; together they move the bound by about 1%):
  per element, forward / backward: RMSNorm 4/8, rotary 3/3 (on Q, K and on Q2, K2), residual add
  1/0, SiLU(gate) * up 5/8, the DiffLoRA combination O1 - lambda O2 2/2, GroupNorm 4/8, softmax
  inside attention 4/5 per computed score, cross-entropy 4/2 per logit, the per-token lambda's
  sigmoid 4/3 per (token, head) after its d -> H Linear (a trained matmul, counted as one).
Optimizer: AdamW, ADAM_FLOPS_PER_PARAM (12) per trainable parameter.

Not counted: the embedding lookup, dropout (0 in every config), kernel-launch and Python overhead.
Those are why a measured time ratio can sit off the bound; the benchmark's target is 10%.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

ATTN_BWD_FACTOR = 2.5
ADAM_FLOPS_PER_PARAM = 12
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# (forward, backward) FLOPs per element of the elementwise operations listed in the docstring.
ELEMENTWISE = {
    "rmsnorm": (4, 8),
    "rotary": (3, 3),
    "residual": (1, 0),
    "silu_mul": (5, 8),
    "combine": (2, 2),
    "group_norm": (4, 8),
    "softmax": (4, 5),
    "cross_entropy": (4, 2),
    "sigmoid": (4, 3),
}


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


SHAPES = {
    # The benchmark's default CPU shape: hidden 512 with Llama's proportions (GQA 4:1, head_dim 64,
    # MLP width 2.7x). Its bound is ~1.13 at 512 tokens and ~1.5 at 4096 (see BENCHMARKS.md).
    "hidden-512": ModelShape(hidden=512, layers=4, heads=8, kv_heads=2, head_dim=64, intermediate=1376, vocab=4096),
    # Llama-3.2-1B (tied embeddings in the real model; counted as an untied head here, same FLOPs).
    "llama-1b": ModelShape(hidden=2048, layers=16, heads=32, kv_heads=8, head_dim=64, intermediate=8192,
                           vocab=128256),
    # For the smoke test and --quick.
    "tiny": ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=172, vocab=256),
}


@dataclass(frozen=True)
class Method:
    """What a configuration trains, as far as FLOPs are concerned."""

    name: str
    kind: str  # "full" (every weight trained), "lora" or "difflora"
    lora_r: int = 0
    lora_targets: tuple[str, ...] = ()
    negative_r: int = 0
    positive_r: int = 0
    group_norm: bool = False
    learned_lambda: bool = False
    shared_keys: bool = False  # K2 = K1: no K2 adapter, no rotary on K2, one attention call
    token_lambda: bool = False  # lambda[t, h] = sigmoid(w_h . x_t + b_h)


def method(name: str) -> Method:
    """The Method of a benchmark configuration name: "base", "lora-8" or a DiffLoRA preset."""
    if name == "base":
        return Method(name, "full")
    if name.startswith("lora-"):
        return Method(name, "lora", lora_r=int(name.split("-", 1)[1]), lora_targets=LORA_TARGETS)
    from difflora.tuner.config import PRESETS

    if name not in PRESETS:
        raise ValueError(f"unknown configuration '{name}': use base, lora-R or one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    # The shared negative base reuses W_Q x / W_K x already computed for the positive term: no extra matmul.
    return Method(name, "difflora", negative_r=preset["r"], positive_r=preset.get("positive_r", 0),
                  group_norm=preset.get("group_norm", False),
                  learned_lambda=preset.get("lambda_mode") == "learned",
                  shared_keys=preset.get("negative_keys") == "shared",
                  token_lambda=preset.get("lambda_mode") == "token")


class Tally:
    """FLOPs per component, forward and backward."""

    def __init__(self):
        self.fwd: dict[str, float] = defaultdict(float)
        self.bwd: dict[str, float] = defaultdict(float)
        self.params = 0  # trainable parameters (for the optimizer term)

    def add(self, component: str, forward: float, backward: float) -> None:
        self.fwd[component] += forward
        self.bwd[component] += backward

    def linear(self, component: str, tokens: int, fan_in: int, fan_out: int, *, input_grad: bool,
               trained: bool) -> None:
        f = 2 * tokens * fan_in * fan_out
        self.add(component, f, f * (int(input_grad) + int(trained)))
        self.params += fan_in * fan_out if trained else 0

    def low_rank(self, tokens: int, fan_in: int, fan_out: int, r: int, *, input_grad: bool) -> None:
        self.linear("adapters", tokens, fan_in, r, input_grad=input_grad, trained=True)
        self.linear("adapters", tokens, r, fan_out, input_grad=True, trained=True)

    def elementwise(self, op: str, elements: float, *, backward: bool, component: str = "elementwise") -> None:
        f, b = ELEMENTWISE[op]
        self.add(component, f * elements, b * elements if backward else 0)

    def attention(self, component: str, tokens: int, shape: ModelShape, *, backward: bool, softmax: bool) -> None:
        pairs = tokens * (tokens + 1) / 2  # causal
        f = 2 * 2 * shape.heads * shape.head_dim * pairs
        self.add(component, f, ATTN_BWD_FACTOR * f if backward else 0)
        if softmax:
            self.elementwise("softmax", shape.heads * pairs, backward=backward, component=component)

    @property
    def total(self) -> float:
        return sum(self.fwd.values()) + sum(self.bwd.values()) + self.optimizer

    @property
    def optimizer(self) -> float:
        return ADAM_FLOPS_PER_PARAM * self.params

    def components(self) -> dict[str, float]:
        names = list(dict.fromkeys([*self.fwd, *self.bwd]))
        out = {n: self.fwd[n] + self.bwd[n] for n in names}
        out["optimizer"] = self.optimizer
        return out


def step_flops(shape: ModelShape, config: Method | str, tokens: int, *, elementwise: bool = True) -> Tally:
    """FLOPs of one training step on `tokens` tokens (batch 1); see the module docstring."""
    m = method(config) if isinstance(config, str) else config
    t = Tally()
    full, lora, diff = m.kind == "full", m.kind == "lora", m.kind == "difflora"
    T, d, width_mlp = tokens, shape.hidden, shape.intermediate
    ew = t.elementwise if elementwise else (lambda *a, **k: None)
    lora_on = {name: lora and name in m.lora_targets for name in LORA_TARGETS}
    # Does the residual stream require grad? Only if the embedding trains (full fine-tuning).
    stream_grad = full
    if full:
        t.params += shape.vocab * d
    for _ in range(shape.layers):
        x_grad = stream_grad or full  # input of the layer's projections (after the frozen/trained RMSNorm)
        ew("rmsnorm", T * d, backward=x_grad)
        t.params += d if full else 0
        projections = (("q_proj", shape.q_width), ("k_proj", shape.kv_width), ("v_proj", shape.kv_width))
        qkv_grad = {}
        for name, width in projections:
            t.linear("projections", T, d, width, input_grad=x_grad, trained=full)
            if lora_on[name]:
                t.low_rank(T, d, width, m.lora_r, input_grad=x_grad)
            qkv_grad[name] = x_grad or lora_on[name]
        if diff and m.positive_r:
            for name, width in projections[:2]:
                t.low_rank(T, d, width, m.positive_r, input_grad=x_grad)
                qkv_grad[name] = True
        qk_grad = qkv_grad["q_proj"] or qkv_grad["k_proj"]
        attn_grad = qk_grad or qkv_grad["v_proj"]
        ew("rotary", T * (shape.q_width + shape.kv_width), backward=qk_grad)
        one_call = diff and m.shared_keys  # the positive heads share the negative heads' kernel (and its backward)
        t.attention("attention", T, shape, backward=attn_grad or one_call, softmax=elementwise)
        if diff:
            t.low_rank(T, d, shape.q_width, m.negative_r, input_grad=x_grad)
            if not m.shared_keys:
                t.low_rank(T, d, shape.kv_width, m.negative_r, input_grad=x_grad)
            t.params += 4 * shape.head_dim if m.learned_lambda else 0
            if m.token_lambda:
                t.linear("adapters", T, d, shape.heads, input_grad=x_grad, trained=True)
                t.params += shape.heads  # the bias b_h
                ew("sigmoid", T * shape.heads, backward=True)
            ew("rotary", T * (shape.q_width + (0 if m.shared_keys else shape.kv_width)), backward=True)
            t.attention("attention-2", T, shape, backward=True, softmax=elementwise)
            ew("combine", T * shape.q_width, backward=True)
            if m.group_norm:
                ew("group_norm", T * shape.q_width, backward=True)
                t.params += shape.head_dim
            attn_grad = True
        t.linear("projections", T, shape.q_width, d, input_grad=attn_grad, trained=full)
        if lora_on["o_proj"]:
            t.low_rank(T, shape.q_width, d, m.lora_r, input_grad=attn_grad)
        stream_grad = stream_grad or attn_grad or lora_on["o_proj"]
        ew("residual", T * d, backward=False)
        # MLP
        ew("rmsnorm", T * d, backward=stream_grad)
        t.params += d if full else 0
        for name in ("gate_proj", "up_proj"):
            t.linear("mlp", T, d, width_mlp, input_grad=stream_grad, trained=full)
            if lora_on[name]:
                t.low_rank(T, d, width_mlp, m.lora_r, input_grad=stream_grad)
        act_grad = stream_grad or lora_on["gate_proj"] or lora_on["up_proj"]
        ew("silu_mul", T * width_mlp, backward=act_grad)
        t.linear("mlp", T, width_mlp, d, input_grad=act_grad, trained=full)
        if lora_on["down_proj"]:
            t.low_rank(T, width_mlp, d, m.lora_r, input_grad=act_grad)
        stream_grad = stream_grad or act_grad or lora_on["down_proj"]
        ew("residual", T * d, backward=False)
    ew("rmsnorm", T * d, backward=stream_grad)
    t.params += d if full else 0
    t.linear("lm_head", T, d, shape.vocab, input_grad=stream_grad, trained=full)
    ew("cross_entropy", T * shape.vocab, backward=True)
    return t


def flop_bound(shape: ModelShape, config: str, tokens: int, reference: str = "lora-8") -> float:
    """The step-time ratio config/reference that FLOPs alone predict."""
    return step_flops(shape, config, tokens).total / step_flops(shape, reference, tokens).total


def main() -> None:
    """Print the bounds of every DiffLoRA preset on every known shape (no torch needed beyond the import)."""
    from difflora.tuner.config import PRESETS

    for shape_name, shape in SHAPES.items():
        print(f"{shape_name}: {shape}")
        for tokens in (512, 1024, 2048, 4096):
            bounds = "  ".join(f"{p}={flop_bound(shape, p, tokens):.3f}" for p in PRESETS)
            print(f"  T={tokens:5d}  {bounds}")


if __name__ == "__main__":
    main()
