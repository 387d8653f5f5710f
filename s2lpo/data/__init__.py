"""Datasets: the synthetic toy task (real datasets come through the preparation step)."""
