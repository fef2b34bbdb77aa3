"""Weight sharing: the exported adapter reproduces the search model, and what "reproduces" means.

The exported model must compute exactly what the search model computes with every dropped
candidate's architecture weight set to 0 and every kept one's to equivalent_gates (its own weight
where it is folded into the exported weights, else 1); see difflora/select/to_adapter.py.
"""

import copy

import pytest
import torch
from peft import PeftModel

from difflora.select import (
    SearchSettings,
    build_exported_model,
    build_search_model,
    discretize,
    equivalent_gates,
    export_method,
    inherit,
    run_search,
)
from difflora.select.to_adapter import save_adapter
from difflora.train.method_spec import MethodSpec

from .select_synthetic import TeacherStream, kl_to_teacher, perturb_v_proj, tiny_base

METHODS = {
    "lora": {"type": "lora", "r": 4, "lora_alpha": 8},
    "difflora-learned": {"type": "difflora", "preset": "difflora-64", "r": 8, "lora_alpha": 16},
    "difflora-fixed": {"type": "difflora", "preset": "difflora-64-fixed", "r": 8, "lora_alpha": 16},
    "difflora-positive": {"type": "difflora", "preset": "difflora-32", "r": 4, "lora_alpha": 8, "positive_r": 4},
}


def _searched(method, layers=4):
    """A search model after a short search, with architecture weights spread over (0, 1)."""
    base = tiny_base(layers=layers)
    fresh = copy.deepcopy(base)
    torch.manual_seed(0)
    search = build_search_model(base, MethodSpec.parse(method))
    stream = TeacherStream(perturb_v_proj(fresh, layer=1), seed=3, batch_size=4, length=16)
    run_search(search, stream, stream, SearchSettings(steps=6, learning_rate=1e-2), loss_fn=kl_to_teacher,
               progress=False)
    with torch.no_grad():  # weights far from 0.5 and from each other, so folding is really tested
        search.arch.logits.copy_(torch.randn(len(search.candidates), generator=torch.Generator().manual_seed(1)))
    return search, fresh


@pytest.mark.parametrize("name,folds", [("lora", True), ("difflora-learned", True), ("difflora-fixed", False),
                                        ("difflora-positive", False)])
def test_exported_adapter_reproduces_the_search_model(name, folds, tmp_path):
    search, fresh = _searched(METHODS[name])
    weights = search.arch().tolist()
    kept = discretize(weights, search.candidates, sampling_rate=0.5)
    inherited = inherit(search, kept)
    selected = export_method(search.method, kept)
    exported, folded = build_exported_model(copy.deepcopy(fresh), selected, kept, inherited)
    assert folded is folds
    gates = equivalent_gates(search.candidates, kept, inherited, folded)

    ids = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        with search.arch.fixed(gates):
            expected = search.model(input_ids=ids, use_cache=False).logits
        everything = search.model(input_ids=ids, use_cache=False).logits  # the relaxed model, nothing dropped
        got = exported(input_ids=ids).logits
        plain = fresh(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # not vacuous: the kept adapters change the base model, and the dropped ones did matter
    assert (got - plain).abs().max() > 1e-3
    assert (everything - expected).abs().max() > 1e-4

    # the saved folder is the same model, and trains exactly the kept adapters
    path = save_adapter(exported, None, str(tmp_path / "adapter"))
    loaded = PeftModel.from_pretrained(copy.deepcopy(fresh), path, is_trainable=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-6)
    trainable = sum(p.numel() for p in loaded.parameters() if p.requires_grad)
    assert trainable == sum(c.params for c in kept)


def test_lora_export_targets_exactly_the_kept_modules():
    search, fresh = _searched(METHODS["lora"], layers=2)
    kept = discretize(search.arch().tolist(), search.candidates, sampling_rate=0.25)
    selected = export_method(search.method, kept)
    assert selected.options["target_modules"] == [c.module_name for c in kept]
    exported, _ = build_exported_model(copy.deepcopy(fresh), selected, kept, inherit(search, kept))
    adapted = sorted(n.removeprefix("base_model.model.") for n, m in exported.named_modules() if hasattr(m, "lora_A")
                     and len(m.lora_A))
    assert adapted == sorted(c.module_name for c in kept)


def test_difflora_export_keeps_the_selected_layers():
    search, fresh = _searched(METHODS["difflora-fixed"])
    kept = discretize(search.arch().tolist(), search.candidates, sampling_rate=0.5)
    selected = export_method(search.method, kept)
    assert selected.options["layers_to_transform"] == [c.layer for c in kept]
    assert selected.preset == "difflora-64-fixed"
    import difflora

    exported, _ = build_exported_model(copy.deepcopy(fresh), selected, kept, inherit(search, kept))
    assert [m.layer_idx for m in difflora.difflora_layers(exported)] == [c.layer for c in kept]


def test_removing_the_gates_leaves_the_plain_adapter_model():
    search, _ = _searched(METHODS["lora"], layers=2)
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with search.arch.fixed(torch.ones(len(search.candidates))):
            all_on = search.model(input_ids=ids).logits
        gated = search.model(input_ids=ids).logits
        search.remove_gates()
        plain = search.model(input_ids=ids).logits
    torch.testing.assert_close(plain, all_on)
    assert (gated - plain).abs().max() > 1e-4
