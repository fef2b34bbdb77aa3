"""Data helpers shared by training, evaluation and the demo."""
