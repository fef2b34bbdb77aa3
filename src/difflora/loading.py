"""Loading models: a real checkpoint from a path or the hub, an adapter on top of it, and the
models of a command's --model options (labelled specs); tiny models built from config for tests and
benchmarks are difflora.testing's (TINY_SHAPES and tiny_model, importable from here too).

Every command that takes "a model" takes a spec string:
    BASE                      a base model (local folder, hub id, or a fetched real base's name: real_bases.py)
    BASE::ADAPTER_DIR         a PEFT adapter (DiffLoRA or LoRA) on that base
    ADAPTER_DIR               an adapter folder alone; its adapter_config.json names the base
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from . import compat, real_bases
from .devices import torch_dtype
from .errors import UserError
from .quantization import bitsandbytes_config, parse_quantization, protect_quantized_base
from .testing import TINY_SHAPES, tiny_model  # noqa: F401  (their former home: importable from here)


@dataclass
class ModelSpec:
    base: str
    adapter: str | None = None

    @property
    def label(self) -> str:
        return Path(self.adapter).name if self.adapter else Path(self.base).name


def parse_model_spec(spec: str) -> ModelSpec:
    """BASE, BASE::ADAPTER or ADAPTER (see module docstring)."""
    if "::" in spec:
        base, adapter = spec.split("::", 1)
        _check_adapter_dir(adapter)
        return ModelSpec(base, adapter)
    if os.path.isfile(os.path.join(spec, "adapter_config.json")):
        return ModelSpec(adapter_base(spec, f"pass BASE::{spec}"), spec)
    return ModelSpec(spec)


def adapter_base(folder: str, what_to_do: str) -> str:
    """The base model an adapter folder's adapter_config.json names (base_model_name_or_path, which
    save_pretrained writes); one that names none is a UserError ending with what_to_do."""
    base = read_adapter_config(folder).get("base_model_name_or_path")
    if not base:
        raise UserError(f"adapter '{folder}' does not name its base model: {what_to_do}")
    return str(base)


def _check_adapter_dir(path: str) -> None:
    if not os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise UserError(f"no adapter at '{path}': expected a folder with adapter_config.json (from save_pretrained)")
    read_adapter_config(path)


def read_adapter_config(folder: str) -> dict:
    """adapter_config.json of an adapter folder; a corrupt one is a one-line error naming the file and line."""
    path = os.path.join(folder, "adapter_config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno}); "
                        "save the adapter again (save_pretrained)") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save the adapter again (save_pretrained)") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} must hold a JSON object; save the adapter again (save_pretrained)")
    return config


# A hub id is "name" or "namespace/name" of these characters.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_local(name: str) -> bool:
    """Whether a model string is meant as a local path: it starts like one (./ ../ / ~), has more
    than one folder level, is not hub-id shaped, or its first part is an existing local folder
    (runs/nope when runs/ exists): such a string is never looked up on the hub."""
    if name.startswith(("./", "../", "/", "~", ".\\")) or (os.sep != "/" and os.sep in name):
        return True
    if not _HUB_ID.match(name):
        return True
    head = name.split("/", 1)[0]
    return "/" in name and os.path.isdir(head)


def check_local_model_path(name: str, what: str = "base model") -> str:
    """Refuse at once (no hub retries) a model string that is clearly a path but names no folder.
    Returns where the model is: a registered real base's name (difflora.real_bases) gives its fetched
    folder (an unfetched one is a UserError naming the fetch command), any other string itself."""
    name = real_bases.resolve(name)
    if os.path.isdir(name):
        return name
    if os.path.exists(name):
        raise UserError(f"{what} '{name}' is a file, not a model folder (config.json + weights + tokenizer)")
    if looks_local(name):
        raise UserError(f"{what} '{name}' is neither a local folder (nothing is at that path) nor a hub id; "
                        "check the path")
    return name


def check_model_source(name: str, what: str = "base model") -> str:
    """check_local_model_path (returns where the model is), and a hub id is refused at once when the hub
    is offline (else it is left to from_pretrained)."""
    name = check_local_model_path(name, what)
    if not os.path.isdir(name) and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"{what} '{name}' is not a local folder and the hub is offline (HF_HUB_OFFLINE=1)")
    return name


def load_base(name_or_path: str, *, dtype: str | torch.dtype = "auto", attn_implementation: str | None = None,
              device: str | None = None, quantization=None):
    """A causal LM and its tokenizer from a local folder or the hub (when the hub is reachable);
    quantization (a difflora.quantization setting: nf4, fp4, int8 or a mapping) loads the base
    weights in 4 or 8 bits with bitsandbytes."""
    name_or_path = check_model_source(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as exc:
        why = ("the folder has no usable config.json" if os.path.isdir(name_or_path)
               else "it is neither a local folder nor reachable on the hub")
        raise UserError(f"cannot load base model '{name_or_path}': {why} ({exc.__class__.__name__})") from exc
    except ValueError as exc:  # a corrupt config.json
        raise UserError(f"cannot load base model '{name_or_path}': {str(exc).splitlines()[0][:200]}") from exc
    kwargs = {"dtype": torch_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:
        kwargs.update(_quantized_loading(quantization, kwargs["dtype"], device))
        device = None  # placed by device_map: a quantized model cannot be moved afterwards
    model = AutoModelForCausalLM.from_pretrained(name_or_path, config=config, **kwargs)
    protect_quantized_base(model)  # before any forward: see difflora.quantization
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise UserError(f"no usable tokenizer in '{name_or_path}' ({str(exc).splitlines()[0][:120]}); "
                        "save the tokenizer beside the model (tokenizer.save_pretrained)") from exc
    ensure_pad_token(tokenizer)
    if device:
        model.to(device)
    return model.eval(), tokenizer


def load_chat_tokenizer(source: str, what: str = "model"):
    """The tokenizer of a model folder (or hub id) for chat fine-tuning: it must have a chat template,
    and gets a pad token when it has none. `what` names the source in errors (model or tokenizer)."""
    source = check_model_source(source, what)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        if not os.path.isdir(source):  # a hub id that did not load: say so, not what the tokenizer lacks
            raise UserError(f"'{source}' is neither a local folder nor reachable on the hub "
                            f"({type(exc).__name__}); give a model folder or a hub id") from exc
        raise UserError(f"cannot load a tokenizer from '{source}' ({str(exc).splitlines()[0][:160]}); "
                        "give a model folder with its tokenizer, or tokenizer: PATH") from exc
    if tokenizer.chat_template is None:
        raise UserError(f"the tokenizer of '{source}' has no chat template; give one with "
                        "tokenizer: PATH (a tokenizer folder whose tokenizer_config.json has chat_template)")
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer):
    """Batches need a pad token: a tokenizer without one pads with its end-of-sequence token (the
    padded positions are masked out of attention and loss)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: str | ModelSpec, **base_kwargs):
    """Base model, optionally with a PEFT adapter (DiffLoRA or LoRA) loaded on top; returns (model, tokenizer)."""
    from peft import PeftModel

    import difflora  # noqa: F401  (registers DIFFLORA with PEFT)

    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    model, tokenizer = load_base(spec.base, **base_kwargs)
    if spec.adapter:
        _check_adapter_dir(spec.adapter)
        with compat.quiet_peft_deprecations():
            model = PeftModel.from_pretrained(model, spec.adapter).eval()
        if os.path.isfile(os.path.join(spec.adapter, "tokenizer_config.json")):
            tokenizer = AutoTokenizer.from_pretrained(spec.adapter)
    return model, tokenizer


def _quantized_loading(quantization, dtype, device: str | None) -> dict:
    """from_pretrained arguments for a quantized base: its BitsAndBytesConfig and a device_map (this
    process's GPU, or the CPU)."""
    setting = parse_quantization(quantization)
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    model_dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32
    return {"quantization_config": bitsandbytes_config(setting, model_dtype), "device_map": {"": device}}


# --------------------------------------------------------------------------------------------
# The models of a command's --model options: NAME=SPEC gives a model its label in tables and plots.

_LABELLED = re.compile(r"^([A-Za-z0-9_.+-]+)=(.+)$")


def split_label(spec: str) -> tuple[str | None, str]:
    """"NAME=SPEC" -> (NAME, SPEC); a plain SPEC (or a path that exists, '=' and all) -> (None, SPEC)."""
    match = _LABELLED.match(spec)
    if match and not os.path.exists(spec):
        return match.group(1), match.group(2)
    return None, spec


def load_models(specs: list[str], settings, quantization: str | None = None) -> dict:
    """{label: (model, tokenizer)} for model specs (optionally NAME=SPEC), each labelled by its NAME or
    its folder's name (a repeated label gets a prime). settings: an EvalSettings (device, dtype,
    show_progress); device None is cuda when available. An adapter made for another base is a
    one-line UserError."""
    from rich.console import Console

    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    console = Console(stderr=True, quiet=not settings.show_progress)
    models = {}
    for raw in specs:
        name, spec = split_label(raw)
        parsed = parse_model_spec(spec)
        label = name or parsed.label
        while label in models:
            label += "'"
        console.print(f"loading {label} ({spec})")
        try:
            models[label] = load_model(parsed, dtype=settings.dtype, device=device, quantization=quantization)
        except RuntimeError as exc:  # PEFT's state-dict shape mismatch for a LoRA made on another base
            if "size mismatch" not in str(exc):
                raise
            raise UserError(f"adapter '{parsed.adapter}' does not fit base '{parsed.base}' (weight shapes differ): "
                            "it was made for another base model") from None
    return models
