"""The catalogue of bad inputs: every command, every kind of option, as a table.

Each case is one command line -> its exit code and one line on stderr naming the problem, with no
traceback, nothing written to the output locations, and an existing file in the way left as it
was. Placeholders: {base}, {adapter}, ... from the `world` fixture (tests/cli/conftest.py);
`afile` (an existing file), `runs/` (an existing folder) and `out` (not yet there) are in each
case's own working folder. Exit code 1: a value the command refuses; 2: a command line argparse
cannot read (unknown option or choice, missing argument). Add a row for every new option.
"""

import shlex

import pytest

from difflora.cli.main import main

CFG = "train {cfg} --quiet"
NIH = "eval nih --model {base} --out out --quiet"
ICL = "eval icl --model {base} --out out --quiet"
DEG = "eval degeneration --model {base} --out out --quiet"
LME = "eval lm-eval --model {base} --tasks x --out out --quiet"
ATT = "analyze attention --model {base} --out out --quiet"
SEL = "select {cfg} --out out --quiet"
DEMO = "demo --quick --out out --threads 1"

CASES = [
    # --- difflora train: the config file and every kind of setting ---------------------------------
    ("train missing.yaml", 1, "config 'missing.yaml' does not exist"),
    ("train {empty_dir}", 1, "is a folder; give a file"),
    ("train {bad_yaml}", 1, "{bad_yaml}:3:5: not valid YAML"),
    (CFG + " --set training.learning_rate=fast", 1, "training.learning_rate must be a number >= 0, got 'fast'"),
    (CFG + " --set training.learning_rate=-1e-4", 1, "training.learning_rate must be a number >= 0"),
    (CFG + " --set training.max_steps=abc", 1, "training.max_steps must be an integer >= 1 (or -1"),
    (CFG + " --set training.max_steps=-5", 1, "training.max_steps must be an integer >= 1 (or -1"),
    (CFG + " --set training.max_steps=0", 1, "training.max_steps must be an integer >= 1"),
    (CFG + " --set training.max_steps=2.5", 1, "training.max_steps must be an integer"),
    (CFG + " --set training.num_train_epochs=0", 1, "training.num_train_epochs must be a number > 0"),
    (CFG + " --set training.per_device_train_batch_size=0", 1, "per_device_train_batch_size must be an integer >= 1"),
    (CFG + " --set training.gradient_accumulation_steps=-2", 1, "gradient_accumulation_steps must be an integer >= 1"),
    (CFG + " --set training.warmup_steps=-1", 1, "training.warmup_steps must be a number >= 0"),
    (CFG + " --set training.save_steps=0", 1, "training.save_steps must be a number > 0"),
    (CFG + " --set training.seed=1.5", 1, "training.seed must be an integer >= 0"),
    (CFG + " --set training.bf16=maybe", 1, "training.bf16 must be true or false, got 'maybe'"),
    (CFG + " --set training.lr_scheduler_type=sometimes", 1, "invalid training settings"),
    (CFG + " --set training.learning_rat=1", 1, "unknown training key(s) ['learning_rat']"),
    (CFG + " --set epochs=1", 1, "unknown config key(s) ['epochs']"),
    (CFG + " --set nokey", 1, "--set must be KEY=VALUE"),
    (CFG + " --set data.max_length=1", 1, "data.max_length must be an integer >= 2"),
    (CFG + " --set data.packing=sometimes", 1, "data.packing must be true or false"),
    (CFG + " --set data.eval_fraction=1", 1, "data.eval_fraction must be in [0, 1)"),
    (CFG + " --set data.max_examples=0", 1, "data.max_examples must be an integer >= 1"),
    (CFG + " --set data.train=missing.jsonl", 1, "data file 'missing.jsonl' does not exist"),
    (CFG + " --set data.train={not_utf8}", 1, "{not_utf8}:3: not UTF-8 text (byte 0x8c"),
    (CFG + " --set data.train={bad_row}", 1, "{bad_row}:1: the conversation has no assistant turn"),
    (CFG + " --set method.r=-1", 1, "invalid method settings"),
    (CFG + " --set method.preset=difflora-16", 1, "unknown DiffLoRA preset 'difflora-16'"),
    (CFG + " --set method.type=prefix", 1, "method.type must be one of"),
    (CFG + " --set dtype=int8", 1, "dtype must be one of auto"),
    (CFG + " --set output_dir=afile", 1, "output_dir 'afile' is an existing file, not a folder"),
    (CFG + " --set output_dir=afile/run", 1, "output_dir 'afile/run' cannot be made: "),
    (CFG + " --set output_dir=/proc/difflora-run", 1, "cannot be written"),
    (CFG + " --set model=runs/nope", 1, "model 'runs/nope' is neither a local folder"),
    (CFG + " --set model=./nope", 1, "model './nope' is neither a local folder"),
    (CFG + " --set model=afile", 1, "model 'afile' is a file, not a model folder"),
    (CFG + " --set tokenizer=runs/none", 1, "tokenizer 'runs/none' is neither a local folder"),
    (CFG + " --set init_from={empty_dir}", 1, "is not a PEFT adapter folder"),
    ("train", 2, "the following arguments are required: config"),
    (CFG + " --resumee", 2, "unrecognized arguments: --resumee"),
    (CFG + " --device banana", 1, "--device must be cpu or cuda, got 'banana'"),
    (CFG + " --device mps", 1, "--device must be cpu or cuda for training, got 'mps'"),
    (CFG + " --device cuda:7", 1, "--device cuda:7: no such CUDA device here"),
    # --- difflora generate --------------------------------------------------------------------------
    ("generate runs/nope --prompt hi", 1, "model 'runs/nope' is neither a local folder (nothing is at that path)"),
    ("generate afile --prompt hi", 1, "model 'afile' is a file, not a model folder"),
    ("generate {base}::runs/nope --prompt hi", 1, "no adapter at 'runs/nope'"),
    ("generate {bad_adapter} --prompt hi", 1, "{bad_adapter}/adapter_config.json:3: not valid JSON"),
    ("generate {base} --prompt hi --temperature -1", 1, "--temperature must be a number >= 0, got -1"),
    ("generate {base} --prompt hi --max-new-tokens 0", 1, "--max-new-tokens must be an integer >= 1, got 0"),
    ("generate {base} --prompt hi --max-new-tokens many", 1, "--max-new-tokens must be an integer >= 1, got 'many'"),
    ("generate {base} --prompt ''", 1, "--prompt must be a non-empty text"),
    ("generate {base} --prompt hi --device banana", 1, "--device must be a device: cpu, cuda, cuda:N or mps"),
    # --- difflora eval nih (and the options every eval command shares) -------------------------------
    ("eval nih --model {base} --out afile --quiet", 1, "--out 'afile' is an existing file, not a folder"),
    ("eval nih --model {base} --out afile/sub --quiet", 1, "--out 'afile/sub' cannot be made"),
    ("eval nih --model {base} --out /proc/difflora-eval --quiet", 1, "cannot be written"),
    (NIH + " --batch-size 0", 1, "--batch-size must be an integer >= 1, got 0"),
    (NIH + " --samples 0", 1, "--samples must be an integer >= 1, got 0"),
    (NIH + " --samples abc", 1, "--samples must be an integer >= 1, got 'abc'"),
    (NIH + " --lengths 512 0", 1, "--lengths must be an integer >= 1, got 0"),
    (NIH + " --seed -1", 1, "--seed must be an integer >= 0, got -1"),
    (NIH + " --max-new-tokens 0", 1, "--max-new-tokens must be an integer >= 1"),
    (NIH + " --train-length -3", 1, "--train-length must be an integer >= 1"),
    (NIH + " --dtype int8", 1, "--dtype must be one of auto, float32"),
    (NIH + " --device banana", 1, "--device must be a device: cpu, cuda, cuda:N or mps, got 'banana'"),
    (NIH + " --device cuda:7", 1, "--device cuda:7: no such CUDA device here"),
    (NIH + " --tasks mk9", 2, "argument --tasks: invalid choice: 'mk9'"),
    (NIH + " --chat-template maybe", 2, "argument --chat-template: invalid choice: 'maybe'"),
    ("eval nih --model runs/nope --quiet", 1, "model 'runs/nope' is neither a local folder"),
    ("eval nih --model label=runs/nope --quiet", 1, "model 'runs/nope' is neither a local folder"),
    ("eval nih --model {base}::runs/nope --quiet", 1, "no adapter at 'runs/nope'"),
    ("eval nih --model {bad_adapter} --quiet", 1, "{bad_adapter}/adapter_config.json:3: not valid JSON"),
    ("eval nih --quiet", 2, "the following arguments are required: --model"),
    (NIH + " --foo", 2, "unrecognized arguments: --foo"),
    ("eval", 2, "the following arguments are required: TASK"),
    ("eval mmlu", 2, "argument TASK: invalid choice: 'mmlu'"),
    # --- difflora eval icl / degeneration / lm-eval -------------------------------------------------
    (ICL + " --shots 4 -1", 1, "--shots must be an integer >= 0, got -1"),
    (ICL + " --samples 0", 1, "--samples must be an integer >= 1"),
    (ICL + " --data missing.jsonl", 1, "ICL data file 'missing.jsonl' does not exist"),
    (ICL + " --data {icl_not_utf8}", 1, "{icl_not_utf8}:2: not UTF-8 text (byte 0x8c at column 14)"),
    (ICL + " --text-field ''", 1, "--text-field must be a non-empty text"),
    (DEG + " --prompts missing.jsonl", 1, "--prompts 'missing.jsonl' does not exist"),
    (DEG + " --prompts {prompts_not_utf8}", 1, "{prompts_not_utf8}:2: not UTF-8 text"),
    (DEG + " --worst -1", 1, "--worst must be an integer >= 0"),
    (DEG + " --max-new-tokens 0", 1, "--max-new-tokens must be an integer >= 1"),
    (LME + " --include-path runs/none", 1, "--include-path 'runs/none' is not a folder of lm-eval task YAMLs"),
    (LME + " --limit 0", 1, "--limit must be a number > 0, got 0"),
    (LME + " --num-fewshot -1", 1, "--num-fewshot must be an integer >= 0"),
    ("eval lm-eval --model {base} --out out", 2, "the following arguments are required: --tasks"),
    # --- difflora analyze attention ------------------------------------------------------------------
    (ATT + " --length 0", 1, "--length must be an integer >= 1"),
    (ATT + " --prompts 0", 1, "--prompts must be an integer >= 1"),
    (ATT + " --prompts-file missing.jsonl", 1, "--prompts-file 'missing.jsonl' does not exist"),
    (ATT + " --prompts-file {prompts_not_utf8}", 1, "{prompts_not_utf8}:2: not UTF-8 text"),
    (ATT + " --task mk7", 2, "argument --task: invalid choice: 'mk7'"),
    # --- difflora report -------------------------------------------------------------------------------
    ("report runs/nothing", 1, "runs 'runs/nothing' does not exist"),
    ("report afile", 1, "runs 'afile' is a file; give a folder"),
    ("report {empty_dir} --out afile", 1, "--out 'afile' is an existing file"),
    ("report {empty_dir} --out out", 1, "no evaluation results"),
    ("report {empty_dir} --out out --pair x", 1, "--pair expects MODEL=REFERENCE"),
    ("report", 2, "the following arguments are required: runs"),
    # --- difflora select -----------------------------------------------------------------------------
    (SEL + " --sampling-rate 1.5", 1, "--sampling-rate must be in (0, 1], got 1.5"),
    (SEL + " --sampling-rate 0", 1, "--sampling-rate must be in (0, 1], got 0"),
    (SEL + " --budget 10q", 1, "--budget must be a whole parameter count >= 1"),
    (SEL + " --budget 0", 1, "--budget must be a whole parameter count >= 1"),
    (SEL + " --budget 2.5", 1, "--budget must be a whole parameter count >= 1"),
    (SEL + " --search-steps 0", 1, "--search-steps must be an integer >= 1"),
    (SEL + " --heldout-fraction 1", 1, "--heldout-fraction must be in (0, 1)"),
    (SEL + " --sampling-rate 0.5 --budget 250k", 1, "either a sampling rate or a parameter budget, not both"),
    (SEL + " --set training.learning_rate=fast", 1, "training.learning_rate must be a number >= 0"),
    ("select {cfg} --out afile --quiet", 1, "--out 'afile' is an existing file"),
    ("select {bad_yaml} --quiet", 1, "{bad_yaml}:3:5: not valid YAML"),
    ("select missing.yaml --quiet", 1, "config 'missing.yaml' does not exist"),
    (SEL + " --method full", 2, "argument --method: invalid choice: 'full'"),
    (SEL + " --device cuda:7", 1, "--device cuda:7: no such CUDA device here"),
    (SEL + " --device banana", 1, "--device must be cpu or cuda, got 'banana'"),
    # --- difflora demo ---------------------------------------------------------------------------------
    (DEMO + " --samples 0", 1, "--samples must be an integer >= 1, got 0"),
    ("demo --quick --out out --threads 0", 1, "--threads must be an integer >= 1, got 0"),
    (DEMO + " --lengths 16", 1, "--lengths must be an integer of at least 64 tokens, got 16"),
    (DEMO + " --models lora-9", 1, "unknown demo model 'lora-9'"),
    (DEMO + " --tasks speed", 1, "unknown demo task 'speed'"),
    (DEMO + " --needles mk4", 1, "unknown needle task 'mk4'"),
    (DEMO + " --config missing.yaml", 1, "--config 'missing.yaml' does not exist"),
    ("demo --quick --out afile --threads 1", 1, "--out 'afile' is an existing file"),
    (DEMO + " --device banana", 1, "--device must be cpu or cuda, got 'banana'"),
    (DEMO + " --device cuda:7", 1, "--device cuda:7: no such CUDA device here"),
    # --- difflora export -------------------------------------------------------------------------------
    ("export {adapter} out --device banana", 1, "--device must be a device: cpu, cuda, cuda:N or mps"),
    # --- the command itself ------------------------------------------------------------------------------
    ("fly", 2, "argument COMMAND: invalid choice: 'fly'"),
]


def _id(case) -> str:
    return case[0].replace("{", "").replace("}", "")[:70]


@pytest.mark.parametrize("argv,code,message", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_one_line_before_any_work(argv, code, message, world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "afile").write_text("finished work")
    capsys.readouterr()
    assert main(shlex.split(argv.format(**world))) == code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("difflora") and ": error: " in lines[0], lines[0]
    assert message.format(**world) in lines[0], lines[0]
    assert out == ""
    assert (tmp_path / "afile").read_text() == "finished work", "a file in the way is kept as it was"
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs" / "train-out").exists(), "nothing half-written"


def test_catalogue_is_as_broad_as_the_issue():
    commands = {c[0].split()[0] if not c[0].startswith("eval ") else " ".join(c[0].split()[:2]) for c in CASES}
    assert {"train", "generate", "eval nih", "eval icl", "eval degeneration", "eval lm-eval", "analyze",
            "report", "select", "demo"} <= commands
    assert len(CASES) >= 86


GOOD_SETTINGS = [
    ("training.max_steps=-1", "max_steps", -1),            # -1: train for num_train_epochs
    ("training.max_steps=1e3", "max_steps", 1000),         # YAML 1.1 reads 1e3 as a string, then a float
    ("training.learning_rate=0", "learning_rate", 0),      # keeps the weights (used to check init_from)
    ("training.learning_rate=2e-4", "learning_rate", 2e-4),
    ("training.warmup_steps=0.03", "warmup_steps", 0.03),  # a fraction of the steps
    ("training.save_total_limit=null", "save_total_limit", None),
    ("training.fsdp=full_shard auto_wrap", "fsdp", "full_shard auto_wrap"),
    ("training.fsdp=true", "fsdp", True),                  # TrainingArguments takes a bool here too
    ("training.bf16=true", "bf16", True),
    ("training.lr_scheduler_type=cosine", "lr_scheduler_type", "cosine"),
]


@pytest.mark.parametrize("override,key,value", GOOD_SETTINGS, ids=[g[0] for g in GOOD_SETTINGS])
def test_good_settings_are_accepted(override, key, value, world):
    from difflora.train import load_train_config

    assert load_train_config(world["cfg"], [override]).training[key] == value


def test_the_python_api_checks_output_locations_before_loading(world, tmp_path, monkeypatch):
    import yaml

    from difflora.errors import UserError
    from difflora.select import run_selection
    from difflora.train import run_training

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("finished work")
    config = yaml.safe_load(open(world["cfg"]))
    with pytest.raises(UserError, match="output_dir 'afile' is an existing file"):
        run_training({**config, "output_dir": "afile"}, quiet=True)
    with pytest.raises(UserError, match="the selection's output folder \\(out\\) 'afile' is an existing file"):
        run_selection({**config, "select": {"out": "afile"}}, progress=False)
    assert (tmp_path / "afile").read_text() == "finished work"
