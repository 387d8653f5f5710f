"""S2L-PO on verl 0.9.x without a fork: an AgentLoopManager subclass that routes each group's first
rows to an explorer agent loop replaying cached explorer samples (work in progress: see issue 7)."""
