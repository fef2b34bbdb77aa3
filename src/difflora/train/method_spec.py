"""MethodSpec: the `method:` section of a training config, parsed once and checked, with the PEFT
config it describes built once.

    method:                          MethodSpec.parse(section)
      type: difflora                 .type     difflora | lora | full
      preset: difflora-64            .preset   a DiffLoRA preset, lora-8, or None
      r: 32                          .options  every other key: fields of DiffLoRAConfig / LoraConfig

Training, selection and the demo take a MethodSpec; `as_dict()` gives the section back as a config
file writes it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from ..errors import UserError

METHOD_TYPES = ("difflora", "lora", "full")

# The paper's baseline (FullLoRA): r=8 on every linear module of the decoder layers.
LORA_8 = dict(r=8, lora_alpha=16, lora_dropout=0.0,
              target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

# The method of each type when a config names no preset of its own: the `method:` section a config
# without one gets (difflora), and the one `difflora select --method lora` starts from.
DEFAULT_PRESETS = {"difflora": "difflora-64-fixed", "lora": "lora-8"}
DEFAULT_TYPE = "difflora"


@dataclass(frozen=True)
class MethodSpec:
    type: str = DEFAULT_TYPE
    preset: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # the PEFT config's fields set in the section
    where: InitVar[str] = "config"  # what an error message names (the config file)

    def __post_init__(self, where: str) -> None:
        object.__setattr__(self, "options", dict(self.options))  # its own copy: the caller's may change
        self._check(where)

    @classmethod
    def parse(cls, section: Mapping | None, where: str = "config") -> MethodSpec:
        """The spec of a `method:` section (None: the default method); an unknown type, preset or
        key, or a value the PEFT config refuses, is a one-line UserError naming it."""
        if section is None:
            return cls.default()
        if not isinstance(section, Mapping):
            raise UserError(f"{where}: 'method' must be a mapping of keys (type:, preset: and the PEFT "
                            f"config's fields), got {section!r}")
        section = dict(section)
        kind = section.pop("type", DEFAULT_TYPE)
        preset = section.pop("preset", None)
        return cls(kind, preset, section, where)

    @classmethod
    def default(cls, kind: str = DEFAULT_TYPE) -> MethodSpec:
        """The method a config gets for this type when it names none (difflora-64-fixed, lora-8)."""
        return cls.parse({"type": kind, "preset": DEFAULT_PRESETS[kind]})

    # -- what the spec describes -------------------------------------------------------------------

    @property
    def label(self) -> str:
        """The name results are reported under: the preset, lora-8 for LoRA's defaults, else the type."""
        return self.preset or ("lora-8" if self.type == "lora" else self.type)

    def as_dict(self) -> dict:
        """The `method:` section as a config file holds it."""
        named = {"type": self.type, **({"preset": self.preset} if self.preset else {})}
        return {**named, **copy.deepcopy(dict(self.options))}

    def peft_config(self):
        """The PEFT config to build the model with (None for full fine-tuning): a fresh copy of the
        one checked when the spec was parsed, since get_peft_model writes into its config."""
        return copy.deepcopy(self._built)

    def lora_fields(self) -> dict:
        """A LoRA spec's options with lora-8's defaults written out (what its LoraConfig gets)."""
        return {**LORA_8, **copy.deepcopy(dict(self.options))}

    # -- derived specs -------------------------------------------------------------------------------

    def replace(self, drop: tuple[str, ...] = (), **options) -> MethodSpec:
        """A checked spec of the same type and preset: these options set, the `drop` keys removed."""
        kept = {k: v for k, v in self.options.items() if k not in drop}
        return MethodSpec(self.type, self.preset, {**copy.deepcopy(kept), **options})

    # -- checking ---------------------------------------------------------------------------------

    def _check(self, where: str) -> None:
        if self.type not in METHOD_TYPES:
            raise UserError(f"{where}: method.type must be one of {', '.join(METHOD_TYPES)}, "
                            f"got '{self.type}'")
        allowed = self._allowed_keys(where)
        if unknown := set(self.options) - allowed:
            raise UserError(f"{where}: unknown method key(s) {sorted(unknown)} for method type '{self.type}'")
        # built now, so a bad value (r: -1, lambda_mode: sometimes) fails before any loading
        try:
            built = self._build()
        except (ValueError, TypeError) as exc:
            raise UserError(f"{where}: invalid method settings: {str(exc).splitlines()[0]}") from exc
        object.__setattr__(self, "_built", built)

    def _allowed_keys(self, where: str) -> set[str]:
        if self.type == "difflora":
            from ..tuner.config import PRESETS, DiffLoRAConfig

            if self.preset is not None and self.preset not in PRESETS:
                raise UserError(f"{where}: unknown DiffLoRA preset '{self.preset}'; known presets are "
                                f"{', '.join(PRESETS)}")
            return {f.name for f in dataclasses.fields(DiffLoRAConfig)}
        if self.type == "lora":
            from peft import LoraConfig

            if self.preset not in (None, "lora-8"):
                raise UserError(f"{where}: the only LoRA preset is 'lora-8', got '{self.preset}'")
            return {f.name for f in dataclasses.fields(LoraConfig)}
        return set()

    def _build(self):
        if self.type == "difflora":
            from ..tuner.config import DiffLoRAConfig

            options = copy.deepcopy(dict(self.options))
            if self.preset:
                return DiffLoRAConfig.from_preset(self.preset, **options)
            return DiffLoRAConfig(**options)
        if self.type == "lora":
            from peft import LoraConfig

            return LoraConfig(**self.lora_fields(), task_type="CAUSAL_LM")
        return None
