"""Analysis of what the attention does: the attention mass per segment of one prompt (the paper's
Figure 4), in segments.py. It reads the model only; running it over models and prompts, with plots
and a report section, is the evaluation's attention task (difflora.evaluation.tasks.attention_mass)."""
