"""The MLflow sink against a real tracking server (``mlflow server`` on loopback)."""

import json

import pytest
from mlflow.tracking import MlflowClient

from s2lpo.tracking.journal import read_history
from s2lpo.tracking.sinks import from_mlflow_key
from s2lpo.trainer.local import train
from s2lpo_testing import QUICK, make_cfg

pytestmark = pytest.mark.slow


def test_training_run_lands_on_the_server_once_per_point(tmp_path, tiny_family, mlflow_server):
    cfg = make_cfg(tmp_path, *QUICK, "algorithm=s2lpo", "explorer=toy_s", "logger=mlflow",
                   f"logger.mlflow.tracking_uri={mlflow_server.uri}", "logger.mlflow.experiment=server-test")
    res = train(cfg, log=lambda *_: None)
    run_id = json.loads((res.run_dir / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["method"] == "s2lpo" and run.data.tags["explorer"] == "toy-s"
    assert run.data.params["algorithm.group_size"] == "4"
    journal = read_history(res.run_dir)
    for key in run.data.metrics:
        hist = client.get_metric_history(run_id, key)
        steps = [m.step for m in hist]
        assert len(steps) == len(set(steps)), key  # one point per (key, step)
        assert {m.step: m.value for m in hist} == pytest.approx(journal[from_mlflow_key(key)]), key
    assert {from_mlflow_key(k) for k in run.data.metrics} == set(journal)
    # the same config again: the finished run is found, nothing is sent twice
    again = train(cfg, log=lambda *_: None)
    assert again.run_id == res.run_id
    assert len(client.get_metric_history(run_id, "train/loss")) == cfg.trainer.total_steps


def test_a_dead_tracking_server_never_fails_training(tmp_path, tiny_family, monkeypatch):
    from s2lpo_testing import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cfg = make_cfg(tmp_path, *QUICK, "algorithm=grpo", "explorer=none", "algorithm.t_mix=0", "logger=mlflow",
                   f"logger.mlflow.tracking_uri=http://127.0.0.1:{free_port()}")
    said = []
    res = train(cfg, log=said.append)
    assert res.status == "finished"
    assert sum("mlflow sink disabled" in s for s in said) == 1
    assert set(read_history(res.run_dir)["train/loss"]) == {1, 2, 3, 4}  # the journal has every point
