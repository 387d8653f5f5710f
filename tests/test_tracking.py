import json

from s2lpo.tracking.journal import Journal, read_history, read_records
from s2lpo.tracking.run import Manifest
from s2lpo.tracking.sinks import MlflowSink, from_mlflow_key, mlflow_key


def test_journal_round_trip_and_torn_tail(tmp_path):
    j = Journal(tmp_path)
    j.log(1, {"train/loss": 0.5, "eval/toy/pass@1": 0.25})
    j.log(2, {"train/loss": 0.4, "bad": float("nan")})
    j.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "t": 1, "metr')  # a kill mid-write
    assert [r["step"] for r in read_records(tmp_path)] == [1, 2]
    j = Journal(tmp_path)  # a resumed run appends after the torn line
    j.log(2, {"train/loss": 0.45})
    j.close()
    h = read_history(tmp_path)
    assert h["train/loss"] == {1: 0.5, 2: 0.45}  # the last write of a (key, step) wins
    assert h["eval/toy/pass@1"] == {1: 0.25}
    assert "bad" not in h


def test_manifest_is_atomic_json(tmp_path):
    m = Manifest(tmp_path)
    m.start({"seed": 1, "algorithm": {"name": "grpo"}}, "rid")
    m.update(status="finished")
    again = Manifest(tmp_path)
    assert again.status == "finished" and again.data["restarts"] == 0
    again.start({"seed": 1}, "rid")
    assert json.loads((tmp_path / "manifest.json").read_text())["restarts"] == 1


def test_mlflow_sink_batches_and_resumes_without_duplicates(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    (tmp_path / "run").mkdir()
    s = MlflowSink(tmp_path / "run", uri, "exp", "r", {"method": "grpo"}, {"a.b": "1"})
    s.log(1, {"eval/toy/pass@1": 0.5, "train/loss": 1.0})
    s.log(2, {"train/loss": 0.9})
    s.close("KILLED")
    again = MlflowSink(tmp_path / "run", uri, "exp", "r", {}, {})
    assert again.run_id == s.run_id
    again.log(2, {"train/loss": 0.9})  # replayed step: already delivered, not sent again
    again.log(3, {"train/loss": 0.8})
    again.close()
    c = MlflowClient(uri)
    hist = c.get_metric_history(s.run_id, "train/loss")
    assert [(m.step, m.value) for m in hist] == [(1, 1.0), (2, 0.9), (3, 0.8)]
    assert c.get_metric_history(s.run_id, mlflow_key("eval/toy/pass@1"))[0].value == 0.5
    assert from_mlflow_key(mlflow_key("eval/toy/pass@8")) == "eval/toy/pass@8"
    run = c.get_run(s.run_id)
    assert run.data.tags["method"] == "grpo" and run.data.params["a.b"] == "1"
    assert run.info.status == "FINISHED"
