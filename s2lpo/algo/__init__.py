"""Pure algorithm functions (no I/O): schedules, group plans, guidance, GRPO math via verl."""
