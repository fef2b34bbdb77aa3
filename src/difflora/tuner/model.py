"""DiffLoRAModel: the PEFT tuner that injects DiffLoRAAttention into a Llama-family model."""

from __future__ import annotations

import re

from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from .. import compat
from ..quantization import protect_quantized_base
from .config import DiffLoRAConfig
from .layer import DiffLoRAAttention

_ATTENTION_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn$")


class MergeNotSupportedError(RuntimeError):
    """Raised by merge_and_unload: differential attention has no plain-model equivalent."""


class DiffLoRAModel(BaseTuner):
    prefix: str = "difflora_"
    tuner_layer_cls = DiffLoRAAttention
    target_module_mapping: dict = {}

    # ------------------------------------------------------------------------------------------
    # injection
    def _prepare_adapter_config(self, peft_config: DiffLoRAConfig, model_config: dict) -> DiffLoRAConfig:
        family = compat.family_of(compat.model_type_of(self.model))
        compat.check_model_attention(self.model, family)
        protect_quantized_base(self.model)  # before any forward: a 4-bit base must keep exact gradients
        shape = compat.base_shape(self.model.config)
        if peft_config.base_shape is None:
            peft_config.base_shape = shape
        elif peft_config.base_shape != shape:
            diff = {k: (peft_config.base_shape.get(k), v) for k, v in shape.items()
                    if peft_config.base_shape.get(k) != v}
            raise ValueError(
                "this DiffLoRA adapter was made for another base model: "
                + ", ".join(f"{k} adapter={a} base={b}" for k, (a, b) in diff.items())
                + ". Load it onto the base model it was trained on."
            )
        layers = peft_config.layers_to_transform
        if layers is not None and max(layers) >= shape["num_hidden_layers"]:
            raise ValueError(
                f"layers_to_transform {layers} names a layer the model does not have "
                f"(it has {shape['num_hidden_layers']} layers, 0..{shape['num_hidden_layers'] - 1})"
            )
        self._family = family
        return peft_config

    def _check_target_module_exists(self, peft_config: DiffLoRAConfig, key: str) -> bool:
        match = _ATTENTION_KEY.search(key)
        if match is None:
            return False
        if peft_config.layers_to_transform is not None and int(match.group(1)) not in peft_config.layers_to_transform:
            return False
        module = self.model.get_submodule(key)
        if isinstance(module, DiffLoRAAttention):
            return True
        return isinstance(module, compat.attention_class(self._family))

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kw):
        if isinstance(target, DiffLoRAAttention):
            target.update_layer(adapter_name, peft_config)
            return
        new_module = DiffLoRAAttention(target, adapter_name, peft_config, self._family)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        setattr(parent, target_name, new_module)

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        super()._mark_only_adapters_as_trainable(model)
        # modules_to_save aside, only the active adapter trains
        for module in model.modules():
            if isinstance(module, DiffLoRAAttention):
                module.set_adapter(module.active_adapters)

    # ------------------------------------------------------------------------------------------
    # merging and unloading
    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        if merge:
            raise MergeNotSupportedError(
                "merge_and_unload() cannot turn DiffLoRA into a plain model: the negative attention map "
                "softmax(Q2 K2^T) is a second attention computation, not a weight update. Keep the PeftModel, "
                "or fold only the positive adapters into W_Q/W_K with difflora.merge_positive_adapters(model)."
            )
        for name, module in list(self.model.named_modules()):
            if isinstance(module, DiffLoRAAttention):
                parent = self.model.get_submodule(name.rsplit(".", 1)[0])
                setattr(parent, name.rsplit(".", 1)[1], module.base_layer)
        return self.model

    def merge_adapter(self, adapter_names=None, safe_merge: bool = False) -> None:
        self._unload_and_optionally_merge(merge=True)

    def merge_positive_adapters(self, adapter_name: str | None = None) -> None:
        """Fold the positive LoRA (Q1/K1) into W_Q/W_K in place; the differential part stays."""
        for module in self.model.modules():
            if isinstance(module, DiffLoRAAttention):
                module.merge_positive(adapter_name or module.active_adapters[0])

    def unmerge_positive_adapters(self, adapter_name: str | None = None) -> None:
        for module in self.model.modules():
            if isinstance(module, DiffLoRAAttention):
                module.unmerge_positive(adapter_name or module.active_adapters[0])

    def _check_merge_allowed(self):
        raise MergeNotSupportedError("DiffLoRA adapters cannot be merged into a plain model (see merge_and_unload).")
