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


def decode_rates(setups: dict[str, Setup], shape, prompt: int, new_tokens: int, device: str, warmup: int,
                 repeats: int, progress: tqdm | None = None) -> dict[str, float]:
    """Tokens per second of cached greedy decoding, per configuration: the median over runs of
    (new_tokens - 1) / (time of the last token - time of the first), so the prompt's prefill is left out.
    Both timestamps come from the same generate call (a stopping criterion that never stops)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class TokenClock(StoppingCriteria):
        def __init__(self):
            self.stamps: list[float] = []

        def __call__(self, input_ids, scores, **kwargs):
            synchronize(device)
            self.stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    ids = random_ids(shape, prompt, device, seed=1)
    rates: dict[str, list[float]] = {name: [] for name in setups}
    for setup in setups.values():
        setup.model.eval()

    def generate(name: str) -> None:
        clock = TokenClock()
        with torch.no_grad():
            out = setups[name].model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0,
                stopping_criteria=StoppingCriteriaList([clock]))
        if out.shape[1] != prompt + new_tokens or len(clock.stamps) != new_tokens:
            raise RuntimeError(f"{name}: generate made {out.shape[1] - prompt} tokens, expected {new_tokens}")
        rates[name].append((new_tokens - 1) / (clock.stamps[-1] - clock.stamps[0]))

    interleaved(list(setups), generate, device, warmup, repeats, progress)
    return {name: statistics.median(r[warmup:]) for name, r in rates.items()}


def _tick(progress: tqdm | None) -> None:
    if progress is not None:
        progress.update(1)
