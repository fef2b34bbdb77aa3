"""Peak memory of a training step.

What is measured (per configuration, per sequence length):
  peak memory while running `steps` training steps  -  memory right before the configuration's first step.
So it counts activations kept for backward, gradients, AdamW state and temporaries, but not the
weights themselves.
  CPU:  the resident set of a fresh forked process per configuration (peak_memory). Linux's peak-RSS
        counter (VmHWM) is reset before each length (/proc/self/clear_refs); where that is not allowed,
        getrusage's ru_maxrss is used and lengths run in increasing order, so each length's peak is
        still its own. glibc's mmap threshold is fixed (MALLOC_MMAP_THRESHOLD_) so freed activations go
        back to the system between lengths instead of being kept in the heap and reused unseen. A process
        of its own is needed because the resident set is the whole process's.
  CUDA: in the benchmark's own process, on the configuration it times (peak_memory_in_process):
        torch.cuda.max_memory_allocated after empty_cache and reset_peak_memory_stats, minus
        memory_allocated before the configuration's first step (tensor memory, not the caching
        allocator's reserve). The allocator counts tensors, so the other configurations' weights in the
        same process are part of both figures and cancel out. No process start, no second build.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import resource

import torch
from setups import DTYPES, build, random_ids, shape_by_name, train_step

MMAP_THRESHOLD = "65536"


def peak_memory(name: str, shape_name: str, lengths: list[int], device: str, dtype: str, threads: int,
                steps: int = 2) -> dict[int, float]:
    """{length: peak MiB above the built model} for one configuration, measured in a child process
    (forked on CPU; spawned on CUDA, where run.py measures in-process instead)."""
    context = multiprocessing.get_context("fork" if device == "cpu" else "spawn")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD  # read by glibc at the child's first malloc (spawn)
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_worker, args=(child, name, shape_name, lengths, device, dtype, threads, steps))
    process.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        result = {"error": f"memory worker for {name} died (exit code {process.exitcode})"}
    process.join()
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def peak_memory_in_process(setup, shape, lengths: list[int], device: str, steps: int = 2) -> dict[int, float]:
    """{length: peak MiB above the memory before the first step} for an already built configuration,
    in this process (CUDA: the allocator counts tensors, not the process). Its gradients are freed
    afterwards; its AdamW state stays (the timed steps need it anyway)."""
    peaks = _peaks(setup, shape, lengths, device, steps)
    setup.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return peaks


def _peaks(setup, shape, lengths: list[int], device: str, steps: int) -> dict[int, float]:
    """{length: peak MiB} of `steps` training steps at each length, in increasing order."""
    meter = Meter(device)
    peaks = {}
    for tokens in sorted(lengths):
        ids = random_ids(shape, tokens, device)
        meter.reset()
        for _ in range(steps):
            train_step(setup, ids)
        peaks[tokens] = meter.peak_mib()
        del ids
    return peaks


def _worker(conn, name, shape_name, lengths, device, dtype, threads, steps) -> None:
    try:
        _fix_mmap_threshold()
        torch.set_num_threads(threads)
        shape = shape_by_name(shape_name)
        setup = build(name, shape, device, DTYPES[dtype], max(lengths))
        conn.send(_peaks(setup, shape, lengths, device, steps))
    except Exception as exc:  # the parent turns it into an error naming the configuration
        conn.send({"error": f"{name}: {exc.__class__.__name__}: {exc}"})
    finally:
        conn.close()


def _fix_mmap_threshold() -> None:
    """The forked child inherits the parent's heap settings, so set the threshold with mallopt."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_MMAP_THRESHOLD = -3
        libc.mallopt(M_MMAP_THRESHOLD, int(MMAP_THRESHOLD))
    except OSError:
        pass  # not glibc: the measurement may then undercount reused heap memory


class Meter:
    """Peak memory above the level at construction (right after the model was built)."""

    def __init__(self, device: str):
        self.device = device
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            self.baseline = torch.cuda.memory_allocated()
        else:
            self.baseline = _rss_bytes()
            self.can_reset = _reset_peak_rss()

    def reset(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        elif self.can_reset:
            _reset_peak_rss()

    def peak_mib(self) -> float:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.can_reset:
            peak = _status_kib("VmHWM") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return (peak - self.baseline) / 2**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def _rss_bytes() -> int:
    try:
        return _status_kib("VmRSS") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
