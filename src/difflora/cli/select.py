"""`difflora select CONFIG.yaml`: DiffoRA module selection (which modules / layers get adapters)."""

from __future__ import annotations

from ..validation import InputFile, Kind, OutputFolder, Real, Whole
from .options import KeyValue, device_option, kind, training_overrides


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "select", help="DiffoRA: learn which modules get LoRA (or which layers get DiffLoRA) from a training config",
        description="Search a relaxed Differential Adaptation Matrix, keep the best candidates, and write the "
                    "selection as an adapter folder (inherited weights), a training config, dam.json and dam.png.")
    p.add_argument("config", type=kind(InputFile()),
                   help="training config YAML (model, method, data, training; optional select: section)")
    p.add_argument("--method", choices=("lora", "difflora"), default=None,
                   help="candidates: every layer x q,k,v,o,gate,up,down (lora) or every layer's attention "
                        "(difflora); default: the config's method.type")
    p.add_argument("--sampling-rate", type=kind(Real(above=0, maximum=1)), default=None,
                   help="fraction of candidates to keep, in (0, 1] (default 0.5 unless --budget)")
    p.add_argument("--budget", type=kind(ParameterCount()), default=None,
                   help="keep candidates within this many trainable parameters, e.g. 250000, 2.5e5, 250k "
                        "(default: none, --sampling-rate decides)")
    p.add_argument("--search-steps", type=kind(Whole(minimum=1)), default=None,
                   help="alternating search steps (default 200)")
    p.add_argument("--heldout-fraction", type=kind(Real(above=0, below=1)), default=None,
                   help="fraction of data.train held out for the architecture weights when data.eval is not given "
                        "(default: data.eval_fraction or 0.2)")
    p.add_argument("--out", type=kind(OutputFolder()), default=None,
                   help="output folder (default: the config's output_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", type=kind(KeyValue()),
                   help="override a config value, e.g. --set training.learning_rate=2e-4 (repeatable; default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    device_option(p, training=True, default_help="cuda when available; cpu is training.use_cpu: true")
    p.set_defaults(func=_select)


class ParameterCount(Kind):
    """A parameter count: 250000, 2.5e5 or 250k / 1.5M, at least 1."""

    def allowed(self) -> str:
        return "a whole parameter count >= 1 (e.g. 250000, 2.5e5, 250k, 1.5M)"

    def from_text(self, text: str):
        suffixes = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}
        scale = suffixes.get(text[-1:].lower(), 1)
        try:
            return float(text[:-1] if scale != 1 else text) * scale
        except ValueError:
            return text

    def _convert(self, value):
        return Whole(minimum=1)._convert(value)


def _select(args) -> int:
    from ..select import run_selection

    result = run_selection(args.config, method=args.method, sampling_rate=args.sampling_rate, budget=args.budget,
                           search_steps=args.search_steps, out_dir=args.out, heldout_fraction=args.heldout_fraction,
                           overrides=[*args.overrides, *training_overrides(args.device)], progress=not args.quiet)
    print(result.config_path)
    return 0
