"""The paper's findings (docs/evaluation.md lists them) checked against what the demo measured.

Each finding compares two models on the same samples, so the comparison is a paired bootstrap of
the per-sample differences: the demo agrees with the paper when the 95% interval of the difference
lies on the paper's side of zero, disagrees when it lies on the other side, and cannot tell when it
holds zero. Where a finding is about several DiffLoRA variants, each variant gets its own verdict.
Each verdict also records the model it is about and, where a finding has several, its measure
(Finding.cells): the report's verdict grid is drawn from them.
Samples are paired by their id in the tasks' per-sample rows (evaluation.task.sample_id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..evaluation.stats import Estimate, paired_difference
from ..evaluation.task import SampleId, TaskResult, sample_id

DIFFLORA = ("difflora-64", "difflora-64-fixed", "difflora-32", "difflora-32-gn")
SHARED_BASE = ("shared-diff", "shared-diff-kv")  # Q2 = W_Q x + a low-rank update, rescaled to start at the base
SHARED_KEYS = "difflora-shared-kv"  # the shared-key form; compared with the paper's variants, not counted among them
NEAR = 0.15  # "near the base model": the whole interval of the difference within +-NEAR
SMALL = 0.05  # attention mass: relative changes smaller than this count as no change


@dataclass
class Verdict:
    """One verdict as the report's grid draws it: the model it is about (the grid's column), the part
    of the finding it measures ("" where the finding has one measure per model) and the paired
    difference it came from (None where there is no interval)."""

    model: str
    verdict: str
    measure: str = ""
    diff: Estimate | None = None


@dataclass
class Finding:
    name: str
    paper: str
    compares: str = ""  # one sentence: what each of its verdicts compares
    measured: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    cells: list[Verdict] = field(default_factory=list)  # one per verdict, in the same order

    def add(self, measured: str, verdict: str, model: str, measure: str = "", diff: Estimate | None = None) -> None:
        self.measured.append(measured)
        self.verdicts.append(verdict)
        self.cells.append(Verdict(model, verdict, measure, diff))

    @property
    def verdict(self) -> str:
        if not self.verdicts:
            return "not measured"
        kinds = set(self.verdicts)
        if len(kinds) == 1:
            return self.verdicts[0]
        counts = ", ".join(f"{self.verdicts.count(k)} {k}"
                           for k in ("agrees", "disagrees", "cannot tell") if k in kinds)
        return f"mixed ({counts})"


def direction(diff: Estimate) -> str:
    """The verdict for a difference the paper says is positive."""
    if diff.low > 0:
        return "agrees"
    if diff.high < 0:
        return "disagrees"
    return "cannot tell"


def show(diff: Estimate) -> str:
    return f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"


def _pool(results: dict[str, TaskResult], name: str, label: str, /, by: tuple[str, ...] | None = None,
          **where) -> dict[SampleId, float]:
    """One model's per-sample scores of task `name`, keyed by sample id (or by the fields `by`),
    only the rows whose fields equal `where` (e.g. task="mk2", shots=24)."""
    result = results.get(name)
    if result is None:
        return {}
    fields = by or result.sample_fields
    return {sample_id(r, fields): float(r[result.score_field]) for r in result.rows
            if r["model"] == label and all(r[k] == v for k, v in where.items())}


def findings(results: dict[str, TaskResult], models: tuple[str, ...], shots: tuple[int, ...],
             train_length: int) -> list[Finding]:
    """results: {task: TaskResult holding every model's summary and per-sample rows}."""
    diff_models = [m for m in DIFFLORA if m in models]
    out = []
    if "nih" in results and "lora-8" in models:
        out.append(_versus(results, "mk2", "lora-8", diff_models, lora_ahead=True,
                           name="NIH MK-2", paper="LoRA far ahead of every DiffLoRA variant"))
        mv = _versus(results, "mv", "lora-8", diff_models, lora_ahead=False,
                     name="NIH MV", paper="every DiffLoRA variant far ahead of LoRA")
        if not any(r.get("task") == "mv" for r in results["nih"].rows):
            mv.measured.append("not run (the default runs MK-2 only; add `--needles mk2 mv`)")
        out.append(mv)
    if "icl" in results:
        out += _icl_findings(results, models, diff_models, shots, train_length)
    if "attention" in results and "base" in results["attention"].summary:
        out.append(_attention_finding(results["attention"].summary, diff_models))
    if {"difflora-32", "difflora-32-gn"} <= set(models):
        out.append(_group_norm_finding(results))
    if "degeneration" in results and "lora-8" in models:
        f = Finding("Degenerate generation", "DiffLoRA models sometimes degenerate (loops, '0a0a0a'); LoRA is not "
                    "reported to", "Each variant's rate of degenerate answers minus LoRA-8's, on the same free-form "
                    "prompts; it agrees when the variant degenerates more.")
        for m in diff_models:
            d = paired_difference(_pool(results, "degeneration", m), _pool(results, "degeneration", "lora-8"))
            if d:
                f.add(f"{m} - LoRA degenerate rate {show(d)}", direction(d), m, diff=d)
        out.append(f)
    shared = [m for m in SHARED_BASE if m in models]
    if shared and "difflora-32" in models and "nih" in results:
        f = Finding("Shared DIFF (the Shared DIFF Transformer's claim, not the paper)", "the shared-base form "
                    "retrieves keys better than the low-rank-only DIFF form", "Each shared-base model's needle "
                    "accuracy (shared-diff; shared-diff-kv, the same with shared keys and token-wise lambda) minus "
                    "difflora-32's, over every needle sample; it agrees when the shared-base form retrieves more.")
        for m in shared:
            d = paired_difference(_pool(results, "nih", m), _pool(results, "nih", "difflora-32"))
            if d:
                f.add(f"{m} - difflora-32, all needle samples {show(d)}", direction(d), m, diff=d)
        out.append(f)
    out += _diffora_findings(results, models)
    if SHARED_KEYS in models and diff_models:
        out.append(_shared_keys_finding(results, diff_models))
    return out


def _shared_keys_finding(results: dict[str, TaskResult], diff_models: list[str]) -> Finding:
    """difflora-shared-kv against each paper variant on every per-sample metric: does giving up the
    negative term's own keys (and the 1.5x cache) cost anything? A non-inferiority claim: agrees when
    the whole interval is above -NEAR (not worse by more than NEAR), disagrees when it is wholly below."""
    f = Finding("Shared keys (Differential Transformer V2, not the paper)",
                f"Differential Transformer V2's shared-key form (K2 = K1, "
                f"per-token lambda, the base model's cache) does as well as the paper's own-key variants (here: "
                f"not worse by more than {NEAR}; degeneration counts lower as better)",
                f"{SHARED_KEYS} against the grid column's own-key variant, on the same needle, ICL and "
                f"degeneration samples; it agrees when the shared-key form is not worse by more than {NEAR}, "
                f"disagrees when it is worse by more than that.")
    for task, sign in (("nih", 1), ("icl", 1), ("degeneration", -1)):
        for m in diff_models:
            d = paired_difference(_pool(results, task, SHARED_KEYS), _pool(results, task, m))
            if d:
                low, high = sorted((sign * d.low, sign * d.high))  # the difference with "better" positive
                f.add(f"{task}: {SHARED_KEYS} - {m} {show(d)}",
                      "agrees" if low >= -NEAR else "disagrees" if high < -NEAR else "cannot tell", m, task, d)
    return f


def _diffora_findings(results: dict[str, TaskResult], models: tuple[str, ...]) -> list[Finding]:
    """DiffoRA: selected modules against the uniform model, on every retrieval and ICL
    sample both were scored on."""
    pairs = [("diffora-lora", "lora-8", "DiffoRA-selected LoRA (DiffoRA's claim)",
              "at the same number of trainable parameters, DAM-selected modules beat LoRA on every module"),
             ("diffora-difflora", "difflora-64", "DAM-selected DiffLoRA layers (DiffoRA's selection on DiffLoRA)",
              "open in the DiffLoRA paper; DiffoRA's claim carried over: differential attention on the selected "
              "half of the layers does at least as well as on all layers")]
    out = []
    for selected, uniform, name, claim in pairs:
        if not {selected, uniform} <= set(models):
            continue
        f = Finding(name, claim, f"{selected} minus the uniform {uniform}, over every needle sample and every ICL "
                    "sample; it agrees when the selected modules score higher.")
        for task in ("nih", "icl"):
            d = paired_difference(_pool(results, task, selected), _pool(results, task, uniform))
            if d:
                f.add(f"{selected} - {uniform}, all {task} samples {show(d)}", direction(d), selected, task, d)
        out.append(f)
    return out


def _versus(results, needle_task, lora, diff_models, lora_ahead: bool, name: str, paper: str) -> Finding:
    task = needle_task.upper()
    f = Finding(name, paper, f"LoRA-8's {task} accuracy minus each variant's, on the same haystacks at every "
                "length; it agrees when LoRA is ahead." if lora_ahead else
                f"Each variant's {task} accuracy minus LoRA-8's, on the same haystacks at every length; it agrees "
                "when the variant is ahead.")
    lora_scores = _pool(results, "nih", lora, task=needle_task)
    for m in diff_models:
        mine = _pool(results, "nih", m, task=needle_task)
        d = paired_difference(lora_scores, mine) if lora_ahead else paired_difference(mine, lora_scores)
        if d:
            what = f"LoRA - {m}" if lora_ahead else f"{m} - LoRA"
            f.add(f"{what} {show(d)}", direction(d), m, diff=d)
    return f


def _icl_findings(results, models, diff_models, shots, train_length) -> list[Finding]:
    out = []
    top = max(shots)
    if "lora-8" in models:
        f = Finding(f"Many-shot ICL ({top} shots)", "DiffLoRA below LoRA", f"LoRA-8's accuracy at {top} shots "
                    "minus each variant's, on the same test examples; it agrees when LoRA is ahead.")
        for m in diff_models:
            d = paired_difference(_pool(results, "icl", "lora-8", shots=top), _pool(results, "icl", m, shots=top))
            if d:
                f.add(f"LoRA - {m} {show(d)}", direction(d), m, diff=d)
        out.append(f)
    if "base" in results["icl"].summary:
        f = Finding(f"Many-shot ICL ({top} shots), near the base", f"DiffLoRA near the base model (here: the "
                    f"interval of the difference within +-{NEAR})", f"Each variant's accuracy at {top} shots minus "
                    f"the base model's, on the same test examples; it agrees when the whole interval lies within "
                    f"+-{NEAR}, disagrees when it lies wholly outside.")
        for m in diff_models:
            d = paired_difference(_pool(results, "icl", m, shots=top), _pool(results, "icl", "base", shots=top))
            if d:
                f.add(f"{m} - base {show(d)}", "agrees" if -NEAR <= d.low and d.high <= NEAR else
                      "disagrees" if d.low > NEAR or d.high < -NEAR else "cannot tell", m, diff=d)
        out.append(f)
    # "worse as demonstrations grow past the training length": the longest prompts against the
    # longest shot count whose prompts still fit the fine-tuning length
    any_label = next(iter(results["icl"].summary.values()), {})
    tokens = {int(k): v.get("prompt_tokens", 0) for k, v in any_label.items()}
    inside = [k for k in sorted(tokens) if tokens[k] <= train_length]
    beyond = [k for k in sorted(tokens) if tokens[k] > train_length]
    if inside and beyond:
        k_in, k_out = inside[-1], beyond[-1]
        f = Finding("ICL past the fine-tuning length",
                    f"DiffLoRA worse as demonstrations grow past the training length "
                    f"(here {k_in} shots, {tokens[k_in]} tokens, against {k_out} shots, {tokens[k_out]} tokens; "
                    f"fine-tuning length {train_length})",
                    f"Each variant's accuracy at {k_in} shots (prompts within the fine-tuning length) minus its "
                    f"accuracy at {k_out} shots (past it), on the same test examples; it agrees when accuracy drops.")
        for m in diff_models:  # the same test examples at both shot counts: paired by test example
            d = paired_difference(_pool(results, "icl", m, by=("index",), shots=k_in),
                                  _pool(results, "icl", m, by=("index",), shots=k_out))
            if d:
                f.add(f"{m}: {k_in} shots - {k_out} shots {show(d)}", direction(d), m, diff=d)
        out.append(f)
    return out


def _attention_finding(attention: dict, diff_models) -> Finding:
    """Net mass per token on BOS, and the needle's mass against the rest of the context. There is
    no interval (a few prompts, averaged over layers), so a change under SMALL (relative) decides
    nothing."""
    f = Finding("Attention mass (Figure 4)", "DiffLoRA moves mass off BOS and slightly denoises around the needle "
                f"(no interval here: a change under {SMALL:.0%} counts as none)",
                f"Each variant's net attention mass per token on BOS against the base model's, on the same MK-2 "
                f"prompts; it agrees when the mass falls by more than {SMALL:.0%}, disagrees when it rises by more "
                "(no interval).")
    base = attention["base"]["mean"]["net"]
    base_bos, base_ratio = base.get("bos", 0.0), _needle_ratio(base)
    for m in diff_models:
        if m not in attention:
            continue
        net = attention[m]["mean"]["net"]
        bos, ratio = net.get("bos", 0.0), _needle_ratio(net)
        bos_change = (bos - base_bos) / base_bos if base_bos > 0 else 0.0
        f.add(f"{m}: BOS {bos:.3f} (base {base_bos:.3f}), needle/context {ratio:.2f} (base {base_ratio:.2f})",
              "agrees" if bos_change < -SMALL else "disagrees" if bos_change > SMALL else "cannot tell", m)
    return f


def _needle_ratio(mass: dict) -> float:
    context = (mass.get("before", 0.0) + mass.get("after", 0.0)) / 2
    return mass.get("needle", 0.0) / context if context > 0 else float("nan")


def _group_norm_finding(results: dict[str, TaskResult]) -> Finding:
    f = Finding("GroupNorm", "DiffLoRA-32 + GroupNorm destroys the pretrained model (average 0.15 against 0.42)",
                "difflora-32 minus difflora-32-gn, over every needle sample and every ICL sample; it agrees when "
                "the GroupNorm variant scores lower.")
    for task in ("nih", "icl"):
        d = paired_difference(_pool(results, task, "difflora-32"), _pool(results, task, "difflora-32-gn"))
        if d:
            f.add(f"{task}: difflora-32 - difflora-32-gn {show(d)}", direction(d), "difflora-32-gn", task, d)
    return f
