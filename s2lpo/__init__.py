"""s2lpo: Small-to-Large Policy Optimization (S2L-PO) for GRPO training of LLMs."""

__version__ = "0.1.0"
