"""An independent float64 reference of one DiffLoRA attention layer, written from the spec's
formula with materialised softmaxes. It reads only weights (never calls the layer's code paths):

    O = [softmax(Q1 K1^T s + M) - lambda softmax(Q2 K2^T s + M)] V  ->  GroupNorm / rescale  ->  W_O

With shared keys K2 = K1; with a per-token lambda, lambda[t, h] = sigmoid(w_h . x_t + b_h) scales
row t of head h's negative map.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64


def _linear(x, lin):
    w = lin.weight.to(F64)
    out = x @ w.T
    return out + lin.bias.to(F64) if getattr(lin, "bias", None) is not None else out


def _lowrank(x, lowrank):
    return (x @ lowrank.A.weight.to(F64).T @ lowrank.B.weight.to(F64).T) * lowrank.scale


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.to(F64)


def _qk_norm(t, norm):
    """A family's q/k RMSNorm from its weights; Gemma's norms scale by (1 + weight)."""
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    weight = norm.weight.to(F64) + (1.0 if type(norm).__name__.startswith("Gemma") else 0.0)
    return _rms(t, weight, eps)


def _rope_theta(cfg, layer_idx):
    params = getattr(cfg, "rope_parameters", None)
    if not params:
        return cfg.rope_theta
    if "rope_theta" not in params:  # Gemma 3: one rotary per layer type (local and global)
        params = params[cfg.layer_types[layer_idx]]
    return params["rope_theta"]


def _sliding_window(cfg, base, layer_idx):
    if cfg.model_type in ("mistral", "mixtral", "phi3"):  # these read the window from the config
        return getattr(cfg, "sliding_window", None)
    if getattr(cfg, "layer_types", None) and cfg.model_type.startswith("gemma"):
        return cfg.sliding_window if cfg.layer_types[layer_idx] == "sliding_attention" else None
    return getattr(base, "sliding_window", None)


def _rotary(t, positions, head_dim, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=F64) / head_dim))
    freqs = positions.to(F64)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    half = head_dim // 2
    rotated = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
    return t * cos + rotated * sin


def _mask(attention_mask, T, sliding_window):
    """True where query i may attend key j: causal, not padding, inside the sliding window."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    if sliding_window is not None:
        allowed = allowed & (i - j < sliding_window)
    allowed = allowed[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    return allowed


def reference_layer(layer, x, attention_mask=None, adapter="default"):
    """Float64 output of DiffLoRAAttention `layer` for input hidden states x (batch x T x hidden)."""
    base = layer.base_layer
    cfg = base.config
    s = layer.settings[adapter]
    x = x.to(F64)
    B, T, _ = x.shape
    d = base.head_dim
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads

    if hasattr(base, "qkv_proj"):  # Phi-3: one fused projection whose output is [q | k | v]
        q_base, k_base, v = _linear(x, base.qkv_proj).split([n_heads * d, n_kv * d, n_kv * d], dim=-1)
    else:
        q_base, k_base, v = _linear(x, base.q_proj), _linear(x, base.k_proj), _linear(x, base.v_proj)
    q1, k1 = q_base, k_base
    if s.has_positive:
        q1 = q1 + _lowrank(x, layer.difflora_q1[adapter])
        k1 = k1 + _lowrank(x, layer.difflora_k1[adapter])
    q2 = _lowrank(x, layer.difflora_q2[adapter])
    k2 = k1 if s.shared_keys else _lowrank(x, layer.difflora_k2[adapter])
    if s.negative_base == "shared":
        q2 = q_base + q2
        k2 = k2 if s.shared_keys else k_base + k2

    def heads(t, n):
        return t.view(B, T, n, d)

    whole_projection_norm = hasattr(base, "q_norm") and base.q_norm.weight.numel() == n_heads * d
    if whole_projection_norm:  # OLMo 2: RMSNorm over the whole q / k projection, before the head split
        q1, q2 = (_qk_norm(t, base.q_norm) for t in (q1, q2))
        k1, k2 = (_qk_norm(t, base.k_norm) for t in (k1, k2))
    q1, q2 = heads(q1, n_heads), heads(q2, n_heads)
    k1, k2 = heads(k1, n_kv), heads(k2, n_kv)
    if hasattr(base, "q_norm") and not whole_projection_norm:  # Qwen3, Gemma 3: per-head norm before rotary
        q1, q2 = (_qk_norm(t, base.q_norm) for t in (q1, q2))
        k1, k2 = (_qk_norm(t, base.k_norm) for t in (k1, k2))
    q1, q2, k1, k2 = (t.transpose(1, 2) for t in (q1, q2, k1, k2))
    v = heads(v, n_kv).transpose(1, 2)

    theta = _rope_theta(cfg, layer.layer_idx)
    pos = torch.arange(T)
    q1, q2, k1, k2 = (_rotary(t, pos, d, theta) for t in (q1, q2, k1, k2))
    group = n_heads // n_kv
    k1, k2, v = (t.repeat_interleave(group, dim=1) for t in (k1, k2, v))

    allowed = _mask(attention_mask, T, _sliding_window(cfg, base, layer.layer_idx))
    # Gemma scales by query_pre_attn_scalar^-1/2 instead of head_dim^-1/2, and Gemma 2 soft-caps the logits
    scale = getattr(cfg, "query_pre_attn_scalar", None) or d
    scale = 1.0 / math.sqrt(scale)
    cap = getattr(cfg, "attn_logit_softcapping", None)

    def softmax_map(q, k):
        scores = (q @ k.transpose(-1, -2)) * scale
        if cap is not None:
            scores = torch.tanh(scores / cap) * cap
        scores = scores.masked_fill(~allowed, float("-inf"))
        return torch.softmax(scores, dim=-1).nan_to_num(0.0)  # fully masked (padding) query rows -> 0

    if s.lambda_mode == "token":  # B x T x H -> B x H x T x 1: one weight per query row of each head
        lam = torch.sigmoid(_linear(x, layer.difflora_lambda[adapter].proj)).transpose(1, 2)[..., None]
    elif s.lambda_mode == "learned":  # exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init, from the parameters
        p = layer.difflora_lambda[adapter]
        q1l, k1l, q2l, k2l = (t.detach().to(F64) for t in (p.lambda_q1, p.lambda_k1, p.lambda_q2, p.lambda_k2))
        lam = float(torch.exp(q1l @ k1l) - torch.exp(q2l @ k2l)) + s.lambda_init
    else:
        lam = s.lambda_init
    out = (softmax_map(q1, k1) - lam * softmax_map(q2, k2)) @ v  # B x H x T x d
    out = out.transpose(1, 2)
    if s.group_norm:
        norm = layer.difflora_norm[adapter]
        out = _rms(out, norm.weight, norm.eps) * (1 - s.lambda_init)
    elif s.rescale:
        out = out / (1 - s.lambda_init)
    return _linear(out.reshape(B, T, n_heads * d), base.o_proj)


def capture_layer_io(model, layer, **forward_kwargs):
    """Run model(**forward_kwargs) and return (input hidden states, output) of `layer`."""
    cap = {}

    def pre(mod, args, kwargs):
        cap["x"] = kwargs.get("hidden_states", args[0] if args else None).detach()

    def post(mod, args, out):
        cap["y"] = (out[0] if isinstance(out, tuple) else out).detach()

    h1 = layer.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = layer.register_forward_hook(post)
    try:
        with torch.no_grad():
            model(**forward_kwargs)
    finally:
        h1.remove()
        h2.remove()
    return cap["x"], cap["y"]
