"""`difflora export ADAPTER_DIR OUT`: a DiffLoRA adapter as a standalone transformers model folder."""

from __future__ import annotations

from ..devices import WEIGHT_DTYPES
from ..validation import InputFolder, Text
from .options import device_option, kind

DTYPES = ("auto", *WEIGHT_DTYPES)  # auto and the full names (no short aliases among its choices)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a DiffLoRA adapter + its base as one transformers model folder (no difflora/peft to load)",
        description="Write the base model with the DiffLoRA adapter built in: config.json with auto_map, "
                    "configuration/modeling files that import only torch and transformers, safetensors weights "
                    "(positive adapters folded into W_Q/W_K, the negative projections and lambda as weights), "
                    "the tokenizer and a README.md model card. Load it with "
                    "AutoModelForCausalLM.from_pretrained(OUT, trust_remote_code=True).")
    p.add_argument("adapter", metavar="ADAPTER_DIR", type=kind(InputFolder()),
                   help="a DiffLoRA adapter folder (adapter_config.json + adapter_model.safetensors), e.g. the "
                        "output_dir of difflora train")
    p.add_argument("out", metavar="OUT", type=kind(Text()), help="the folder to write; must be new or empty")
    p.add_argument("--base", default=None, type=kind(Text()),
                   help="base model folder or hub id (default: the base named in ADAPTER_DIR/adapter_config.json)")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="dtype of the base weights in the export (default: auto, the base checkpoint's own); "
                        "the adapter's weights stay float32 as trained")
    device_option(p, default_help="cpu: folding the adapter into the weights needs no GPU; the folder written "
                                  "is the same either way")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from ..export import export_standalone

    print(export_standalone(args.adapter, args.out, base=args.base, dtype=args.dtype, device=args.device))
    return 0
