"""Analysis of what the attention does (the paper's Figure 4)."""
