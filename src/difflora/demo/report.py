"""OUT/report.md and OUT/report.html, results first: the verdicts against the paper's findings (a
grid, OUT/verdicts.png, and a table, with what each finding compares and, once, why a verdict can
disagree), then the table of models x metrics, the paper's findings beside the demo's with their
numbers, the plots, and last how it was run (command, recipes, stage times, versions).

The per-task sections and plots are the evaluation tasks' own (their section()); this module adds
the verdicts, the demo's overview, the comparison with the paper (compare.py), the held-out loss, the
training curves and the measured timings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
from importlib import metadata

from ..evaluation.document import Report, fmt, lookup
from ..evaluation.paper import FINDINGS
from ..evaluation.plots import category_grid, grouped_bars, plt, save_figure
from ..evaluation.results import write_json
from ..evaluation.tasks import TASKS
from ..train.runner import DEFAULT_TRAINING
from ..train.trainer import lambda_series
from .agreement import agreement_section, read_verdicts, verdict_records, write_verdicts
from .base import default_base_path
from .compare import Finding, findings
from .evaluate import LOSS, gather
from .plan import DIFFORA_MODELS, DemoPlan
from .state import DemoState

VERDICTS = "Verdicts against the paper's findings"
WHY_DISAGREE = "Why a verdict can disagree with the paper"  # a subsection of VERDICTS, the one explanation
HOW_RUN = "How this was run"
AGREEMENT = "Where this run agrees with the reference run"  # with --compare-with only
DESIGN = "What was trained on, and how many samples"
# the demo's own sections, in order (the tasks' in between)
SECTIONS = (VERDICTS, AGREEMENT, DESIGN, "Base model quality", "Models x metrics",
            "The paper's findings beside the demo's", "DiffoRA selections", "Training", HOW_RUN)
VERDICT_COLOURS = {"agrees": "#9ecae1", "disagrees": "#fdae6b", "cannot tell": "#d9d9d9"}
MEASURES = {"nih": "needles", "icl": "ICL", "degeneration": "degeneration"}
GRID = "verdicts.png"  # beside report.md


def write_demo_report(plan: DemoPlan, base_path: str, adapters: dict[str, str], out_dir: str,
                      state: DemoState, command: str | None = None, compare_with: str | None = None) -> str:
    """compare_with: a finished demo's folder; its verdicts are set beside this run's (agreement.py)."""
    labels = ["base", *adapters]
    results = gather(out_dir, labels, plan.tasks)
    summaries = {task: result.summary for task, result in results.items()}
    figures = os.path.join(out_dir, "figures")
    report = Report("DiffLoRA in miniature: the paper's comparison, measured" if plan.embedded_base else
                    f"DiffLoRA on {plan.base_model}: the paper's comparison on a real pretrained model, measured")
    found = findings(results, plan.models, plan.icl_shots, plan.train_max_length)
    write_verdicts(out_dir, found, plan.base_model or "the embedded default base")
    reference = read_verdicts(compare_with) if compare_with else None  # refused before any writing below

    _verdicts(report, found, plan, base_path, out_dir, summaries)
    if reference is not None:
        agreement_section(report, verdict_records(found), reference, compare_with, AGREEMENT)
    _evaluation_design(report, plan, found)
    _base_quality(report, plan, summaries)
    report.heading("Models x metrics")
    report.text("Accuracies are means over samples with a 95% bootstrap interval; needle columns at the shortest and "
                "longest context; held-out loss is the assistant-token loss on held-out instruction data.")
    report.table(*_overview(summaries, plan, labels, adapters))
    _paper_comparison(report, found)

    for name, task in TASKS.items():
        if name in results:
            task.section(report, results[name].summary, figures, results[name].settings)
            if name == "icl":
                _icl_prompt_lengths(report, results[name].summary, plan)
    if LOSS in summaries:
        _heldout_section(report, summaries[LOSS], figures)
    _diffora_section(report, out_dir, plan)
    _training_section(report, base_path, adapters, figures, plan)
    _how_it_was_run(report, plan, base_path, adapters, state, command)
    md, _ = report.write(out_dir)
    write_run_record(out_dir, plan, base_path, state, command)
    return md


def write_run_record(out_dir: str, plan: DemoPlan, base_path: str, state: DemoState, command: str | None) -> str:
    """OUT/run.json: what re-derives the report's numbers (the exact command, the plan, the versions)
    and what the run cost (every stage's seconds and their sum)."""
    seconds = {name: entry.get("seconds") for name, entry in state.stages.items() if entry.get("done")}
    return write_json(os.path.join(out_dir, "run.json"), {
        "command": command, "base": plan.base_model or "the embedded default base", "base_path": base_path,
        "plan": dataclasses.asdict(plan), "versions": _version_table(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": _threads()},
        "stage_seconds": seconds, "total_seconds": round(sum(v or 0.0 for v in seconds.values()), 1)})


def _icl_prompt_lengths(report: Report, icl: dict, plan: DemoPlan) -> None:
    tokens = {k: v.get("prompt_tokens") for k, v in icl["base"].items()} if "base" in icl else {}
    if tokens:
        report.text("Prompt length (tokens) per shot count: " + ", ".join(f"{k}: {v}" for k, v in tokens.items())
                    + f"; fine-tuning length {plan.train_max_length}.")


# -- the verdicts, first ------------------------------------------------------------------------

def fine_tuning_seeds(plan: DemoPlan) -> list[int]:
    """The seeds each model is fine-tuned with: the demo trains every model once, with the training
    settings' seed (the trainer's default when they name none)."""
    return [plan.training.get("seed", DEFAULT_TRAINING["seed"])]


def verdict_grid(found: list[Finding], models: tuple[str, ...]) -> tuple[list[str], list[str], dict]:
    """The grid of verdicts: rows (a finding, or a finding and one of its measures where it has
    several per model), columns (the models the verdicts are about, in the plan's order) and
    {(row, column): verdict}. A finding with no verdict keeps an empty row."""
    rows, cells, columns = [], {}, []
    for f in found:
        for cell in f.cells:
            if cell.model not in columns:
                columns.append(cell.model)
    seen = list(columns)
    columns = sorted(seen, key=lambda m: (models.index(m) if m in models else len(models), seen.index(m)))
    for f in found:
        measures = list(dict.fromkeys(c.measure for c in f.cells))
        if not measures:
            rows.append(f"{f.name} (not measured)")
        for measure in measures:
            rows.append(f"{f.name}: {MEASURES.get(measure, measure)}" if len(measures) > 1 or measure else f.name)
            for cell in f.cells:
                if cell.measure == measure:
                    cells[(len(rows) - 1, columns.index(cell.model))] = cell.verdict
    return rows, columns, cells


def _verdicts(report: Report, found: list[Finding], plan: DemoPlan, base_path: str, out_dir: str,
              summaries: dict | None = None) -> None:
    report.heading(VERDICTS)
    verdicts = [v for f in found for v in f.verdicts]
    counts = ", ".join(f"{verdicts.count(k)} {k}" for k in VERDICT_COLOURS)
    seeds = fine_tuning_seeds(plan)
    report.text(f"Each cell is one verdict of this run against a finding of the paper (or of the work it builds on), "
                f"decided by a paired bootstrap over the same samples: agrees (the 95% interval of the difference "
                f"lies on the paper's side of zero), disagrees (on the other side), cannot tell (it holds zero). "
                f"{len(verdicts)} verdicts: {counts}. Behind every verdict: {len(seeds)} fine-tuning seed"
                f"{'s' if len(seeds) > 1 else ''} (seed {', '.join(map(str, seeds))}) per model; intervals are over "
                f"evaluation samples only ({plan.nih_samples} per needle task and length, {plan.icl_samples} per ICL "
                "shot count), so none of them covers what another fine-tuning seed would change. The numbers "
                "behind each cell are in \"The paper's findings beside the demo's\" below; how the run was made is at "
                "the end.")
    if not found:
        report.text("No finding of the paper can be checked with these models and tasks (most compare LoRA-8 "
                    "with the DiffLoRA variants on needles or ICL).")
    rows, columns, cells = verdict_grid(found, plan.models)
    if rows and columns:
        path = category_grid(rows, columns, cells, VERDICT_COLOURS, os.path.join(out_dir, GRID),
                             "the paper's findings (rows) x the model each verdict is about (columns)")
        report.image(path, "verdicts: agrees / disagrees / cannot tell, finding by model (blank: not compared; "
                     "what each row compares is in the table below)")
        report.table(["finding", *columns], [[row] + [cells.get((i, j), "") for j in range(len(columns))]
                                             for i, row in enumerate(rows)])
    if found:
        report.table(["finding", "what each verdict compares"],
                     [[f.name, f.compares + ("" if f.verdicts else " Not measured in this run.")] for f in found])
    report.heading(WHY_DISAGREE, level=3)
    report.text(_why_disagree(found, plan, base_path))
    broken = broken_fine_tunes((summaries or {}).get(LOSS, {}))
    if broken:
        report.text("Fine-tunes that left the model worse than it started, by held-out loss (its 95% interval wholly "
                    "above the base model's): " + ", ".join(f"{m} {loss:.2f}" for m, loss in broken.items())
                    + f" against the base's {summaries[LOSS]['base']['mean']:.2f}. Where these fall behind LoRA, "
                    "the verdict records a fine-tune that damaged the model under this recipe (learning rate, "
                    "steps); it does not isolate what differential attention does once trained well.")


def broken_fine_tunes(loss: dict) -> dict[str, float]:
    """Adapters whose held-out loss interval lies wholly above the base model's interval."""
    base = loss.get("base")
    if not base:
        return {}
    return {m: e["mean"] for m, e in loss.items() if m != "base" and e["ci_low"] > base["ci_high"]}


def _why_disagree(found: list[Finding], plan: DemoPlan, base_path: str) -> str:
    """The one explanation of why a verdict can disagree, which each disagreement further down refers to."""
    total = sum(len(f.verdicts) for f in found)
    against = [f.name for f in found if "disagrees" in f.verdicts]
    n = sum(f.verdicts.count("disagrees") for f in found)
    head = (f"Here {n} of the {total} verdicts disagree (in {', '.join(against)})." if n else
            f"Here none of the {total} verdicts disagrees.")
    config = _read_json(os.path.join(base_path, "config.json")) or {}
    base = (f"the base has {_count_parameters(base_path):,} parameters ({config.get('num_hidden_layers')} layers, "
            f"hidden {config.get('hidden_size')})")
    widths = [c.diff.high - c.diff.low for f in found for c in f.cells if c.diff is not None]
    width = (f", the 95% intervals of this run's differences are {statistics.median(widths):.2f} wide (the median)"
             if widths else "")
    return (f"{head} A {len(plan.models)}-adapter comparison on a model this small, trained this briefly on "
            f"generated data, need not behave like a 1B model trained on Tulu-2; before reading a disagreement as "
            f"evidence against the paper, weigh three things. A small base: {base}, against the paper's "
            f"Llama-3.2-1B-Instruct; a variant may lack the room to show an effect the paper measured, or show one "
            f"that the paper's scale hides. Few steps: each adapter is fine-tuned for {_steps(plan.training)} on "
            f"generated data, so a method that needs longer to find its footing is judged early. The interval "
            f"width the sample count allows: with {plan.nih_samples} samples per needle task and length and "
            f"{plan.icl_samples} per ICL shot count{width}; a true difference smaller than that reads as cannot "
            f"tell, and with {total} verdicts about one in forty can land on the wrong side of zero by chance "
            f"alone; with one fine-tuning seed per model, no interval covers what another seed would change. The "
            "demo reports what it measured rather than the paper's result.")


def _evaluation_design(report: Report, plan: DemoPlan, found: list[Finding]) -> None:
    """What the fine-tuning data shares with the evaluations, and why the sample counts are what they
    are (with the interval widths they give)."""
    report.heading(DESIGN)
    if plan.train_data:
        report.text(f"Fine-tuning data: {plan.train_data}, chosen by the user; which evaluation formats it contains "
                    "is not known to this report.")
    else:
        icl = ("split in two by class: the fine-tuning conversations draw from one half, the ICL evaluation from "
               "the other, so no evaluated sentence was seen in fine-tuning" if plan.icl_split else
               "shared by the fine-tuning conversations and the evaluation (the embedded base was pretrained on "
               "every one of them already); the class-to-number mapping is drawn afresh for every prompt, so a "
               "seen sentence does not give away its answer")
        report.text("The fine-tuning data is generated, and it contains the formats of two evaluations: half of its "
                    "conversations are RULER-format needle questions (MK-2, MK-3 and MV over needle, essay and noise "
                    "haystacks, at most "
                    f"{plan.instruction_units} haystack units), 30% are HELMET-format in-context classification over "
                    "the bundled topic sentences, 20% are short questions with one right answer. No evaluation sample "
                    "is in it: the needle evaluation draws its keys, values and haystacks from its own seed. The "
                    f"topic sentences are {icl}. Degeneration prompts and the attention-mass prompts are not in the "
                    "fine-tuning data; the held-out loss is on conversations of the same mixture left out of it.")
    half = 1.96 * (0.25 * 0.75 / plan.nih_samples) ** 0.5
    widths = [c.diff.high - c.diff.low for f in found for c in f.cells if c.diff is not None]
    measured = (f" In this run the paired differences behind the verdicts have 95% intervals {min(widths):.2f} to "
                f"{max(widths):.2f} wide (median {statistics.median(widths):.2f})." if widths else "")
    report.text(f"Sample counts: {plan.nih_samples} per needle task and length and {plan.icl_samples} per ICL shot "
                f"count, the same samples for every model. At {plan.nih_samples} samples an accuracy near 0.25 has a "
                f"95% interval of about +-{half:.2f}; a paired difference between two models is narrower when they "
                f"fail on the same samples and wider when they fail on different ones.{measured} A difference smaller "
                "than its interval's half-width reads as cannot tell.")


def _steps(train: dict) -> str:
    return (f"{train.get('max_steps') or str(train.get('num_train_epochs', 1)) + ' epoch(s)'} steps of batch "
            f"{train.get('per_device_train_batch_size', 1)} x {train.get('gradient_accumulation_steps', 1)}")


# -- how it was run (last) ----------------------------------------------------------------------

def _finish(recipe: dict) -> str:
    """The recipe's ICL finishing phase in words ("" when it has none; recipes before version 10 have
    one part, later ones a list)."""
    parts = recipe.get("icl_finish") or []
    parts = [p for p in ([parts] if isinstance(parts, dict) else parts) if p.get("steps")]
    return "".join(f", then {p['steps']} steps of {p['batch_size']} conversations "
                   f"({p['icl_share']:.0%} many-shot in-context classification) with attention supervision"
                   for p in parts)


def _how_it_was_run(report: Report, plan: DemoPlan, base_path: str, adapters: dict, state: DemoState,
                    command: str | None) -> None:
    report.heading(HOW_RUN)
    if command:
        report.text(f"Command: `{command}`")
    config = _read_json(os.path.join(base_path, "config.json")) or {}
    recipe = _read_json(os.path.join(base_path, "recipe.json"))
    params = _count_parameters(base_path)
    shape = (f"{config.get('num_hidden_layers')} layers, hidden {config.get('hidden_size')}, "
             f"{config.get('num_attention_heads')} heads / {config.get('num_key_value_heads')} key-value heads, "
             f"vocabulary {config.get('vocab_size')}, {params:,} parameters")
    if recipe:
        report.text(f"Base model: the project's default Llama-architecture model ({shape}), pretrained by the project "
                    f"for {recipe['steps']} steps of {_batch_shape(recipe)} on its generated "
                    f"corpus (RULER-format retrieval conversations, in-context classification, short answers, prose; "
                    f"{recipe['documents']} documents){_finish(recipe)}, {_where(base_path)} (building it took "
                    f"{recipe.get('build_seconds', '?')} s when it was built).")
    else:
        report.text(f"Base model: {base_path} ({shape}).")
    train = plan.training
    data = plan.train_data or f"{plan.train_examples} generated chat conversations (retrieval over contexts, " \
                              "in-context classification, short answers)"
    report.text(f"Fine-tuning, identical for every model (same data, order, steps and seed): {data}; "
                f"{_steps(train)}, learning rate {train.get('learning_rate')}, max length {plan.train_max_length}, "
                "loss on assistant tokens only, through `difflora train`'s pipeline (transformers Trainer).")
    if plan.cap_ranks and config.get("hidden_size"):
        saved = {name: _read_json(os.path.join(folder, "adapter_config.json")) or {}
                 for name, folder in adapters.items()}
        ranks = ", ".join(f"{name} r={c['r']}" for name, c in saved.items()
                          if c.get("peft_type") != "LORA" and "r" in c)
        hidden = config["hidden_size"]
        fits = hidden // 4 >= 64 and hidden // 8 >= 32
        report.text(f"Ranks: the presets' r=64 and r=32 are sized for hidden 2048 and capped at hidden/4 and "
                    f"hidden/8; on this base (hidden {hidden}) "
                    + ("they fit under the caps, so they are the presets' own" if fits else "the caps lower them")
                    + f"; alpha = 2r as in the presets (as each adapter_config.json records: {ranks}). LoRA keeps r=8 "
                    "on q, k, v, o, gate, up and down.")
    rows = []
    for name, folder in adapters.items():
        adapter_config = _read_json(os.path.join(folder, "adapter_config.json")) or {}
        history = _read_json(os.path.join(folder, "log_history.json")) or []
        losses = [h["loss"] for h in history if "loss" in h]
        rows.append([name, _describe_method(adapter_config), f"{_count_parameters(folder):,}",
                     f"{losses[-1]:.3f}" if losses else "", _seconds(state.seconds(f"train:{name}"))])
    if rows:
        report.table(["model", "adapter", "trainable parameters", "last training loss", "fine-tuning time (s)"], rows)
    report.text(f"Evaluated: base and every adapter, loaded from disk with from_pretrained. Needle in a haystack "
                f"{', '.join(t.upper() for t in plan.nih_tasks)} at {', '.join(map(str, plan.nih_lengths))} tokens "
                f"({plan.nih_samples} samples each; fine-tuning length {plan.train_max_length}); many-shot ICL at "
                f"{', '.join(map(str, plan.icl_shots))} shots ({plan.icl_samples} samples); attention mass on "
                f"{plan.attention_prompts} MK-2 prompts of {plan.attention_length} tokens; degeneration on the bundled "
                f"free-form prompts ({plan.degeneration_tokens} new tokens); held-out loss on {plan.heldout_examples} "
                "held-out conversations. Greedy decoding. One fine-tuning seed (time on a CPU allows no more); the "
                "intervals are over evaluation samples.")
    stage_rows = [[name, _seconds(entry.get("seconds")), entry.get("finished", "")]
                  for name, entry in state.stages.items() if entry.get("done")]
    report.text(f"Measured on {platform.machine()} with {os.cpu_count()} CPU(s) visible, "
                f"{_threads()} torch thread(s). Stage times (seconds, from {os.path.basename(state.path)}; a resumed "
                "run adds the time of the invocations that did the work):")
    report.table(["stage", "seconds", "finished"], stage_rows)
    report.text(f"Versions: {_versions()}.")
    report.text(f"Reproduce: `{command or 'difflora demo'}` (rerunning the same command resumes an interrupted run; "
                "on the embedded base, `--rebuild-base` pretrains the base model again).")


def _version_table() -> dict[str, str]:
    from .. import __version__

    versions = {"difflora": __version__}
    for package in ("torch", "transformers", "peft", "accelerate"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {**versions, "Python": sys.version.split()[0]}


def _versions() -> str:
    return ", ".join(f"{package} {version}" for package, version in _version_table().items())


def _describe_method(adapter_config: dict) -> str:
    if adapter_config.get("peft_type") == "LORA":
        return f"LoRA r={adapter_config.get('r')} on {', '.join(sorted(adapter_config.get('target_modules') or []))}"
    parts = [f"negative r={adapter_config.get('r')}"]
    if adapter_config.get("positive_r"):
        parts.append(f"positive r={adapter_config['positive_r']}")
    parts.append(f"lambda {adapter_config.get('lambda_mode')}"
                 + (f" {adapter_config['lambda_init']}" if adapter_config.get("lambda_init") is not None else ""))
    if adapter_config.get("negative_base") == "shared":
        parts.append("shared base" + (", rescaled" if adapter_config.get("rescale") else ""))
    if adapter_config.get("negative_keys") == "shared":
        parts.append("shared keys (one attention call, base-size cache)")
    if adapter_config.get("group_norm"):
        parts.append("GroupNorm")
    return "DiffLoRA: " + ", ".join(parts)


def _base_quality(report: Report, plan: DemoPlan, summaries: dict) -> None:
    report.heading("Base model quality")
    mk2 = summaries.get("nih", {}).get("base", {}).get("mk2", {})
    if not mk2:
        report.text("MK-2 was not evaluated, so the base model's retrieval is not measured in this run.")
        return
    shortest = min(mk2, key=int)
    estimate = mk2[shortest]
    enough = estimate["mean"] >= 0.5
    report.text(f"At the shortest context ({shortest} tokens) the base model retrieves {fmt(estimate)} of the MK-2 "
                f"needles ({estimate['n']} samples). "
                + ("That is at least half, so the base can retrieve and the comparisons below mean something."
                   if enough else "That is less than half: the base model retrieves too little for the needle "
                   "comparisons to mean much in this run."))


def _overview(summaries: dict, plan: DemoPlan, labels: list[str], adapters: dict) -> tuple[list[str], list[list]]:
    header, columns = ["model"], []
    nih = summaries.get("nih", {})
    lengths = sorted(plan.nih_lengths)
    for task in plan.nih_tasks:
        for n in dict.fromkeys((lengths[0], lengths[-1])):
            header.append(f"{task.upper()}@{n}")
            columns.append(lambda lab, t=task, n=n: _cell(nih.get(lab, {}).get(t, {}), n))
    icl = summaries.get("icl", {})
    if icl:
        top = max(plan.icl_shots)
        header.append(f"ICL@{top} shots")
        columns.append(lambda lab: _cell(icl.get(lab, {}), top))
    att = summaries.get("attention", {})
    if att:
        header.append("net BOS mass")
        columns.append(lambda lab: f"{att[lab]['mean']['net'].get('bos', 0.0):.3f}" if lab in att else "")
    deg = summaries.get("degeneration", {})
    if deg:
        header.append("degenerate rate")
        columns.append(lambda lab: fmt(deg[lab]["rate"]) if lab in deg else "")
    loss = summaries.get("loss", {})
    if loss:
        header.append("held-out loss")
        columns.append(lambda lab: fmt(loss[lab]) if lab in loss else "")
    return header, [[lab] + [c(lab) for c in columns] for lab in labels]


def _cell(per_key: dict, key) -> str:
    value = lookup(per_key, key)
    return fmt(value) if value else ""


# -- the paper beside the demo -------------------------------------------------------------------

def _paper_comparison(report: Report, found: list[Finding]) -> None:
    report.heading("The paper's findings beside the demo's")
    report.text("The paper fine-tunes Llama-3.2-1B-Instruct on Tulu-2; the demo fine-tunes a CPU-sized model for a "
                "minute on generated data, so it compares the shape of the results, not their size. Each verdict comes "
                "from a paired bootstrap over the same samples: agrees (the 95% interval of the difference is on the "
                "paper's side of zero), disagrees (on the other side), cannot tell (it holds zero).")
    report.table(["finding", "paper", "demo (difference, 95% interval)", "verdict"],
                 [[f.name, f.paper, "; ".join(f.measured) or "not measured", f.verdict] for f in found])
    for f in found:
        if "disagrees" in f.verdicts:
            which = [m for m, v in zip(f.measured, f.verdicts) if v == "disagrees"]
            report.text(f"Where the demo disagrees ({f.name}): the paper finds {f.paper}, but here "
                        f"{'; '.join(which)}. Why it can: \"{WHY_DISAGREE}\", at the top.")
    report.text(f"Not run here (they need a real model): {FINDINGS['general']} {FINDINGS['rag']}")


# -- held-out loss and training curves ----------------------------------------------------------

def _heldout_section(report: Report, loss: dict, figures: str) -> None:
    report.heading("Held-out loss")
    report.text("Mean assistant-token cross-entropy on held-out instruction data of the fine-tuning mixture, "
                "with a 95% "
                "bootstrap interval over conversations.")
    report.table(["model", "held-out loss"], [[label, fmt(e)] for label, e in loss.items()])
    path = grouped_bars({label: {"held-out loss": e["mean"]} for label, e in loss.items()}, "held-out loss",
                        "cross-entropy (nats per token)", os.path.join(figures, "heldout_loss.png"),
                        {label: {"held-out loss": (e["ci_low"], e["ci_high"])} for label, e in loss.items()})
    report.image(path, "held-out loss with 95% bootstrap intervals")


def _training_section(report: Report, base_path: str, adapters: dict, figures: str, plan: DemoPlan) -> None:
    report.heading("Training")
    report.image(plot_losses(base_path, adapters, os.path.join(figures, "loss_curves.png")),
                 "loss curves: the base model's pretraining, and fine-tuning with identical data, steps and seeds")
    lambda_plot = plot_lambdas(adapters, os.path.join(figures, "lambda_per_layer.png"))
    if lambda_plot:
        report.image(lambda_plot, "lambda per layer over fine-tuning (fixed-lambda variants stay flat)")
    final = final_lambdas(adapters)
    if final:
        report.image(plot_final_lambdas(final, os.path.join(figures, "lambda_final.png")),
                     "lambda per layer at the end of fine-tuning (token-wise lambda: its logged mean)")
        report.table(["model", "lambda, first layer -> last layer"],
                     [[name, " ".join(f"{v:.2f}" for _, v in sorted(per_layer.items()))]
                      for name, per_layer in final.items()])


def _diffora_section(report: Report, out_dir: str, plan: DemoPlan) -> None:
    """What each DiffoRA search kept, with its DAM heat map."""
    chosen = [m for m in plan.models if m in DIFFORA_MODELS]
    if not chosen:
        return
    report.heading("DiffoRA selections")
    report.text(f"Each DiffoRA model ran `difflora select` first: {plan.select_steps} alternating search steps "
                "(adapter weights on the training split, architecture weights on a held-out split), then the DAM was "
                "discretised and the kept adapters were fine-tuned from their search weights (init_from) with the "
                "same data and steps as every other model. diffora-lora: LoRA r=16 candidates on every module, kept "
                "within LoRA-8's parameter count; diffora-difflora: difflora-64 on the top half of the layers.")
    for name in chosen:
        folder = os.path.join(out_dir, "select", name)
        dam = _read_json(os.path.join(folder, "dam.json"))
        if not dam:
            continue
        report.text(f"{name}: kept {len(dam['kept'])} candidates, {dam.get('trainable_params', 0):,} trainable "
                    f"parameters (the uniform {DIFFORA_MODELS[name]} has "
                    f"{_count_parameters(os.path.join(out_dir, 'adapters', DIFFORA_MODELS[name])):,}): "
                    + ", ".join(f"`{m}`" for m in dam["kept"]))
        report.image(os.path.join(folder, "dam.png"), f"{name}: the Differential Adaptation Matrix after the search")


def _history(folder: str, name: str = "log_history.json") -> list[dict]:
    return _read_json(os.path.join(folder, name)) or []


def base_training_curves(history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """The base model's logged losses by name: the language-model loss (`lm_loss`, or `loss` where the
    training had no attention supervision) and the attention-supervision loss (`copy_loss`). Their sum,
    `loss`, is not one curve: the ICL finishing phase adds ICL's own supervision to it."""
    curves: dict[str, list[tuple[int, float]]] = {"language model": [], "attention supervision": []}
    for h in history:
        lm = h.get("lm_loss", h.get("loss") if "copy_loss" not in h else None)
        if lm is not None and "step" in h:
            curves["language model"].append((h["step"], lm))
        if "copy_loss" in h and "step" in h:
            curves["attention supervision"].append((h["step"], h["copy_loss"]))
    return {name: points for name, points in curves.items() if points}


def _plot_base_training(ax, history: list[dict]) -> None:
    for (name, points), style in zip(base_training_curves(history).items(), ("-", "--")):
        ax.plot(*zip(*points), color="black", linestyle=style, label=name)
    finishing = [h["step"] for h in history if h.get("phase") == "icl_finish" and "step" in h]
    if finishing:  # where pretraining ends and the ICL finishing parts begin
        start = max(h["step"] for h in history if h.get("phase") != "icl_finish" and "step" in h)
        ax.axvspan(start, max(finishing), color="tab:blue", alpha=0.12, label="ICL finishing")
    ax.set_yscale("log")
    ax.set_title("base model: pretraining" + (", then ICL finishing" if finishing else ""), fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_losses(base_path: str, adapters: dict[str, str], path: str) -> str:
    history = _history(base_path, "pretraining_log.json")
    pretraining = base_training_curves(history)
    fig, axes = plt.subplots(1, 2 if pretraining else 1, figsize=(11 if pretraining else 6.4, 4.0), squeeze=False)
    if pretraining:
        _plot_base_training(axes[0][0], history)
    ax = axes[0][-1]
    plotted = 0
    for name, folder in adapters.items():
        points = [(h["step"], h["loss"]) for h in _history(folder) if "loss" in h]
        if points:
            ax.plot(*zip(*points), label=name, marker=".")
            plotted += 1
    ax.set_title("fine-tuning (assistant tokens)", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=7)
    else:  # a run shorter than the logging interval logs no loss; say so rather than draw empty axes
        ax.text(0.5, 0.5, "no fine-tuning loss was logged", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)


def plot_lambdas(adapters: dict[str, str], path: str) -> str | None:
    per_model = {name: s for name, folder in adapters.items() if (s := lambda_series(_history(folder)))}
    if not per_model:
        return None
    n_layers = max(len(layers) for layers in per_model.values())
    fig, axes = plt.subplots(1, len(per_model), figsize=(3.2 * len(per_model), 3.4), sharey=True, squeeze=False)
    colour = plt.get_cmap("viridis")  # by depth: a legend of 30 layers would hide the curves
    for ax, (name, layers) in zip(axes[0], per_model.items()):
        for layer, points in sorted(layers.items()):
            ax.plot(*zip(*points), label=f"layer {layer}", color=colour(layer / max(1, n_layers - 1)))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("lambda")
    if n_layers <= 8:
        axes[0][-1].legend(fontsize=6)
    fig.suptitle("lambda per layer over fine-tuning" + ("" if n_layers <= 8 else
                 f" (colour: layer 0, dark, to layer {n_layers - 1}, yellow)"))
    return save_figure(fig, path)


def final_lambdas(adapters: dict[str, str]) -> dict[str, dict[int, float]]:
    """{model: {layer: lambda}} at the last logged step of each DiffLoRA model's fine-tuning."""
    out = {}
    for name, folder in adapters.items():
        layers = lambda_series(_history(folder))
        if layers:
            out[name] = {int(layer): points[-1][1] for layer, points in layers.items()}
    return out


def plot_final_lambdas(final: dict[str, dict[int, float]], path: str) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, per_layer in final.items():
        layers = sorted(per_layer)
        ax.plot(layers, [per_layer[n] for n in layers], marker=".", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel("lambda")
    ax.set_title("lambda per layer after fine-tuning", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


# -- small helpers ------------------------------------------------------------------------------

def _read_json(path: str):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _where(base_path: str) -> str:
    shipped = os.path.realpath(base_path) == os.path.realpath(default_base_path(verify=False))
    return f"shipped with the package at {base_path}" if shipped else f"cached at {base_path}"


def _batch_shape(recipe: dict) -> str:
    """A recipe's batch in words: rows x block length, or whole documents when seq_len is 0."""
    if recipe.get("seq_len"):
        return f"{recipe['batch_size']} x {recipe['seq_len']} tokens"
    return f"{recipe['batch_size']} documents (one per row)"


def _count_parameters(folder: str) -> int:
    """Parameters stored in a folder's safetensors files (all of a model; an adapter's trainable ones)."""
    from safetensors import safe_open

    total = 0
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(folder, name), "pt") as f:
                for key in f.keys():
                    shape = f.get_slice(key).get_shape()
                    n = 1
                    for d in shape:
                        n *= d
                    total += n
    return total


def _seconds(value) -> str:
    return f"{value:.0f}" if isinstance(value, int | float) else ""


def _threads() -> int:
    import torch

    return torch.get_num_threads()
