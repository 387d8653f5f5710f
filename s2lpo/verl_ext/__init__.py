"""S2L-PO on verl 0.9.x without a fork: config mapping, an AgentLoopManager subclass routing each group's
first rows to an explorer agent loop that replays cached explorer samples, the runner, a CPU platform and a
stand-in rollout server. Imports ``eval`` and below; never ``trainer`` (which imports it) or above."""
