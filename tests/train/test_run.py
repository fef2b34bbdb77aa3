"""End-to-end training runs: every method, output and checkpoint folders, lambda logging to the
history and TensorBoard, gradient checkpointing, quiet mode, generate, the divergence guard."""

import glob
import os

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from difflora.cli.main import main as cli
from difflora.errors import UserError
from difflora.train import run_training
from difflora.train.trainer import TrainingDivergedError

from .conftest import write_jsonl


@pytest.mark.parametrize("method", [
    {"type": "difflora", "preset": "difflora-64-fixed", "r": 8, "lora_alpha": 16},
    {"type": "lora", "preset": "lora-8"},
    {"type": "full"},
])
def test_each_method_trains_and_its_output_loads(train_cfg, method, tiny_base_dir, capfd):
    cfg = train_cfg(**method)
    result = run_training(cfg, quiet=True)
    assert capfd.readouterr() == ("", "")  # quiet means quiet: no bars, no log lines
    assert [step for step, _ in result.losses] == [2, 4, 6, 8]
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses)
    out = result.output_dir
    assert os.path.isfile(os.path.join(out, "tokenizer_config.json"))
    checkpoint = os.path.join(out, "checkpoint-8")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert os.path.isfile(os.path.join(checkpoint, name)), name
    if method["type"] == "full":
        model = AutoModelForCausalLM.from_pretrained(out)
        assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in load_file(
            os.path.join(out, "model.safetensors")).values())
    else:
        base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
        model = PeftModel.from_pretrained(base, out)
        trainable = {n for n, p in model.named_parameters() if "lora" in n or "difflora" in n}
        for folder in (out, checkpoint):  # the adapter only: no frozen base weight is saved
            assert not glob.glob(os.path.join(folder, "model*.safetensors"))
            saved = load_file(os.path.join(folder, "adapter_model.safetensors"))
            assert saved and len(saved) == len(trainable) and not any("base_layer" in k for k in saved)
        first = next(iter(saved))
        torch.testing.assert_close(saved[first], load_file(os.path.join(out, "adapter_model.safetensors"))[first])
    again = run_training(cfg, quiet=True)
    assert again.already_complete and again.losses == result.losses


def test_lambdas_go_to_the_history_and_tensorboard(train_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = train_cfg(type="difflora", preset="difflora-64", r=8, layers_to_transform=[1])
    cfg["training"]["report_to"] = ["tensorboard"]
    cfg["data"]["eval_fraction"] = 0.25
    result = run_training(cfg, quiet=False)
    history = result.lambda_history
    assert list(history) == [1]  # keyed by the transformed layer's index
    assert [s for s, _ in history[1]] == [2, 4, 6, 8] and len({v for _, v in history[1]}) > 1  # learned: it moves
    assert "eval_loss" in result.metrics and torch.isfinite(torch.tensor(result.metrics["eval_loss"]))
    (run_dir,) = glob.glob(os.path.join(cfg["output_dir"], "runs", "*"))
    acc = EventAccumulator(run_dir)  # reads every event file there (the final evaluation opens another)
    acc.Reload()
    assert {"train/lambda/01", "train/loss", "train/grad_norm", "train/learning_rate"} <= set(acc.Tags()["scalars"])
    assert [e.value for e in acc.Scalars("train/lambda/01")] == pytest.approx([v for _, v in history[1]], abs=1e-5)


def test_gradient_checkpointing_gives_the_same_losses(train_cfg, tmp_path):
    plain = run_training(train_cfg(), quiet=True)
    cfg = train_cfg()
    cfg["output_dir"] = str(tmp_path / "checkpointed")
    cfg["training"]["gradient_checkpointing"] = True
    checkpointed = run_training(cfg, quiet=True)
    assert [loss for _, loss in checkpointed.losses] == pytest.approx([loss for _, loss in plain.losses], rel=1e-5)


def test_bf16_mixed_precision_trains_float32_adapters_on_a_bf16_base(train_cfg):
    """training.bf16 as on a GPU (here CPU autocast): the base loads in bf16 (dtype auto), the adapters
    stay float32 (PEFT's autocast_adapter_dtype) and Trainer runs the forward under bf16 autocast."""
    seen = {}

    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["bf16"] = args.bf16
            seen["frozen"] = {p.dtype for p in model.parameters() if not p.requires_grad}
            seen["trainable"] = {p.dtype for p in model.parameters() if p.requires_grad}

    cfg = train_cfg()
    cfg["training"]["bf16"] = True
    result = run_training(cfg, quiet=True, callbacks=[Inspect()])
    assert seen == {"bf16": True, "frozen": {torch.bfloat16}, "trainable": {torch.float32}}
    assert len(result.losses) == 4 and all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses)


def test_packing_trains(train_cfg):
    cfg = train_cfg()
    cfg["data"]["packing"] = True
    result = run_training(cfg, quiet=True)
    assert len(result.losses) == 4 and result.data_stats["rows"] == 48


def test_generate_cli_chats_with_the_output(train_cfg, capsys):
    result = run_training(train_cfg(), quiet=True)
    assert cli(["generate", result.output_dir, "--prompt", "What is 2 plus 3?", "--max-new-tokens", "5"]) == 0
    assert "assistant:" in capsys.readouterr().out


def test_bad_inputs_are_one_line_cli_errors(train_cfg, tmp_path, capsys):
    import yaml

    def run(cfg):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert cli(["train", str(path)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        return err

    assert cli(["train", str(tmp_path / "missing.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err
    cfg = train_cfg()
    bad_rows = write_jsonl(tmp_path / "bad.jsonl", ['{"messages": [{"role": "user", "content": "hi"}]}'])
    assert f"{bad_rows}:1: the conversation has no assistant turn" in run({**cfg, "data": {"train": str(bad_rows)}})
    assert "data file" in run({**cfg, "data": {"train": str(tmp_path / "none.jsonl")}})
    assert "unknown DiffLoRA preset 'difflora-16'" in run({**cfg, "method": {"preset": "difflora-16"}})
    assert "unknown config key(s) ['epochs']" in run({**cfg, "epochs": 1})
    assert "is not a local folder" in run({**cfg, "model": "no/such-model"})


class _Poison(TrainerCallback):
    """Simulates divergence: at the end of step `step` the parameters whose name contains `name` become NaN
    (on_step_end runs after the optimizer step and before that step's logging and checkpoint)."""

    def __init__(self, step, name):
        self.step, self.name = step, name

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step == self.step:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if self.name in n:
                        p.fill_(float("nan"))


@pytest.mark.parametrize("method,poison,match,kept", [
    # a learned lambda goes NaN between checkpoints: caught at that step's log, checkpoint-4 kept
    ({"type": "difflora", "preset": "difflora-64", "r": 8}, _Poison(6, "lambda_q1"),
     "step 6: a lambda became non-finite", 4),
    # a LoRA weight goes NaN: the next step's loss is NaN
    ({"type": "lora"}, _Poison(5, "lora_A"), "step 6: the loss became nan", 4),
    # weights go NaN right before a checkpoint: that checkpoint is never written
    ({"type": "lora"}, _Poison(4, "lora_B"), "step 4: parameter .*lora_B.* became non-finite; no checkpoint", None),
])
def test_non_finite_values_stop_the_run_and_keep_the_last_good_checkpoint(train_cfg, method, poison, match, kept):
    cfg = train_cfg(**method)
    with pytest.raises(TrainingDivergedError, match=match + (f".*checkpoint-{kept}" if kept else "")):
        run_training(cfg, quiet=True, callbacks=[poison])
    checkpoints = sorted(os.path.basename(p) for p in glob.glob(os.path.join(cfg["output_dir"], "checkpoint-*")))
    assert checkpoints == ([f"checkpoint-{kept}"] if kept else [])
    if kept:
        for value in load_file(os.path.join(cfg["output_dir"], checkpoints[0], "adapter_model.safetensors")).values():
            assert torch.isfinite(value).all()
    assert not os.path.exists(os.path.join(cfg["output_dir"], "training_complete.json"))


@pytest.mark.parametrize("name", ["lora-8", "difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn"])
def test_tiny_configs_run(name, tmp_path):
    from difflora.train import load_train_config
    from difflora.train.tiny import make_tiny_setup

    base, data = make_tiny_setup(str(tmp_path / "tiny"), examples=32)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_train_config(os.path.join(root, "configs", "tiny", f"{name}.yaml"),
                            [f"model={base}", f"data.train={data}", f"output_dir={tmp_path / name}",
                             "training.max_steps=2", "training.logging_steps=1", "training.report_to=[]"])
    result = run_training(cfg, quiet=True)
    assert result.method == name and len(result.losses) == 2


def test_init_from_continues_from_saved_adapter_weights(train_cfg, tmp_path):
    """init_from: the adapters start from a saved adapter (learning rate 0 keeps them exactly);
    an adapter of another method is refused before training, naming the first tensor that misfits."""
    from peft.utils import load_peft_weights

    first = run_training(train_cfg(), quiet=True)
    cfg = {**train_cfg(), "output_dir": str(tmp_path / "again"), "init_from": first.output_dir}
    cfg["training"] = {**cfg["training"], "learning_rate": 0.0, "max_steps": 1}
    again = run_training(cfg, quiet=True)
    saved, final = load_peft_weights(first.output_dir), load_peft_weights(again.output_dir)
    assert saved.keys() == final.keys() and all(torch.equal(saved[k], final[k]) for k in saved)

    other = {**cfg, "output_dir": str(tmp_path / "other"), "method": {"type": "lora", "preset": "lora-8"}}
    with pytest.raises(UserError, match="does not fit this model and method: .*tensors missing"):
        run_training(other, quiet=True)
