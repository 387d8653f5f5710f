"""Where a run can be looked at: its MLflow page (or, for a sqlite store, the command that serves one) and its
W&B files, from what the replicas recorded in the manifest."""

from __future__ import annotations

from pathlib import Path

from s2lpo.tracking.run import Manifest


def dashboard_lines(run_dir: Path, runs_table: bool = False) -> list[str]:
    """One line per replica the run was delivered to: the run's page, or (``runs_table``) its experiment's
    runs table (a study's runs side by side)."""
    from s2lpo.tracking.mlflow_replica import runs_url

    m = Manifest(run_dir).data if (Path(run_dir) / "manifest.json").exists() else {}
    out = []
    ml = m.get("tracking", {}).get("mlflow") or {}
    run = None if runs_table else ml.get("run_id")
    if ml.get("tracking_uri", "").startswith(("http://", "https://")):
        out.append(f"MLflow: {runs_url(ml['tracking_uri'], ml.get('experiment_id'), run)}")
    elif ml.get("tracking_uri", "").startswith("sqlite:///"):
        out.append(f"MLflow: mlflow ui --backend-store-uri {ml['tracking_uri']}, then "
                   f"{runs_url('http://127.0.0.1:5000', ml.get('experiment_id'), run)}")
    wb = m.get("tracking", {}).get("wandb") or {}
    if wb.get("mode") == "offline":
        out.append(f"W&B (offline files): {Path(run_dir) / 'wandb'}; upload with `wandb sync {Path(run_dir) / 'wandb'}`")
    elif wb.get("id"):
        out.append(f"W&B: project {wb.get('project')}, run {wb['id']}")
    return out
