"""Run identity, the append-only journal (source of truth) and the sinks that replicate it."""
