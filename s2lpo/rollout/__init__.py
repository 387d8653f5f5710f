"""Rollout: the sampler, the explorer rollout cache, rollout rows and metrics, the local rollout phase.
Imports ``models``, ``rewards``, ``data``, ``config``, ``algo``; never the trainers, eval or tracking."""
