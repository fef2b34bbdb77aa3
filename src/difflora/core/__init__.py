"""The DiffLoRA method itself, independent of PEFT: low-rank projections, lambda, the
differential combination of two attention calls."""
