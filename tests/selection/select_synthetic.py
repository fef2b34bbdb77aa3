"""A synthetic selection task where only known modules need to change.

The teacher is the student's base model with one change the search must find; training and
held-out batches are random token sequences labelled with the teacher's logits (an endless stream,
so the search cannot overfit), and the loss is the per-token KL(teacher || student).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

VOCAB = 128


def tiny_base(layers: int = 4, seed: int = 0):
    from difflora.testing import tiny_model

    return tiny_model("llama", vocab_size=VOCAB, hidden_size=64, layers=layers, seed=seed)


def perturb_v_proj(base, layer: int, seed: int = 1, scale: float = 1.5):
    """A teacher whose layer's v_proj gets a rank-2 change reading input directions that v_proj
    ignores (outside its row space). No other module can produce that change (o_proj only sees
    what v_proj passes on), so the search must pick exactly that v_proj."""
    teacher = copy.deepcopy(base)
    g = torch.Generator().manual_seed(seed)
    weight = teacher.model.layers[layer].self_attn.v_proj.weight
    with torch.no_grad():
        u = torch.randn(weight.shape[0], 2, generator=g)
        v = torch.randn(2, weight.shape[1], generator=g)
        rows, _ = torch.linalg.qr(weight.T)       # orthonormal basis of the row space
        v = v - (v @ rows) @ rows.T
        delta = u @ v
        weight += scale * delta / delta.norm() * weight.norm()
    return teacher.eval()


def difflora_teacher(base, layer: int, lambda_init: float = 0.6):
    """A teacher with differential attention on one layer only (random negative projections)."""
    from peft import get_peft_model

    from difflora import DiffLoRAConfig

    config = DiffLoRAConfig(r=8, lora_alpha=16, lambda_mode="fixed", lambda_init=lambda_init,
                            layers_to_transform=[layer])
    torch.manual_seed(123)
    return get_peft_model(copy.deepcopy(base), config).eval()


class TeacherStream:
    """Endless batches {input_ids, teacher_logits}; the same seed gives the same batches."""

    def __init__(self, teacher, seed: int, batch_size: int = 8, length: int = 32):
        self.teacher, self.seed, self.batch_size, self.length = teacher, seed, batch_size, length

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        while True:
            ids = torch.randint(3, VOCAB, (self.batch_size, self.length), generator=g)
            with torch.no_grad():
                logits = self.teacher(input_ids=ids).logits
            yield {"input_ids": ids, "teacher_logits": logits}


def kl_to_teacher(model, batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], use_cache=False).logits
    return F.kl_div(F.log_softmax(logits, -1), F.log_softmax(batch["teacher_logits"], -1), log_target=True,
                    reduction="batchmean") / logits.shape[1]
