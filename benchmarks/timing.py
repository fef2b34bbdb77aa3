"""Step time and decode speed, every configuration measured in the same process, interleaved.

Interleaving (round r runs every configuration once, in an order rotated by r) spreads slow
phases of a shared machine over all configurations instead of penalising whichever ran then.
Each figure is the median of its repeats, after warm-up runs that are not counted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from setups import Setup, random_ids, synchronize, train_step
from tqdm import tqdm


def interleaved(names: list[str], run: Callable[[str], None], device: str, warmup: int, repeats: int,
                progress: tqdm | None = None) -> dict[str, list[float]]:
    """Seconds of every counted run(name), for every name (callers take the median)."""
    for _ in range(warmup):
        for name in names:
            run(name)
            _tick(progress)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            run(name)
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            _tick(progress)
    return times


def step_times(setups: dict[str, Setup], shape, tokens: int, device: str, warmup: int, repeats: int,
               progress: tqdm | None = None) -> dict[str, list[float]]:
    """Seconds of each counted training step at `tokens` tokens, per configuration."""
    ids = random_ids(shape, tokens, device)
    for setup in setups.values():
        setup.model.train()
    return interleaved(list(setups), lambda name: train_step(setups[name], ids), device, warmup, repeats, progress)


class _TokenClock:
    """A stopping criterion that never stops: it timestamps every new token (after a synchronize, so the
    token is really there). generate checks its stopping criteria once per new token."""

    def __init__(self, device: str):
        from transformers import StoppingCriteria

        clock = self

        class Criterion(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                synchronize(device)
                clock.stamps.append(time.perf_counter())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        self.stamps: list[float] = []
        self.criterion = Criterion()


def _timed_generate(model, ids: torch.Tensor, new_tokens: int, device: str, name: str, **kwargs) -> float:
    """Tokens per second of one greedy generate call: batch * (new_tokens - 1) / (time of the last
    token - time of the first), so the prompt's prefill is left out."""
    from transformers import StoppingCriteriaList

    clock = _TokenClock(device)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0,
            stopping_criteria=StoppingCriteriaList([clock.criterion]), **kwargs)
    prompt = ids.shape[1]
    if out.shape[1] != prompt + new_tokens or len(clock.stamps) != new_tokens:
        raise RuntimeError(f"{name}: generate made {out.shape[1] - prompt} tokens, expected {new_tokens}")
    return ids.shape[0] * (new_tokens - 1) / (clock.stamps[-1] - clock.stamps[0])


def decode_rates(setups: dict[str, Setup], shape, prompt: int, new_tokens: int, device: str, warmup: int,
                 repeats: int, progress: tqdm | None = None, batch: int = 1) -> dict[str, float]:
    """Tokens per second (all `batch` sequences together) of eager cached greedy decoding with the
    default DynamicCache, per configuration: the median over runs of batch * (new_tokens - 1) / (time of
    the last token - time of the first), so the prompt's prefill is left out. Both timestamps come from
    the same generate call (a stopping criterion that never stops). Configurations interleaved."""
    ids = random_ids(shape, prompt, device, seed=1, batch=batch)
    rates: dict[str, list[float]] = {name: [] for name in setups}
    for setup in setups.values():
        setup.model.eval()

    def generate(name: str) -> None:
        rates[name].append(_timed_generate(setups[name].model, ids, new_tokens, device, name))

    interleaved(list(setups), generate, device, warmup, repeats, progress)
    return {name: statistics.median(r[warmup:]) for name, r in rates.items()}


def compile_config(device: str, backend: str = "inductor"):
    """transformers' CompileConfig for generate(cache_implementation="static"). transformers compiles
    the forward by itself on CUDA (inductor, mode "reduce-overhead": CUDA graphs); on a CPU only when
    `_compile_all_devices` is set, and there with mode "default" (CUDA graphs do not apply)."""
    from transformers import CompileConfig

    cuda = device.startswith("cuda")
    if not cuda and not hasattr(CompileConfig, "_compile_all_devices"):
        raise RuntimeError("this transformers' CompileConfig has no _compile_all_devices: it cannot compile "
                           "generate on a CPU")
    config = CompileConfig(backend=backend, mode="reduce-overhead" if cuda and backend == "inductor" else "default")
    if hasattr(CompileConfig, "_compile_all_devices"):  # to_dict() leaves it out of torch.compile's kwargs
        config._compile_all_devices = True
    return config


RECOMPILE_LIMIT_HIT = "recompile limit hit"
SKIPPED = "skipped (time budget)"


def _is_recompile_limit_hit(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{type(exc).__name__}: {exc}"
        if ("RecompileLimit" in type(exc).__name__ or "CacheLimit" in type(exc).__name__
                or "recompile limit exceeded" in text.lower() or "fail_on_recompile_limit_hit" in text):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def compiled_decode_rates(setups: dict[str, Setup], shape, prompt: int, new_tokens: int, device: str, warmup: int,
                          repeats: int, batch: int = 1, backend: str = "inductor", deadline: float | None = None,
                          progress: tqdm | None = None) -> dict[str, dict]:
    """Tokens per second of greedy decoding with generate(cache_implementation="static"), compiled by
    transformers (one torch.compile of the model's forward for the decoding steps; the prefill runs eagerly).

    Configuration by configuration, not interleaved: Dynamo's caches are reset before each, so each
    compiles only its own graphs against the recompile limit (every configuration's forward is the same
    code object, and the limit is per code object). The warm-up (at least one call) includes the
    compilation and, on CUDA, the recording of the CUDA graphs; its time is reported as compile_s.
    torch._dynamo.config.fail_on_recompile_limit_hit is on: a forward that recompiles per layer (a
    graph break inside the attention module makes each layer a frame of its own) stops with an error
    instead of falling back to eager and giving a slow number; it is recorded as "recompile limit hit"
    and the other configurations still run.

    Returns {name: {"tok_s", "tok_s_all", "compile_s", "graphs", "graph_breaks", "error"}}; tok_s is None
    when the configuration failed or was skipped (error says why)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    config = compile_config(device, backend)
    ids = random_ids(shape, prompt, device, seed=1, batch=batch)
    patch = ({"fail_on_recompile_limit_hit": True}
             if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit") else {})
    results: dict[str, dict] = {}
    for name, setup in setups.items():
        row = {"tok_s": None, "tok_s_all": [], "compile_s": None, "graphs": None, "graph_breaks": None, "error": None}
        results[name] = row
        if deadline is not None and time.perf_counter() > deadline:
            row["error"] = SKIPPED
            _tick(progress, max(warmup, 1) + repeats)
            continue
        setup.model.eval()
        torch._dynamo.reset()
        counters.clear()
        ticks = max(warmup, 1) + repeats
        try:
            with torch._dynamo.config.patch(**patch):
                start = time.perf_counter()
                for _ in range(max(warmup, 1)):
                    _timed_generate(setup.model, ids, new_tokens, device, name, cache_implementation="static",
                                    compile_config=config)
                    _tick(progress)
                    ticks -= 1
                row["compile_s"] = time.perf_counter() - start
                row["graphs"] = int(counters["stats"]["unique_graphs"])
                row["graph_breaks"] = int(sum(counters["graph_break"].values()))
                if row["graphs"] == 0:
                    raise RuntimeError("transformers did not compile the forward (no graph was made)")
                for _ in range(repeats):
                    row["tok_s_all"].append(_timed_generate(setup.model, ids, new_tokens, device, name,
                                                            cache_implementation="static", compile_config=config))
                    _tick(progress)
                    ticks -= 1
                row["graphs"] = int(counters["stats"]["unique_graphs"])  # a recompile while timing shows here
                row["tok_s"] = statistics.median(row["tok_s_all"])
        except Exception as exc:  # one configuration's failure is its row, not the end of the run
            row["error"] = (RECOMPILE_LIMIT_HIT if _is_recompile_limit_hit(exc)
                            else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            row["graphs"] = int(counters["stats"]["unique_graphs"])
            row["graph_breaks"] = int(sum(counters["graph_break"].values()))
            _tick(progress, ticks)
    torch._dynamo.reset()
    return results


def _tick(progress: tqdm | None, n: int = 1) -> None:
    if progress is not None:
        progress.update(n)
