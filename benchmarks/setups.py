"""The configurations the benchmark compares, built on a model from config (no download), and the
training step they are timed on.

"base" is full fine-tuning: every weight trainable, same step (forward, backward, AdamW). A frozen
base model has nothing to differentiate, so autograd would skip its backward entirely and its
"training step" would be a forward pass; full fine-tuning is the cost PEFT methods are meant to
undercut, so it is the meaningful base row. The target comparison is DiffLoRA against LoRA.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from flops import SHAPES, ModelShape
from peft import LoraConfig, get_peft_model

import difflora  # registers DIFFLORA with PEFT; imported here so forked memory workers need not import it again
import difflora.loading

CONFIGS = ("base", "lora-8", "difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn", "shared-diff",
           "difflora-shared-kv")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Setup:
    """One configuration ready to train: the model, its optimizer and what it trains."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    trainable: int


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Parameters made inside get this dtype (as from_pretrained(dtype=...) does)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def build_base(shape: ModelShape, device: str, dtype: torch.dtype, max_positions: int, seed: int = 0):
    """The base model, made directly on `device` in `dtype`: no float32 copy on the CPU first (a 1B model
    took seconds to build on the CPU and move). The random initialisation runs on the device's generator,
    so base weights are identical across configurations of one run on one device, not across devices.
    Buffers that transformers computes in float32 on purpose (rotary inv_freq) stay float32, as with
    from_pretrained(dtype=...)."""
    with torch.device(device), default_dtype(dtype):
        model = difflora.loading.tiny_model(
            "llama", vocab_size=shape.vocab, hidden_size=shape.hidden, layers=shape.layers, heads=shape.heads,
            kv_heads=shape.kv_heads, intermediate_size=shape.intermediate, head_dim=shape.head_dim,
            max_position_embeddings=max(4096, max_positions), seed=seed)
    return model


def build(name: str, shape: ModelShape, device: str, dtype: torch.dtype, max_positions: int = 4096) -> Setup:
    """Base weights are identical across configurations (same seed); adapters go on top. PEFT and
    DiffLoRA create each adapter on its base weight's device (float32 adapters, as PeftModel upcasts
    half-precision ones); the final .to(device) only catches a tensor left elsewhere and moves nothing
    otherwise."""
    model = build_base(shape, device, dtype, max_positions)
    if name.startswith("lora-"):
        r = int(name.split("-", 1)[1])
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                                 target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    elif name != "base":
        model = get_peft_model(model, difflora.DiffLoRAConfig.from_preset(name))
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    return Setup(name, model.train(), optimizer, sum(p.numel() for p in params))


def train_step(setup: Setup, input_ids: torch.Tensor) -> float:
    """One optimizer step on a batch of one sequence (loss over every token)."""
    setup.optimizer.zero_grad(set_to_none=True)
    loss = setup.model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    setup.optimizer.step()
    return loss.item()


def random_ids(shape: ModelShape, tokens: int, device: str, seed: int = 0, batch: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, shape.vocab, (batch, tokens), generator=generator).to(device)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def shape_by_name(name: str) -> ModelShape:
    return SHAPES[name]
