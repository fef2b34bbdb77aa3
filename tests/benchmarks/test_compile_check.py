"""benchmarks/compile_check.py (the fullgraph check the GPU script runs): it passes on a preset that
compiles as one graph and reports a graph break as a failure, with the cheap `eager` backend."""

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")


def test_presets_compile_as_one_graph(capsys):
    import compile_check

    assert compile_check.main(["--device", "cpu", "--presets", "lora-8", "difflora-64", "--checks", "train",
                               "decode"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(("lora-8 ", "difflora-64 "))]
    assert len(lines) == 4 and all(line.split()[4] == "1" and " ok " in line for line in lines), out
    assert "compile check: 4 passed, 0 failed" in out


def test_a_graph_break_is_a_failure(monkeypatch, capsys):
    import compile_check
    import torch
    import transformers.models.llama.modeling_llama as llama

    built = compile_check.build
    plain = llama.LlamaAttention.forward

    def breaking(self, *args, **kwargs):
        torch._dynamo.graph_break()
        return plain(self, *args, **kwargs)

    def build_then_break(*args, **kwargs):
        model = built(*args, **kwargs)
        monkeypatch.setattr(llama.LlamaAttention, "forward", breaking)
        return model

    monkeypatch.setattr(compile_check, "build", build_then_break)
    assert compile_check.main(["--device", "cpu", "--presets", "lora-8", "--checks", "decode"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "compile check: 0 passed, 1 failed" in out


def test_unknown_preset_is_refused():
    import compile_check

    with pytest.raises(SystemExit):
        compile_check.main(["--presets", "difflora-16"])
