"""Pure algorithm functions (no I/O): schedules, group plans, slot draws, seeds, guidance, the off-policy
correction registry, GRPO math via verl. Imports nothing of ours outside ``algo``."""
