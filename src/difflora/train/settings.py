"""What every setting of a training config may hold: one table per section, checked before any model or
data is loaded (train/config.py calls check_settings).

To declare a new setting, add one line to the table of its section: the key and its kind from
difflora.validation (Whole, Real, Flag, Text, Choice, OutputFolder, ...). A key of `training:` that
is not listed here still gets a type check from transformers.TrainingArguments' annotation
(int, float or bool, optionally None); list it here to give it a range as well.

TOP_LEVEL is the one list of a config's top-level settings: train/config.py derives the keys it knows
from it (beside the sections method, data and training) and builds a TrainConfig from them, so a new
top-level setting is a line here and a field of TrainConfig (tests/train/test_config.py checks that
the two agree).
"""

from __future__ import annotations

import dataclasses
import functools
import typing

from ..devices import DTYPES
from ..quantization import parse_quantization
from ..validation import Choice, Flag, Kind, OutputFolder, Real, Text, Whole


class QuantizationSetting(Kind):
    """A quantized base: nf4, fp4, int8 or a mapping of difflora.quantization's fields (or null)."""

    nullable = True

    def allowed(self) -> str:
        return "nf4, fp4, int8 or a mapping (bits, quant_type, double_quant, compute_dtype), or null"

    def check(self, value, name: str | None):
        parse_quantization(value, name or "quantization")  # its own one-line messages, naming the setting
        return value


TOP_LEVEL: dict[str, Kind] = {
    "model": Text(),
    "tokenizer": Text(nullable=True),
    "output_dir": OutputFolder(),
    "dtype": Choice(DTYPES, nullable=True),
    "attn_implementation": Text(nullable=True),  # null: TrainConfig.attention_backend chooses (flash-attn or sdpa)
    "init_from": Text(nullable=True),
    "quantization": QuantizationSetting(),  # kept as written; built when the model loads
}

DATA: dict[str, Kind] = {
    "train": Text(),
    "eval": Text(nullable=True),
    "max_length": Whole(minimum=2),
    "packing": Flag(),
    "skip_bad_rows": Flag(),
    "eval_fraction": Real(minimum=0, below=1),
    "max_examples": Whole(minimum=1, nullable=True),
}

_STEPS = Real(above=0)  # a float below 1 is a fraction of the run's steps
TRAINING: dict[str, Kind] = {
    "learning_rate": Real(minimum=0),  # 0 is allowed: it keeps the weights (e.g. to check init_from)
    "num_train_epochs": Real(above=0),
    "max_steps": Whole(minimum=1, also=(-1,), note="train for num_train_epochs"),
    "per_device_train_batch_size": Whole(minimum=1),
    "per_device_eval_batch_size": Whole(minimum=1),
    "gradient_accumulation_steps": Whole(minimum=1),
    "warmup_steps": Real(minimum=0),
    "warmup_ratio": Real(minimum=0, maximum=1),
    "weight_decay": Real(minimum=0),
    "max_grad_norm": Real(minimum=0),
    "adam_beta1": Real(minimum=0, below=1),
    "adam_beta2": Real(minimum=0, below=1),
    "adam_epsilon": Real(above=0),
    "logging_steps": _STEPS,
    "save_steps": _STEPS,
    "eval_steps": Real(above=0, nullable=True),
    "save_total_limit": Whole(minimum=1, nullable=True),
    "seed": Whole(minimum=0),
    "data_seed": Whole(minimum=0, nullable=True),
    "dataloader_num_workers": Whole(minimum=0),
}


def check_settings(raw: dict, where: str) -> None:
    """Every known setting of a raw config (after --set overrides) against its kind: a one-line
    UserError naming the first bad one, its value and what it allows."""
    _check_section(raw, TOP_LEVEL, "", where)
    for section, table in (("data", DATA), ("training", {**_annotated_training(), **TRAINING})):
        if isinstance(raw.get(section), dict):
            _check_section(raw[section], table, section + ".", where)


def _check_section(values: dict, table: dict[str, Kind], prefix: str, where: str) -> None:
    for key, kind in table.items():
        if key in values:
            kind.check(values[key], f"{where}: {prefix}{key}")


# str fields are left out: several take other types too (fsdp: true, a list of options)
_SIMPLE = {int: Whole, float: Real, bool: Flag}


@functools.cache
def _annotated_training() -> dict[str, Kind]:
    """A type check for each TrainingArguments field whose annotation is a plain int, float or bool
    (or one of these | None); other fields are checked by TrainingArguments itself."""
    from transformers import TrainingArguments

    try:
        hints = typing.get_type_hints(TrainingArguments)
    except Exception:  # an annotation this Python cannot resolve: keep the explicit table only
        return {}
    out = {}
    for f in dataclasses.fields(TrainingArguments):
        args = set(typing.get_args(hints.get(f.name))) or {hints.get(f.name)}
        nullable = type(None) in args
        args.discard(type(None))
        if len(args) == 1 and (kind := _SIMPLE.get(args.pop())):
            out[f.name] = kind(nullable=nullable)
    return out
