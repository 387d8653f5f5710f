"""Display names of the methods: one mapping for the study's run labels, the tracking run names, the table
rows and the figure legends, so the same run reads the same everywhere."""

from __future__ import annotations

METHOD_LABELS = {"grpo": "GRPO", "token_temp": "GRPO (high T)", "g2rpo_a": "G²RPO-A", "s2lpo": "S2L-PO"}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def run_label(method: str, explorer: str) -> str:
    """``S2L-PO · toy-s``, ``GRPO``: what a table row and a figure legend call a run's method."""
    return method_label(method) + (f" · {explorer}" if explorer and explorer != "none" else "")
