"""Evaluation: unbiased pass@k and mean@k."""
