"""Quantized bases (QLoRA): a bitsandbytes 4-bit or 8-bit base from a small declarative setting, and
the guard that keeps gradients through 4-bit layers exact on CPUs with AVX512-BF16.

A setting is a name or a mapping:
    nf4 | fp4                  4-bit, that data type, double quantization (QLoRA's choice)
    int8                       8-bit (LLM.int8)
    {bits: 4, quant_type: nf4, double_quant: true, compute_dtype: bfloat16}
compute_dtype None (the default) computes in the dtype the rest of the model is loaded in.

The trap the guard closes (measured with bitsandbytes 0.50.2): on a CPU with AVX512-BF16, the first
forward of a Linear4bit in eval mode without gradients (evaluation, generate; from_pretrained leaves
models in eval mode) repacks its weights in place for an inference kernel that has no backward, so
every later training step gets silently wrong or missing gradients. The repack also rounds the
block scales to bfloat16, so it cannot be undone exactly: a repacked base is refused instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from .devices import WEIGHT_DTYPES
from .errors import UserError

NAMED = {
    "nf4": dict(bits=4, quant_type="nf4", double_quant=True),
    "fp4": dict(bits=4, quant_type="fp4", double_quant=True),
    "int8": dict(bits=8),
}
QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = WEIGHT_DTYPES  # by their full names
_INSTALL = "pip install bitsandbytes (or pip install 'difflora[quant]')"


@dataclass(frozen=True)
class Quantization:
    """How the frozen base weights are stored: bits 4 (quant_type, double_quant) or 8."""

    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str | None = None

    def describe(self) -> str:
        if self.bits == 8:
            return "8-bit (bitsandbytes LLM.int8)"
        return f"4-bit {self.quant_type}{', double quantization' if self.double_quant else ''}"


def parse_quantization(value, where: str = "quantization") -> Quantization | None:
    """None, a name (nf4, fp4, int8) or a mapping of Quantization fields -> a checked Quantization;
    anything else is a one-line UserError naming `where`."""
    if value is None or isinstance(value, Quantization):
        return value
    if isinstance(value, str):
        if value not in NAMED:
            raise UserError(f"{where}: unknown quantization '{value}': choose from {', '.join(NAMED)} "
                            "or give a mapping (bits, quant_type, double_quant, compute_dtype)")
        return Quantization(**NAMED[value])
    if not isinstance(value, dict):
        raise UserError(f"{where} must be one of {', '.join(NAMED)} or a mapping "
                        f"(bits, quant_type, double_quant, compute_dtype), got {value!r}")
    fields = ("bits", "quant_type", "double_quant", "compute_dtype")
    if unknown := sorted(set(value) - set(fields)):
        raise UserError(f"{where}: unknown key(s) {unknown}; known: {', '.join(fields)}")
    setting = Quantization(**value)
    _check(setting, where)
    return setting


def _check(q: Quantization, where: str) -> None:
    if q.bits not in (4, 8) or isinstance(q.bits, bool):
        raise UserError(f"{where}.bits must be 4 or 8, got {q.bits!r}")
    if q.quant_type not in QUANT_TYPES:
        raise UserError(f"{where}.quant_type must be one of {', '.join(QUANT_TYPES)}, got {q.quant_type!r}")
    if not isinstance(q.double_quant, bool):
        raise UserError(f"{where}.double_quant must be true or false, got {q.double_quant!r}")
    if q.compute_dtype is not None and q.compute_dtype not in COMPUTE_DTYPES:
        raise UserError(f"{where}.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)} (or null: the "
                        f"model's dtype), got {q.compute_dtype!r}")


def require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError(f"a quantized base needs bitsandbytes, which is not installed: {_INSTALL}") from None


def bitsandbytes_config(q: Quantization, model_dtype: torch.dtype = torch.float32):
    """transformers.BitsAndBytesConfig for `q`; compute_dtype None computes in model_dtype."""
    from transformers import BitsAndBytesConfig

    require_bitsandbytes()
    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = COMPUTE_DTYPES[q.compute_dtype] if q.compute_dtype else model_dtype
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                              bnb_4bit_use_double_quant=q.double_quant, bnb_4bit_compute_dtype=compute)


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def protect_quantized_base(model):
    """Switch off bitsandbytes' CPU inference repack on every Linear4bit of `model` (see the module
    docstring); refuse a base whose weights were already repacked. Returns the model. A model
    without 4-bit layers is returned untouched."""
    if sys.modules.get("bitsandbytes") is None:
        return model  # no bitsandbytes layer exists before its module is imported: nothing to import here
    from bitsandbytes.nn import Linear4bit

    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, Linear4bit)]
    for name, layer in layers:
        if getattr(getattr(layer.weight, "quant_state", None), "packing_format_for_cpu", False):
            raise UserError(f"the 4-bit base was already run in eval mode without gradients ({name} was repacked "
                            "for CPU inference, which breaks training gradients and cannot be undone exactly): "
                            "reload the model and wrap it (get_peft_model / PeftModel.from_pretrained) before "
                            "any forward or generate")
    for _, layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return model


def prepare_for_training(model):
    """peft's prepare_model_for_kbit_training for a quantized base, as QLoRA users call it (freezes
    the base, casts its 16-bit norms and embeddings to float32); a float base is returned untouched.
    Activation checkpointing is left to the Trainer, which switches it on from the training arguments."""
    if not is_quantized(model):
        return model
    from peft import prepare_model_for_kbit_training

    protect_quantized_base(model)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
