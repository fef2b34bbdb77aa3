"""One compiled graph: every preset compiles with fullgraph=True for a training step and for a
static-cache decoding step, recompiles nothing from layer to layer or step to step, and gives the
eager numbers; transformers' own compiled generate (cache_implementation="static") keeps its
graph on a model deeper than Dynamo's recompile limit.

The cheap `backend="eager"` backend (Dynamo's tracing, no code generation) finds graph breaks and
recompiles exactly as inductor would; one slow test runs inductor itself.
"""

import pytest
import torch
import torch._dynamo
from peft import LoraConfig, get_peft_model
from torch._dynamo.testing import CompileCounter
from transformers import CompileConfig

from difflora import DiffLoRAConfig
from difflora.testing import static_cache_decode, tiny_model
from difflora.tuner.config import PRESETS

from .test_reference import padded_batch, randomize

FAMILIES = ("llama", "qwen3")  # the plain layout, and per-head q/k norms
MAX_CACHE = 40


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield
    torch._dynamo.reset()


def wrapped(family, preset, layers=2):
    model = get_peft_model(tiny_model(family, layers=layers), DiffLoRAConfig.from_preset(preset, r=8, lora_alpha=16))
    randomize(model)  # B = 0 adapters would hide a wrong negative term
    return model


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_training_step_is_one_graph(family, preset):
    model = wrapped(family, preset).train()
    ids, mask = padded_batch("left")
    labels = ids.masked_fill(mask == 0, -100)
    eager = model(input_ids=ids, attention_mask=mask, labels=labels)
    eager.loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    out = compiled(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    compiled(input_ids=ids.flip(0), attention_mask=mask.flip(0), labels=labels.flip(0))  # new values, same shapes
    assert counter.frame_count == 1, "a second frame means a graph break or a recompile"
    torch.testing.assert_close(out.loss, eager.loss, rtol=1e-5, atol=1e-5)
    for name, grad in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_static_cache_decoding_is_one_graph(family, preset):
    model = wrapped(family, preset).eval()
    ids, mask = padded_batch("left")
    hf = model.get_base_model()
    eager = static_cache_decode(hf, hf, ids, mask, MAX_CACHE, steps=3)
    counter = CompileCounter()
    compiled = torch.compile(hf, backend=counter, fullgraph=True)
    compiled = static_cache_decode(hf, compiled, ids, mask, MAX_CACHE, steps=3)
    assert counter.frame_count == 1, "every decoding step and every layer must reuse one graph"
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def compiled_generate(model, ids, mask, backend):
    config = CompileConfig(backend=backend)
    config._compile_all_devices = True  # transformers compiles generate on CUDA only unless asked
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0,
                          cache_implementation="static", compile_config=config)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_compiled_static_generate_keeps_one_graph_over_many_layers(preset):
    layers = torch._dynamo.config.recompile_limit + 4  # a per-layer recompile would pass the limit
    model = wrapped("llama", preset, layers=layers).eval()
    ids, mask = padded_batch("left")
    expected = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(compiled_generate(model, ids, mask, backend="eager"), expected)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["difflora-64", "difflora-shared-kv", "lora"])
def test_inductor_static_generate(method):
    base = tiny_model("llama", layers=torch._dynamo.config.recompile_limit + 4)
    config = (LoraConfig(r=8, target_modules=["q_proj", "v_proj"]) if method == "lora"
              else DiffLoRAConfig.from_preset(method))
    model = get_peft_model(base, config).eval()
    randomize(model)
    ids, mask = padded_batch("left")
    expected = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(compiled_generate(model, ids, mask, backend="inductor"), expected)
