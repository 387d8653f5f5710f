"""Trainer backends: ``local`` (single process, CPU or one GPU)."""
