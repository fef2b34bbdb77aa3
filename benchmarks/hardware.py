"""Peak dense FLOP/s of known GPUs, for the benchmark's MFU column (model FLOPs utilisation).

MFU = FLOPs of the training step (benchmarks/flops.py's model: matmuls, attention, elementwise
estimates, AdamW) / measured step time / the device's peak dense FLOP/s for the step's dtype.

Figures are the vendors' datasheet numbers without structured sparsity: bfloat16 on the tensor cores
(with float32 accumulation, which is what PyTorch's matmuls use), and plain float32 off the tensor cores
(PyTorch's default: torch.backends.cuda.matmul.allow_tf32 is False). A GPU that is not in the table, or
a dtype it has no figure for, gets no MFU ('-') unless --peak-tflops gives the peak.
"""

from __future__ import annotations

import re

# (pattern matched against torch.cuda.get_device_name(), label, {dtype: peak TFLOP/s dense}).
# First match wins, so the more specific names come first.
PEAK_TFLOPS: list[tuple[str, str, dict[str, float]]] = [
    (r"H200", "H200 (and GH200)", {"bfloat16": 989.4, "float32": 66.9}),
    (r"H100.*PCIe", "H100 PCIe", {"bfloat16": 756.5, "float32": 51.2}),
    (r"H100(?!.*NVL)", "H100 SXM", {"bfloat16": 989.4, "float32": 66.9}),
    (r"A100", "A100 (SXM and PCIe)", {"bfloat16": 312.0, "float32": 19.5}),
    (r"L40S", "L40S", {"bfloat16": 362.05, "float32": 91.6}),
    (r"\bL4\b", "L4", {"bfloat16": 121.0, "float32": 30.3}),
    (r"RTX 4090", "GeForce RTX 4090", {"bfloat16": 165.2, "float32": 82.6}),
    (r"\bA10$", "A10", {"bfloat16": 125.0, "float32": 31.2}),
]


def peak_flops(device_name: str, dtype: str, override_tflops: float | None = None) -> tuple[float | None, str]:
    """(peak FLOP/s or None, where the figure comes from or why there is none)."""
    if override_tflops is not None:
        return override_tflops * 1e12, f"--peak-tflops {override_tflops:g}"
    for pattern, label, peaks in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            if dtype not in peaks:
                return None, f"no {dtype} peak for {label} in benchmarks/hardware.py; pass --peak-tflops"
            return peaks[dtype] * 1e12, f"{label}, {dtype} dense, {peaks[dtype]:g} TFLOP/s (benchmarks/hardware.py)"
    return None, f"no peak FLOP/s known for '{device_name}' (benchmarks/hardware.py); pass --peak-tflops"
