"""Every option of every command is declared so that it is checked and documented: it has help
text that states its default, and its value has a kind (difflora.validation) or a fixed set of
choices, so a new option cannot skip validation. Plus the checks that need more than a table:
a missing local path fails without any hub lookup, and attention_maps refuses bad input ids."""

import argparse
import time

import pytest
import torch

from difflora.cli.main import build_parser, main

FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._HelpAction, argparse._VersionAction)


def _commands(parser, prefix=()):
    """(command words, parser) for every command and sub-command."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


def _options():
    for words, parser in _commands(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            yield " ".join(words) or "difflora", action, formatter


OPTIONS = list(_options())


def test_every_command_is_walked():
    commands = {command for command, _, _ in OPTIONS}
    assert {"train", "generate", "eval nih", "eval icl", "eval degeneration", "eval lm-eval", "analyze attention",
            "report", "select", "demo"} <= commands


@pytest.mark.parametrize("command,action,formatter", OPTIONS,
                         ids=[f"{c} {a.option_strings[-1] if a.option_strings else a.dest}" for c, a, _ in OPTIONS])
def test_option_has_help_with_its_default_and_is_checked(command, action, formatter):
    assert action.help and len(action.help) > 8, f"{command} {action.dest}: no help text"
    if isinstance(action, FLAG_ACTIONS):
        return
    if action.option_strings and not action.required:
        shown = formatter._get_help_string(action)
        assert "default" in shown.lower(), f"{command} {action.option_strings}: help does not state the default"
    assert action.choices is not None or hasattr(action.type, "kind"), (
        f"{command} {action.option_strings or action.dest}: declare it with a kind (cli/options.py) or choices")


@pytest.mark.parametrize("words", sorted({c for c, _, _ in OPTIONS}))
def test_help_of_every_command(words, capsys):
    argv = [] if words == "difflora" else words.split()
    assert main([*argv, "--help"]) == 0
    assert "usage: difflora" in capsys.readouterr().out


def test_a_missing_local_path_fails_at_once_without_the_hub(tmp_path, monkeypatch, capsys):
    """With the hub reachable in principle (HF_HUB_OFFLINE unset), 'runs/nope' beside an existing runs/
    is a path: refused without asking the hub (any from_pretrained call fails this test)."""
    import transformers

    def no_lookup(*args, **kwargs):
        raise AssertionError("looked the path up with from_pretrained")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_lookup)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_lookup)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for spec in ("runs/nope", "./nope", "../nope", str(tmp_path / "nope"), "~/difflora-nope", "a/b/c"):
        started = time.time()
        assert main(["generate", spec, "--prompt", "hi"]) == 1
        err = capsys.readouterr().err.strip()
        assert err == (f"difflora generate: error: model '{spec}' is neither a local folder (nothing is at that "
                       "path) nor a hub id; check the path"), err
        assert time.time() - started < 5


def test_load_model_names_a_corrupt_adapter_config(tmp_path):
    from difflora.errors import UserError
    from difflora.loading import load_model

    (tmp_path / "adapter_config.json").write_text('{\n "base_model_name_or_path": "x",\n "r": 8\n')
    with pytest.raises(UserError, match=r"adapter_config.json:4: not valid JSON \(Expecting ',' delimiter"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("ids,match", [
    ([[1, 2, 3]], "input_ids must be a tensor of token ids .* got a list"),
    (torch.tensor([1, 2, 3]), r"must be a 2-D integer tensor .* shape \(3,\)"),
    (torch.tensor([[1.0, 2.0]]), "must be a 2-D integer tensor .* dtype torch.float32"),
    (torch.tensor([[1, 2, 500]]), r"token id 500 is outside the model's vocabulary \(0\.\.127\)"),
    (torch.tensor([[1, -1]]), "token id -1 is outside the model's vocabulary"),
])
def test_attention_maps_refuses_bad_input_ids_in_one_line(ids, match, tiny_model_factory):
    from peft import get_peft_model

    import difflora

    model = get_peft_model(tiny_model_factory("llama", vocab_size=128), difflora.DiffLoRAConfig.from_preset(
        "difflora-64-fixed", r=4))
    with pytest.raises(ValueError, match=match) as info:
        difflora.attention_maps(model, ids)
    assert "\n" not in str(info.value)
    maps = difflora.attention_maps(model, torch.tensor([[1, 2, 3]]))  # a good input still works
    assert len(maps) == 2 and maps[0]["positive"].shape == (1, 4, 3, 3)
