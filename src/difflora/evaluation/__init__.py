"""Evaluation: needle-in-a-haystack (RULER format), many-shot ICL (HELMET format), degenerate
generation, lm-eval-harness, and reports."""
