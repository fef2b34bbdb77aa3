"""LoRA on every module at a given parameter count (the baseline a selection is compared with)."""

import pytest
from peft import get_peft_model

from difflora.errors import UserError
from difflora.select import lora_for_budget, lora_params_per_rank
from difflora.testing import tiny_model


def _trainable(method):
    model = get_peft_model(tiny_model("llama", layers=2), method.peft_config())
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("target", [1000, 5000, 20000])
def test_rank_matches_the_budget(target):
    model = tiny_model("llama", layers=2)
    matched = lora_for_budget(model, target)
    per_rank = lora_params_per_rank(model)
    assert matched.params == _trainable(matched.method) == matched.rank * per_rank
    # the nearest rank: one more or one less would be further from the target
    assert abs(matched.params - target) <= abs(matched.params + per_rank - target)
    if matched.rank > 1:
        assert abs(matched.params - target) <= abs(matched.params - per_rank - target)
    assert matched.method.options["lora_alpha"] == 2 * matched.rank


def test_reads_shapes_from_a_saved_model_without_loading_weights(tiny_base_dir):
    assert lora_params_per_rank(str(tiny_base_dir)) == lora_params_per_rank(tiny_model("llama", vocab_size=384,
                                                                                       layers=2))


def test_bad_count():
    with pytest.raises(UserError, match="positive integer"):
        lora_for_budget(tiny_model("llama", layers=2), 0)
