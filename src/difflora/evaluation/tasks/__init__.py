"""The evaluation tasks: one module per task, each with the same parts.

- NAME: the task's key in a results dict, and the prefix of its files; SUMMARY_FILE: where its
  summary is written in a run folder;
- SAMPLE_ID: the fields of a per-sample row that identify a sample (the same for every model),
  or None when the task has no per-sample score;
- run(models, settings, **options) -> TaskResult: models {label: (model, tokenizer)}, an
  EvalSettings, and the task's own options by keyword; with settings.out_dir the result is also
  written there, with its plots;
- plot(summary, folder, settings) and section(report, summary, figures, settings): its plots and
  its part of a report; overview(summary): its columns in the report's overview table;
- run_<task>(models, ..., **settings) (attention_mass for the attention task): a documented
  convenience over run() (run() is the one implementation) returning the summary alone, with
  EvalSettings' fields as keywords;
- its command (cli/evaluate.py registers every task in TASKS from these): COMMAND, the command
  group and name (("eval", "nih"), ("analyze", "attention")); HELP; add_options(parser), the
  task's own options (kinds from difflora.validation); check_inputs(args), what can fail before any
  model loads (a prompt or data file); options(args), run()'s keywords from the parsed command
  line; table(summary) -> (title, {row key: {column: value}}), the table printed after a run.

How samples are made and scored lives in the task module, except for the needle and ICL prompt
formats (nih.py, icl.py beside this package), which the demo's training data also uses.
A new task is a module here with these parts, added to TASKS: its report section and its command
follow from that.
"""

from __future__ import annotations

from . import attention_mass, degeneration, lm_eval_harness, many_shot_icl, needles

# In report order.
TASKS = {task.NAME: task for task in (needles, many_shot_icl, attention_mass, degeneration, lm_eval_harness)}
