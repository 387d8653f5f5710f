"""Run identity and lifecycle, the append-only journal (source of truth), the replicas that copy it to MLflow
and W&B, and the readers analysis uses. Imports ``data``, ``algo`` and ``config.paths`` at most."""
