"""Looking inside a DiffLoRA model: its lambdas and, on demand, its two attention maps."""

from __future__ import annotations

import torch
from torch import nn

from . import compat
from .tuner.layer import DiffLoRAAttention


def difflora_layers(model: nn.Module) -> list[DiffLoRAAttention]:
    """The transformed attention layers, in layer order."""
    layers = [m for m in model.modules() if isinstance(m, DiffLoRAAttention)]
    return sorted(layers, key=lambda m: m.layer_idx)


def lambdas(model: nn.Module) -> list[float]:
    """The current lambda of every transformed layer (active adapter), in layer order."""
    out = []
    for layer in difflora_layers(model):
        adapter = layer._active()
        with torch.no_grad():
            out.append(float(layer.current_lambda(adapter)))
    return out


def attention_maps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   layers: list[int] | None = None) -> list[dict]:
    """For each transformed layer (in order; or only the layer indices in `layers`, which keeps
    memory down on long prompts): {"positive", "negative", "lambda", "layer"}.

    positive/negative are the two softmax maps (batch x heads x query x key, float32, not scaled
    by lambda) of exactly the forward model(input_ids, attention_mask=attention_mask). They are
    built only here, by running that forward once with the eager backend; the normal forward
    never builds them.
    """
    wanted = layers
    layers = difflora_layers(model)
    if not layers:
        raise ValueError("attention_maps needs a model with DiffLoRA layers (get_peft_model(model, DiffLoRAConfig(...)))")
    if wanted is not None:
        missing = set(wanted) - {m.layer_idx for m in layers}
        if missing:
            raise ValueError(f"layers {sorted(missing)} are not transformed by DiffLoRA "
                             f"(transformed: {[m.layer_idx for m in layers]})")
        layers = [m for m in layers if m.layer_idx in set(wanted)]
    for layer in layers:
        layer.capture_maps, layer.captured = True, None
    try:
        with compat.eager_attention(model), torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        maps = []
        for layer in layers:
            if layer.captured is None:  # adapters disabled: nothing differential to show
                raise ValueError("attention_maps found no active DiffLoRA adapter (is it disabled?)")
            cap = layer.captured
            maps.append({"positive": cap["positive"].float(), "negative": cap["negative"].float(),
                         "lambda": cap["lambda"], "layer": layer.layer_idx})
        return maps
    finally:
        for layer in layers:
            layer.capture_maps, layer.captured = False, None
