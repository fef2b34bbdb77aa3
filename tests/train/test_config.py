"""Config loading and --set overrides: every unknown key or value is a one-line error."""

import pytest

from difflora.errors import UserError
from difflora.train import load_train_config

BASE = {"model": "m", "output_dir": "o", "data": {"train": "t.jsonl"}}


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\noutput_dir: o\nmethod: {type: difflora, preset: difflora-32}\ntraining: {learning_rate: 1.0e-4}\n")
    cfg = load_train_config(path, ["training.learning_rate=3e-4", "method.r=16", "data.packing=true"])
    assert cfg.training["learning_rate"] == 3e-4 and cfg.method["r"] == 16 and cfg.data.packing is True


@pytest.mark.parametrize("raw,match", [
    ({**BASE, "optimizer": "adam"}, r"unknown config key\(s\) \['optimizer'\]"),
    ({**BASE, "method": {"type": "difflora", "preset": "difflora-128"}}, "unknown DiffLoRA preset 'difflora-128'"),
    ({**BASE, "method": {"type": "difflora", "rank": 8}}, r"unknown method key\(s\) \['rank'\]"),
    ({**BASE, "method": {"type": "prefix"}}, "method.type must be one of"),
    ({**BASE, "training": {"learning_rat": 1}}, r"unknown training key\(s\) \['learning_rat'\]"),
    ({**BASE, "data": {"trian": "x"}}, r"unknown data key\(s\) \['trian'\]"),
    ({"output_dir": "o"}, "'model' is required"),
])
def test_bad_config(raw, match):
    with pytest.raises(UserError, match=match):
        load_train_config(raw)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_train_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_train_config(bad)
    with pytest.raises(UserError, match="--set expects key=value"):
        load_train_config(BASE, ["training.learning_rate"])


def test_paper_configs_load():
    import glob

    paths = sorted(glob.glob("configs/paper/*.yaml"))
    assert len(paths) == 5
    for path in paths:
        cfg = load_train_config(path)
        assert cfg.training["learning_rate"] == 1e-4 and cfg.data.max_length == 4096
        assert cfg.training["per_device_train_batch_size"] * cfg.training["gradient_accumulation_steps"] == 64
