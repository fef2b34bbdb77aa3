"""--device on every command that loads a model: declared the same way everywhere, and `--device cpu`
runs. For the training commands it is the config's training.use_cpu (Trainer places the model),
which does not make a finished run a different run."""

import argparse

import pytest
import yaml

from difflora.cli.main import build_parser, main
from difflora.cli.options import Device, TrainingDevice, training_overrides

LOADS_A_MODEL = {"train": TrainingDevice, "select": TrainingDevice, "demo": TrainingDevice, "generate": Device,
                 "export": Device, "eval nih": Device, "eval icl": Device, "eval degeneration": Device,
                 "eval lm-eval": Device, "analyze attention": Device}


def _parsers(parser, words=()):
    yield " ".join(words), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*words, name))


@pytest.mark.parametrize("command", sorted(LOADS_A_MODEL))
def test_every_command_that_loads_a_model_has_device(command):
    parser = dict(_parsers(build_parser()))[command]
    (action,) = [a for a in parser._actions if "--device" in a.option_strings]
    assert type(action.type.kind) is LOADS_A_MODEL[command] and action.default is None


def test_training_device_is_use_cpu():
    assert training_overrides(None) == []
    assert training_overrides("cpu") == ["training.use_cpu=true"]
    assert training_overrides("cuda") == ["training.use_cpu=false"]


def test_train_on_cpu_and_find_the_run_again(world, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", world["cfg"], "--quiet", "--set", f"output_dir={out}"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert yaml.safe_load((out / "run_config.yaml").read_text())["training"]["use_cpu"] is True
    capsys.readouterr()
    assert main(argv) == 0  # where it ran is not what it is: the finished run is found, nothing retrains
    assert "already holds this finished run" in capsys.readouterr().err


def test_generate_and_export_on_cpu(world, tmp_path, capsys):
    assert main(["generate", world["base"], "--prompt", "hi", "--max-new-tokens", "2", "--device", "cpu"]) == 0
    assert "assistant:" in capsys.readouterr().out
    assert main(["export", world["adapter"], str(tmp_path / "exported"), "--device", "cpu"]) == 0
    assert (tmp_path / "exported" / "config.json").is_file()


def test_demo_device_reaches_training_and_evaluation(tmp_path, monkeypatch):
    """The demo passes --device to each fine-tune (training.use_cpu, outside the stage's fingerprint)
    and to every model it loads for evaluation."""
    import difflora.demo.pipeline as pipeline
    import difflora.train as train
    from difflora.demo.plan import quick_plan

    seen = {}

    class Stop(Exception):
        pass

    def capture(key):
        def fake(*args, **kwargs):
            seen[key] = (args, kwargs)
            raise Stop
        return fake

    monkeypatch.setattr(train, "run_training", capture("train"))
    monkeypatch.setattr(pipeline, "load_model", capture("load"))
    fingerprints = []
    for device in ("cpu", None):  # the same out folder: the same stage, trained on the CPU or not
        demo = pipeline.Demo(quick_plan(), str(tmp_path / "demo"), device=device)
        demo.base_path, demo.train_file = "base-folder", "train.jsonl"
        with pytest.raises(Stop):
            demo.train("lora-8", hidden_size=64)
        fingerprints.append(demo.state.stages["train:lora-8"]["fingerprint"])
        assert seen["train"][0][0]["training"].get("use_cpu") is (True if device else None)
        with pytest.raises(Stop):
            demo.evaluate("base")
        if device:  # (without one: cuda when available)
            assert seen["load"][1]["device"] == device
    assert fingerprints[0] == fingerprints[1]


def test_select_on_cpu_leaves_the_device_out_of_its_train_config(world, tmp_path):
    out = tmp_path / "selection"
    assert main(["select", world["cfg"], "--out", str(out), "--search-steps", "1", "--quiet", "--device", "cpu"]) == 0
    written = yaml.safe_load((out / "train_config.yaml").read_text())
    assert "use_cpu" not in written["training"], "the training that follows may run elsewhere"
