"""Looking inside a DiffLoRA model: its lambdas and, on demand, its two attention maps."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from . import compat
from .tuner.layer import DiffLoRAAttention


def difflora_layers(model: nn.Module) -> list[DiffLoRAAttention]:
    """The transformed attention layers, in layer order."""
    layers = [m for m in model.modules() if isinstance(m, DiffLoRAAttention)]
    return sorted(layers, key=lambda m: m.layer_idx)


class LambdaSpread(float):
    """One layer's per-token lambda (lambda_mode "token") summarised over a batch. It is a float
    (the mean over tokens and heads), so code written for the scalar modes keeps working; `std`,
    `min` and `max` give the spread, `per_head` the mean of each head, `tokens` how many were counted."""

    std: float
    min: float
    max: float
    per_head: tuple[float, ...]
    tokens: int

    def __new__(cls, values: torch.Tensor):
        """values: (tokens, heads)."""
        values = values.detach().double()
        if not values.numel():
            raise ValueError("no tokens to summarise lambda over (is the attention mask all zeros?)")
        self = super().__new__(cls, float(values.mean()))
        self.std = float(values.std(correction=0))
        self.min, self.max = float(values.min()), float(values.max())
        self.per_head = tuple(float(v) for v in values.mean(0))
        self.tokens = values.shape[0]
        return self

    def __repr__(self) -> str:
        return (f"LambdaSpread(mean={float(self):.4f}, std={self.std:.4f}, min={self.min:.4f}, max={self.max:.4f}, "
                f"tokens={self.tokens})")


def lambdas(model: nn.Module, input_ids: torch.Tensor | None = None,
            attention_mask: torch.Tensor | None = None) -> list[float]:
    """The lambda of every transformed layer (active adapter), in layer order, as Python floats on
    the CPU (never tensors) whatever device the model is on; input_ids and attention_mask go to the
    model's device (devices.device_of(model)).

    Scalar modes ("fixed", "learned"): plain floats. Per-token mode ("token"): a LambdaSpread per
    layer (a float equal to the mean, with .std/.min/.max/.per_head) over the batch `input_ids`
    (non-padding tokens of `attention_mask`) when given, else over every position of the model's
    last forward (training batch, evaluation batch or decoding step)."""
    layers = difflora_layers(model)
    if input_ids is not None:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    keep = attention_mask.bool().reshape(-1).cpu() if input_ids is not None and attention_mask is not None else None
    out = []
    for layer in layers:
        adapter = layer._active()
        if layer.settings[adapter].lambda_mode != "token":
            with torch.no_grad():
                out.append(float(layer.current_lambda(adapter)))
            continue
        if layer.record.token_lambda is None:
            raise ValueError(f"layer {layer.layer_idx} has a per-token lambda and has run no forward yet: "
                             "pass a batch, difflora.lambdas(model, input_ids, attention_mask)")
        values = layer.record.token_lambda.float().cpu()
        values = values.reshape(-1, values.shape[-1])  # (batch * query, heads)
        out.append(LambdaSpread(values[keep] if keep is not None else values))
    return out


def attention_maps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   layers: list[int] | None = None) -> list[dict]:
    """For each transformed layer (in order; or only the layer indices in `layers`, which keeps
    memory down on long prompts): {"positive", "negative", "lambda", "layer"}.

    positive/negative are the two softmax maps (batch x heads x query x key, float32, not scaled
    by lambda) of exactly the forward model(input_ids, attention_mask=attention_mask); lambda is a
    scalar tensor, or batch x query x heads for a per-token lambda (row t of head h's negative map
    is scaled by lambda[:, t, h]). With shared keys both maps use K1. They are
    built only here, by running that forward once with the eager backend; the normal forward
    never builds them.

    Every tensor returned is float32 on the device the layer computed on (the model's device, so
    input_ids go there too: devices.device_of(model)); move them with .cpu() to plot or save.
    """
    _check_inputs(model, input_ids, attention_mask)
    wanted = layers
    layers = difflora_layers(model)
    if not layers:
        raise ValueError("attention_maps needs a model with DiffLoRA layers "
                         "(get_peft_model(model, DiffLoRAConfig(...)))")
    if wanted is not None:
        missing = set(wanted) - {m.layer_idx for m in layers}
        if missing:
            raise ValueError(f"layers {sorted(missing)} are not transformed by DiffLoRA "
                             f"(transformed: {[m.layer_idx for m in layers]})")
        layers = [m for m in layers if m.layer_idx in set(wanted)]
    with contextlib.ExitStack() as stack:
        records = [stack.enter_context(layer.record.keeping_maps()) for layer in layers]
        with compat.eager_attention(model), torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        maps = []
        for layer, record in zip(layers, records, strict=True):
            if record.maps is None:  # adapters disabled: nothing differential to show
                raise ValueError("attention_maps found no active DiffLoRA adapter (is it disabled?)")
            cap = record.maps
            maps.append({"positive": cap["positive"].float(), "negative": cap["negative"].float(),
                         "lambda": cap["lambda"], "layer": layer.layer_idx})
        return maps


def _check_inputs(model: nn.Module, input_ids, attention_mask) -> None:
    """A one-line ValueError for inputs the forward would reject with a raw torch error."""
    hint = "use tokenizer(text, return_tensors='pt').input_ids"
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"attention_maps: input_ids must be a tensor of token ids (batch x tokens), "
                         f"got a {type(input_ids).__name__}; {hint}")
    if input_ids.dim() != 2 or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"attention_maps: input_ids must be a 2-D integer tensor (batch x tokens), got shape "
                         f"{tuple(input_ids.shape)} and dtype {input_ids.dtype}; {hint}")
    vocab = model.get_input_embeddings().num_embeddings
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
        bad = int(input_ids.max()) if int(input_ids.max()) >= vocab else int(input_ids.min())
        raise ValueError(f"attention_maps: token id {bad} is outside the model's vocabulary (0..{vocab - 1}); "
                         "encode the text with this model's tokenizer")
    if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor)
                                       or attention_mask.shape != input_ids.shape):
        shape = (tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor)
                 else type(attention_mask).__name__)
        raise ValueError(f"attention_maps: attention_mask must be a tensor shaped like input_ids "
                         f"{tuple(input_ids.shape)}, got {shape}")
