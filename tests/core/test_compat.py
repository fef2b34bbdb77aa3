"""No silent drift: an attention class whose interface DiffLoRA does not reproduce is refused at
wrap time with one line naming the installed transformers and the tested range, and the model is
left untouched. The cache keyword of the installed release reaches the cache either way."""

import dataclasses
import inspect

import pytest
import torch
import transformers
from peft import get_peft_model

import difflora
from difflora import DiffLoRAConfig, compat
from difflora.testing import tiny_model

CACHE = compat.cache_kwarg_of(compat.attention_class(compat.family_of("llama")))


def _swap_first_attention(model, make_class):
    attn = model.model.layers[0].self_attn
    attn.__class__ = make_class(type(attn))
    return attn


def _with_forward(forward):
    return lambda base: type("DriftedAttention", (base,), {"forward": forward})


def _added_parameter(self, hidden_states, position_embeddings=None, attention_mask=None, sink_tokens=None,
                     **kwargs):
    raise AssertionError("never called: the wrap must be refused first")


def _renamed_cache(self, hidden_states, position_embeddings=None, attention_mask=None, kv_store=None, **kwargs):
    raise AssertionError("never called")


def _no_var_kwargs(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None):
    raise AssertionError("never called")


# Give the fakes the installed release's cache keyword where the test is about something else.
_added_parameter.__signature__ = inspect.signature(_added_parameter).replace(parameters=[
    *list(inspect.signature(_added_parameter).parameters.values())[:4],
    inspect.Parameter(CACHE, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    *list(inspect.signature(_added_parameter).parameters.values())[4:],
])


@pytest.mark.parametrize("forward,what", [
    (_added_parameter, "sink_tokens"),
    (_renamed_cache, "kv_store"),
    (_no_var_kwargs, "not a known signature"),
])
def test_unknown_forward_signature_is_refused_at_wrap_time(forward, what):
    model = tiny_model("llama", layers=2)
    with torch.no_grad():
        before = model(input_ids=torch.arange(3, 11)[None]).logits
    _swap_first_attention(model, _with_forward(forward))
    with pytest.raises(compat.UnsupportedTransformersError) as err:
        get_peft_model(model, DiffLoRAConfig(r=4))
    message = str(err.value)
    assert "\n" not in message
    assert what in message and f"transformers {transformers.__version__}" in message
    assert all(v in message for v in compat.TESTED_TRANSFORMERS)
    assert not difflora.difflora_layers(model), "nothing may be wrapped when one module is refused"
    model.model.layers[0].self_attn.__class__ = compat.attention_class(compat.family_of("llama"))
    with torch.no_grad():
        assert torch.equal(model(input_ids=torch.arange(3, 11)[None]).logits, before)


def test_missing_internal_attribute_is_refused():
    model = tiny_model("llama", layers=2)
    del model.model.layers[1].self_attn.scaling
    with pytest.raises(compat.UnsupportedTransformersError, match="has no scaling"):
        get_peft_model(model, DiffLoRAConfig(r=4))
    assert not difflora.difflora_layers(model)


def test_missing_qk_norm_is_refused_for_qwen3():
    model = tiny_model("qwen3", layers=2)
    del model.model.layers[0].self_attn.k_norm
    with pytest.raises(compat.UnsupportedTransformersError, match="k_norm"):
        get_peft_model(model, DiffLoRAConfig(r=4))


def test_installed_release_is_a_known_layout():
    for name in compat.FAMILIES:
        assert compat.cache_kwarg_of(compat.attention_class(compat.family_of(name))) in compat.CACHE_KWARGS


class _RecordingCache(transformers.DynamicCache):
    def __init__(self):
        super().__init__()
        self.updates = 0

    def update(self, *args, **kwargs):
        self.updates += 1
        return super().update(*args, **kwargs)


@pytest.mark.parametrize("keyword", compat.CACHE_KWARGS)
def test_layer_updates_the_cache_under_either_keyword(keyword):
    """Whichever name the decoder layer uses, the cache is updated (the 5.24 rename once left it
    untouched, silently) and holds [K1 | K2]."""
    model = get_peft_model(tiny_model("llama", layers=1), DiffLoRAConfig(r=4)).eval()
    layer = difflora.difflora_layers(model)[0]
    hidden = torch.randn(1, 5, layer.base_layer.q_proj.in_features)
    head_dim = layer.base_layer.head_dim
    cos, sin = torch.ones(1, 5, head_dim), torch.zeros(1, 5, head_dim)
    cache = _RecordingCache()
    with torch.no_grad():
        layer(hidden, position_embeddings=(cos, sin), attention_mask=None, **{keyword: cache})
    assert cache.updates == 1
    assert cache.layers[0].keys.shape[-1] == 2 * head_dim


def test_disabled_adapter_hands_the_cache_back_to_the_base_module():
    """With the adapter disabled the wrapped module runs, and must receive the cache under its own
    keyword: cached generation equals the untouched base model's."""
    base = tiny_model("llama", eos_token_id=None)
    ids = torch.randint(3, 128, (1, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = base.generate(input_ids=ids, max_new_tokens=10, do_sample=False, pad_token_id=0)
        model = get_peft_model(base, DiffLoRAConfig(r=4)).eval()
        with model.disable_adapter():
            assert torch.equal(model.generate(input_ids=ids, max_new_tokens=10, do_sample=False, pad_token_id=0),
                               expected)


@pytest.mark.parametrize("spelling", ["gradient_checkpointing", "activation_checkpointing"])
def test_either_checkpointing_spelling_reaches_training_arguments_under_this_releases_name(spelling):
    used = compat.checkpointing_argument()
    assert used in {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    assert {spelling, f"{spelling}_kwargs"} <= compat.training_argument_names()
    values = compat.training_arguments({spelling: True, f"{spelling}_kwargs": {"use_reentrant": False}, "seed": 1})
    assert values == {used: True, f"{used}_kwargs": {"use_reentrant": False}, "seed": 1}
