"""Rollout: samplers and the explorer rollout cache."""
