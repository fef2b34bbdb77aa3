"""The training config: YAML (or a dict) with model / output_dir / method / data / training, plus
--set key=value overrides. Every unknown key or value is a one-line UserError."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from .. import compat
from ..devices import HALF_DTYPES
from ..errors import UserError
from ..loading import check_local_model_path
from ..textfiles import read_text
from .method_spec import MethodSpec
from .settings import TOP_LEVEL, check_settings

SECTIONS = ("method", "data", "training")
TOP_LEVEL_KEYS = (*TOP_LEVEL, *SECTIONS)  # the settings' table (train/settings.py) is the one list
# Sections whose string values that read as numbers are numbers (paths and names elsewhere stay strings).
NUMERIC_SECTIONS = ("method", "training")
PLACEMENT_KEYS = ("use_cpu",)  # training settings that say where a run trains, not what it trains (--device)


@dataclass
class DataConfig:
    train: str | None = None
    eval: str | None = None
    max_length: int = 4096
    packing: bool = False
    skip_bad_rows: bool = False
    eval_fraction: float = 0.0  # held out from train when no eval set is given
    max_examples: int | None = None


@dataclass
class TrainConfig:
    model: str
    output_dir: str
    method: MethodSpec = field(default_factory=MethodSpec.default)
    data: DataConfig = field(default_factory=DataConfig)
    training: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    dtype: str = "auto"  # auto: bf16 weights when training.bf16, else float32
    attn_implementation: str | None = None  # None: see attention_backend
    # a PEFT adapter folder of the same method whose weights the adapters start from (e.g. the
    # weights a DiffoRA search learned: `difflora select` writes this key); None: the usual init
    init_from: str | None = None
    # the base's weights in 4 or 8 bits (QLoRA): nf4, fp4, int8 or a mapping (difflora.quantization); None: as saved
    quantization: str | dict | None = None

    @property
    def weights_dtype(self) -> str:
        """The dtype the base loads in: `dtype`, where auto means bf16 when training.bf16, else float32."""
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if self.training.get("bf16") else "float32"

    @property
    def device(self) -> str:
        """Where the model trains: "cpu" with training.use_cpu (`--device cpu`) or without CUDA, else
        "cuda" (Trainer puts each process on its own GPU)."""
        return "cpu" if self.training.get("use_cpu") or not torch.cuda.is_available() else "cuda"

    @property
    def attention_backend(self) -> str | None:
        """The attention backend the base loads with: `attn_implementation`, else default_attention."""
        return self.attn_implementation or default_attention(self.device, self.weights_dtype)

    @property
    def tokenizer_source(self) -> tuple[str, str]:
        """Where the tokenizer comes from, and what errors call that place (tokenizer or model)."""
        return (self.tokenizer, "tokenizer") if self.tokenizer else (self.model, "model")

    def to_dict(self) -> dict:
        """The config as its YAML file holds it (the method as its `method:` section)."""
        return {**dataclasses.asdict(self), "method": self.method.as_dict()}


def default_attention(device: str, dtype: str) -> str | None:
    """flash_attention_2 where it runs: the flash_attn package installed, a CUDA device and bf16/fp16
    weights; else None, transformers' own default (sdpa, or eager for a family without sdpa)."""
    fast = device == "cuda" and dtype in HALF_DTYPES and flash_attn_installed()
    return "flash_attention_2" if fast else None


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def load_train_config(source: str | os.PathLike | dict, overrides: list[str] | None = None) -> TrainConfig:
    """A TrainConfig from a YAML path or a dict, with `a.b=value` overrides (values parsed as YAML).
    In a dict, `method` may be a MethodSpec already."""
    raw = _read(source)
    if isinstance(raw.get("method"), MethodSpec) and any(o.strip().startswith("method.") for o in overrides or ()):
        raw["method"] = raw["method"].as_dict()  # overridden key by key, then parsed again
    for item in overrides or []:
        _apply_override(raw, item)
    for section in NUMERIC_SECTIONS:
        if isinstance(raw.get(section), dict):
            raw[section] = _coerce_numbers(raw[section])
    return _build(raw, where=str(source) if not isinstance(source, dict) else "config")


def _read(source) -> dict:
    if isinstance(source, dict):
        return copy.deepcopy(source)
    return read_yaml_config(os.fspath(source))


def read_yaml_config(path: str) -> dict:
    """A YAML config file as a dict; a missing, non-UTF-8 or malformed file is a one-line UserError
    naming the file and, for a syntax error, the line and column."""
    if os.path.isdir(path):
        raise UserError(f"config file '{path}' is a folder; give a YAML file")
    if not os.path.isfile(path):
        raise UserError(f"config file '{path}' does not exist")
    try:
        raw = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        what = ": ".join(filter(None, [getattr(exc, "context", None), getattr(exc, "problem", None)]))
        raise UserError(f"{where}: not valid YAML ({what or str(exc).splitlines()[0]}); "
                        "fix the config file there") from None
    if not isinstance(raw, dict):
        raise UserError(f"config file '{path}' must hold a mapping (model:, output_dir:, method:, data:, training:)")
    return raw


def _coerce_numbers(node):
    """YAML 1.1 reads 1e-4 (no dot) as a string; every config value that reads as a number is one."""
    if isinstance(node, dict):
        return {k: _coerce_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_coerce_numbers(v) for v in node]
    if isinstance(node, str):
        try:
            return float(node) if any(c in node.lower() for c in ".e") else int(node)
        except ValueError:
            return node
    return node


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise UserError(f"--set expects key=value (e.g. training.learning_rate=2e-4), got '{item}'")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else None


def _build(raw: dict, where: str) -> TrainConfig:
    unknown = set(raw) - set(TOP_LEVEL_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown config key(s) {sorted(unknown)}; known keys are {', '.join(TOP_LEVEL_KEYS)}")
    for key in ("model", "output_dir"):
        if not raw.get(key):
            raise UserError(f"{where}: '{key}' is required")
    for section in SECTIONS:
        if raw.get(section) is not None and not isinstance(raw[section], (dict, MethodSpec)):
            raise UserError(f"{where}: '{section}' must be a mapping of keys (e.g. {section}:\n  key: value), "
                            f"got {raw[section]!r}")
    data = raw.get("data") or {}
    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    if unknown := set(data) - data_fields:
        raise UserError(f"{where}: unknown data key(s) {sorted(unknown)}; known: {', '.join(sorted(data_fields))}")
    if not data.get("train"):
        raise UserError(f"{where}: data.train is required: a chat JSONL file, a folder of them, or a datasets name")
    check_training_keys(dict(raw.get("training") or {}), where)
    check_settings(raw, where)  # types and ranges of every setting (train/settings.py)
    data = DataConfig(**data)
    for key, what in (("model", "model"), ("tokenizer", "tokenizer")):
        if raw.get(key):
            check_local_model_path(str(raw[key]), what)
    method = raw.get("method") or None
    method = method if isinstance(method, MethodSpec) else MethodSpec.parse(method, where)
    settings = {key: raw[key] for key in TOP_LEVEL if raw.get(key) is not None}  # null: TrainConfig's default
    settings["init_from"] = _check_init_from(settings.get("init_from"), method, where)
    settings["quantization"] = _check_quantization(settings.get("quantization"), method, where)
    return TrainConfig(**settings, method=method, data=data, training=dict(raw.get("training") or {}))


def _check_quantization(value, method: MethodSpec, where: str):
    """The quantization setting as written (its value checked with the other settings, built when the
    model loads); a quantized base trains adapters only."""
    if value is not None and method.type == "full":
        raise UserError(f"{where}: a quantized base cannot be fully fine-tuned (its 4/8-bit weights do not train); "
                        "use method type difflora or lora, or remove quantization")
    return value


def _check_init_from(path, method: MethodSpec, where: str) -> str | None:
    if path is None:
        return None
    if method.type == "full":
        raise UserError(f"{where}: init_from starts adapters from saved weights; full fine-tuning has no adapters "
                        "(give the saved model as model: instead)")
    if not os.path.isfile(os.path.join(str(path), "adapter_config.json")):
        raise UserError(f"{where}: init_from '{path}' is not a PEFT adapter folder (no adapter_config.json in it)")
    return str(path)


def check_training_keys(training: dict, where: str = "config") -> None:
    if unknown := set(training) - compat.training_argument_names():
        raise UserError(f"{where}: unknown training key(s) {sorted(unknown)} "
                        "(training: takes transformers.TrainingArguments fields)")
