"""How every command declares its options, so that each one is checked and documented.

- `Parser`: argparse with one-line errors (an unknown option, a missing argument: exit code 2) and
  help that shows every option's default. A bad value is a one-line UserError from check_options
  ("difflora demo: error: --samples must be an integer >= 1, got 0", exit code 1).
- `kind(K)`: an argparse type made from a difflora.validation kind (defined there, so that the
  evaluation tasks can declare their options too); `check_options` (run by main right after
  parsing) checks every value (type, range, path) before any model or data is loaded.
- `ModelArgument()`: a --model / model argument, checked (adapter folder, adapter_config.json, a
  path that does not exist) without loading anything; what it names loads as a loading.ModelSpec.

tests/cli/test_options.py walks every command and fails for an option without help, or without a
kind or choices (a plain `type=int` or a free string is not checked).
"""

from __future__ import annotations

import argparse

from ..errors import UserError
from ..validation import Kind, kind


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: ...)" to an option's help unless the help already says its default; a flag
    (default off) and a default of None (the help says what happens then) get nothing added."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is False or default == argparse.SUPPRESS
                or not action.option_strings
                or isinstance(action, argparse._HelpAction)):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check every option of the command that was parsed against its kind (a one-line UserError
    naming the option for the first bad value); values a kind normalises are replaced."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                check_options(action.choices[chosen], args)
            continue
        k = getattr(action.type, "kind", None)
        value = getattr(args, action.dest, None)
        if k is None or value is None:
            continue
        name = max(action.option_strings, key=len) if action.option_strings else action.dest
        if isinstance(value, list):
            setattr(args, action.dest, [k.check(v, name) for v in value])
        else:
            setattr(args, action.dest, k.check(value, name))


class ModelArgument(Kind):
    """A model spec (BASE, BASE::ADAPTER, ADAPTER_DIR, with labels: NAME=SPEC): its adapter folder
    and adapter_config.json are read, and a base that is plainly a missing path is refused; hub
    ids are left to loading (where HF_HUB_OFFLINE=1 refuses them at once)."""

    def __init__(self, labelled: bool = False):
        self.labelled = labelled

    def allowed(self) -> str:
        return "BASE, BASE::ADAPTER or ADAPTER_DIR" + (", optionally NAME=SPEC" if self.labelled else "")

    def check(self, value, name):
        from ..loading import check_model_source, parse_model_spec, split_label

        spec = split_label(value)[1] if self.labelled else value
        parsed = parse_model_spec(spec)
        check_model_source(parsed.base, "base model" if parsed.adapter else "model")
        return value


ModelSpec = ModelArgument  # its former name (loading.ModelSpec is the parsed spec itself)


def model_spec(labelled: bool = False):
    return kind(ModelArgument(labelled))


class KeyValue(Kind):
    """A config override: section.key=value (the value is read as YAML)."""

    def allowed(self) -> str:
        return "KEY=VALUE, e.g. training.learning_rate=2e-4"

    def check(self, value, name):
        key, sep, _ = value.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{name} must be {self.allowed()}, got '{value}'")
        return value


class Device(Kind):
    """A torch device name (cpu, cuda, cuda:1, mps); a GPU that is not there is refused."""

    def allowed(self) -> str:
        return "a device: cpu, cuda, cuda:N or mps"

    def check(self, value, name):
        import torch

        try:
            device = torch.device(value)
        except (RuntimeError, TypeError, ValueError):
            raise UserError(f"{name} must be {self.allowed()}, got '{value}'") from None
        if device.type == "cuda" and (not torch.cuda.is_available()
                                      or (device.index or 0) >= torch.cuda.device_count()):
            raise UserError(f"{name} {value}: no such CUDA device here ({torch.cuda.device_count()} visible); use cpu")
        return value


class TrainingDevice(Device):
    """--device of a command that trains (train, select, demo): cpu, or cuda for the first visible GPU
    (Trainer places each process on its own GPU; torchrun / accelerate launch give one per GPU)."""

    def allowed(self) -> str:
        return "cpu or cuda"

    def check(self, value, name):
        import torch

        value = super().check(value, name)
        device = torch.device(value)
        if device.type == "cuda" and device.index:
            raise UserError(f"{name} {value}: training runs on the first visible GPU; choose GPU {device.index} "
                            f"with CUDA_VISIBLE_DEVICES={device.index} and --device cuda")
        if device.type not in ("cpu", "cuda"):
            raise UserError(f"{name} must be {self.allowed()} for training, got '{value}'")
        return value


def device_option(parser, training: bool = False, default_help: str = "cuda when available") -> None:
    """The --device option of a command that loads a model (the same everywhere)."""
    parser.add_argument("--device", default=None, type=kind(TrainingDevice() if training else Device()),
                        help=f"{'cpu or cuda' if training else 'cpu, cuda, cuda:1 ...'} (default: {default_help})")


def training_overrides(device: str | None) -> list[str]:
    """--device of a training command as config overrides: cpu -> training.use_cpu=true (Trainer
    stays on the CPU), cuda -> use_cpu=false; none: the config decides (CUDA when available)."""
    import torch

    if device is None:
        return []
    return [f"training.use_cpu={'true' if torch.device(device).type == 'cpu' else 'false'}"]
