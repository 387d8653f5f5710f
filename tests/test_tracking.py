"""Journal, manifest, replicas (MLflow sqlite store, W&B offline files), delivery and ``s2lpo sync``."""

import json
import math
import socket

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from s2lpo.cli import main as s2lpo_main
from s2lpo.tracking.delivery import Delivery, ReplicaBusy
from s2lpo.tracking.journal import Journal, JournalTail, read_history, read_records
from s2lpo.tracking.mlflow_replica import MlflowReplica, from_mlflow_key, mlflow_key
from s2lpo.tracking.replica import Point, ReplicaState, pending
from s2lpo.tracking.run import Manifest, run_id
from s2lpo.tracking.sinks import make_replicas
from s2lpo.tracking.wandb_files import offline_dirs, read_offline_run
from s2lpo_testing import QUICK, make_cfg, mlflow_points


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
    assert math.isnan(h["bad"][2])  # a diverged value is kept, not dropped


def test_non_finite_values_reach_every_replica(tmp_path):
    """A NaN loss and an infinite ratio go journal -> MLflow and W&B (offline files) as such."""
    from s2lpo.tracking.readers import MlflowReader, WandbOfflineReader

    cfg = OmegaConf.to_container(make_cfg(tmp_path, *QUICK, "logger=default"), resolve=True)
    rid = run_id(cfg)
    run_dir = tmp_path / "runs" / rid
    Manifest(run_dir.mkdir(parents=True) or run_dir).start(cfg, rid)
    j = Journal(run_dir)
    j.log(0, {"train/loss": 0.5, "train/ratio": 1.0})
    j.log(1, {"train/loss": float("nan"), "train/ratio": float("inf")})
    j.close()
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    for rep in make_replicas(cfg, run_dir, rid, mlflow_uri=uri, wandb_mode_override="offline"):
        assert Delivery(rep, run_dir).drain() == 4
        rep.close("failed")
    for reader in (MlflowReader(uri), WandbOfflineReader(tmp_path / "runs")):
        got = reader.fetch(reader.runs())[rid].groupby(["key", "step"])["value"].last()  # (MLflow: listing + history)
        assert got[("train/loss", 0)] == 0.5 and math.isnan(got[("train/loss", 1)]), reader.name
        assert got[("train/ratio", 1)] == float("inf"), reader.name


def test_journal_tail_returns_each_complete_record_once(tmp_path):
    tail = JournalTail(tmp_path)
    assert tail.read() == []  # no journal yet
    j = Journal(tmp_path)
    j.log(0, {"a": 1.0})
    assert [r["step"] for r in tail.read()] == [0]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 1, "t": 0, "metrics": {"a"')  # half a line: not returned yet
    assert tail.read() == []
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(': 2.0}}\n')
    assert [r["metrics"] for r in tail.read()] == [{"a": 2.0}]
    assert tail.at_end() and tail.read() == []
    small = JournalTail(tmp_path)
    assert [r["step"] for r in small.read(max_bytes=10)] == [0]  # a line longer than a read is read whole


def test_pending_keeps_the_last_write_above_each_mark():
    records = [{"step": 1, "t": 10.0, "metrics": {"a": 1.0, "b": 1.0}},
               {"step": 2, "t": 11.0, "metrics": {"a": 2.0, "b": 2.0}},
               {"step": 2, "t": 12.0, "metrics": {"a": 2.5}}]  # step 2 written again by a resumed run
    got = pending(records, {"a": 1})
    assert [(p.key, p.step, p.value) for p in got] == [("b", 1, 1.0), ("a", 2, 2.5), ("b", 2, 2.0)]
    assert pending(records, {"*": 1}) == [Point("a", 2, 2.5, 12.0), Point("b", 2, 2.0, 11.0)]
    assert pending(records, {"a": 2, "b": 5}) == []


def test_manifest_records_code_environment_and_scheduler(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    m = Manifest(tmp_path)
    m.start({"seed": 1, "algorithm": {"name": "grpo"}}, "rid")
    m.update(status="preempted")
    with pytest.raises(ValueError, match="status 'paused'"):
        m.update(status="paused")
    again = Manifest(tmp_path)
    d = again.data
    assert again.status == "preempted" and d["restarts"] == 0 and d["host"] == socket.gethostname()
    assert (d["slurm_job_id"], d["slurm_array_job_id"], d["slurm_array_task_id"], d["slurm_restart_count"]) == \
        ("41", "40", "3", 2)
    assert {"torch", "mlflow", "wandb", "python"} <= set(d["packages"]) and len(d["git_commit"]) == 40
    assert d["git_dirty"] == (tmp_path / "git_diff.patch").exists()
    again.start({"seed": 1}, "rid")
    assert json.loads((tmp_path / "manifest.json").read_text())["restarts"] == 1
    assert len(Manifest(tmp_path).data["starts"]) == 2


def _journal(run_dir, steps, keys=("train/loss", "eval/toy/pass@1")):
    j = Journal(run_dir)
    for s in steps:
        j.log(s, {k: s + i / 10 for i, k in enumerate(keys)})
    j.close()


def test_mlflow_replica_delivers_each_point_once_even_when_its_marks_are_lost(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    run_dir = tmp_path / "run"
    _journal(run_dir, range(0, 5))
    rep = MlflowReplica(uri, "exp", "rid-1", "r", {"method": "grpo"}, {"a.b": "1"})
    assert Delivery(rep, run_dir).drain() == 10
    rep.close("finished")
    (run_dir / "tracking" / "mlflow.json").unlink()  # a crash right after a delivery, before the marks were saved
    _journal(run_dir, range(3, 8))  # a resumed run writes steps 3..7 (3, 4 again)
    again = MlflowReplica(uri, "exp", "rid-1", "r", {}, {})
    assert Delivery(again, run_dir).drain() == 6  # only 5, 6, 7: the run is found by its tag, MLflow says 0..4
    assert again.run_id == rep.run_id
    c = MlflowClient(uri)
    assert mlflow_points(c, rep.run_id) == {k: sorted(v.items()) for k, v in read_history(run_dir).items()}
    run = c.get_run(rep.run_id)
    assert run.data.tags["method"] == "grpo" and run.data.params["a.b"] == "1"
    assert c.get_metric_history(rep.run_id, mlflow_key("eval/toy/pass@1"))[0].value == pytest.approx(0.1)
    assert from_mlflow_key(mlflow_key("eval/toy/pass@8")) == "eval/toy/pass@8"
    # another store behind the configured address: the marks are not trusted, the run is sent in full
    other = MlflowReplica(f"sqlite:///{tmp_path}/other.db", "exp", "rid-1", "r", {}, {})
    assert Delivery(other, run_dir).drain() == 16


def test_sweep_members_are_children_of_one_parent_run_that_ends_with_them(tmp_path):
    """One parent per sweep; sized by the submission, it stays RUNNING until its last member ends, then
    FINISHED (all finished) or FAILED; a member that starts again puts it back to RUNNING. The experiment is
    tagged so MLflow's UI opens on its runs table."""
    from s2lpo.tracking.mlflow_replica import ensure_sweep_parent, runs_url

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    parent = ensure_sweep_parent(uri, "proj", "sw1", size=3)
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("proj")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == (tmp_path / "mlartifacts").as_uri()  # beside the store, not in the cwd
    reps = []
    for i in range(3):
        run_dir = tmp_path / f"run{i}"
        _journal(run_dir, [0])
        rep = MlflowReplica(uri, "proj", f"rid-{i}", f"r{i}", {}, {}, sweep="sw1")
        Delivery(rep, run_dir).drain()
        reps.append(rep)
    parents = c.search_runs([exp.experiment_id], "tags.`s2lpo.kind` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.run_name == "sweep: sw1" and parents[0].info.run_id == parent
    assert {c.get_run(r.run_id).data.tags["mlflow.parentRunId"] for r in reps} == {parent}
    status = lambda: c.get_run(parent).info.status  # noqa: E731
    reps[0].close("finished")
    reps[1].close("finished")
    assert status() == "RUNNING"  # one member still runs
    reps[2].close("finished")
    assert status() == "FINISHED"
    again = MlflowReplica(uri, "proj", "rid-2", "r2", {}, {}, sweep="sw1")  # a member resubmitted
    Delivery(again, tmp_path / "run2").drain()
    assert status() == "RUNNING"
    again.close("failed")
    assert status() == "FAILED"
    assert runs_url("http://h:5000", exp.experiment_id) == f"http://h:5000/#/experiments/{exp.experiment_id}/runs" \
        "?workflowType=machine_learning" and runs_url(uri, "1") is None


def test_a_run_on_the_dashboard_reads_as_its_label_with_few_params_and_its_config(tmp_path):
    """Name = label + seed (the run id is a tag), the semantic config as few flat params, the whole config as
    ``config.yaml``, the family/config/kind tags, and pass@k names that sort numerically."""
    import yaml

    cfg = OmegaConf.to_container(make_cfg(tmp_path, *QUICK, "logger=mlflow", "seed=3"), resolve=True)
    rid = run_id(cfg)
    run_dir = tmp_path / "runs" / rid
    Manifest(run_dir.mkdir(parents=True) or run_dir).start(cfg, rid)
    j = Journal(run_dir)
    j.log(0, {f"eval/toy/pass@{k}": k / 32 for k in (1, 2, 4, 8, 16)})
    j.close()
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    (rep,) = make_replicas(cfg, run_dir, rid, mlflow_uri=uri)
    Delivery(rep, run_dir).drain()
    rep.close("finished")
    c = MlflowClient(uri)
    run = c.get_run(rep.run_id)
    assert run.info.run_name == "toy-l · S2L-PO · toy-s · seed 3" and run.data.tags["s2lpo.run_id"] == rid
    t = run.data.tags
    assert (t["family"], t["kind"], t["label"], len(t["config"])) == ("toy", "train", "S2L-PO · toy-s", 12)
    assert len(run.data.params) < 70 and run.data.params["algorithm.t_mix"] == "3"
    assert not any(k.startswith(("paths.", "logger.", "launcher.", "family.sizes")) for k in run.data.params)
    local = c.download_artifacts(rep.run_id, "config.yaml", str(tmp_path))
    assert yaml.safe_load(open(local)) == cfg
    keys = sorted(k for k in run.data.metrics if "pass" in k)
    assert keys == [f"eval/toy/pass_at_{k:04d}" for k in (1, 2, 4, 8, 16)]  # text order = numeric order
    assert [from_mlflow_key(k) for k in keys] == [f"eval/toy/pass@{k}" for k in (1, 2, 4, 8, 16)]


def test_one_deliverer_per_run_and_replica(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    _journal(tmp_path / "run", [0, 1])
    live = Delivery(MlflowReplica(uri, "exp", "rid", "r", {}, {}), tmp_path / "run")
    live.step()  # holds the lock, as a running trainer's delivery thread does
    with pytest.raises(ReplicaBusy, match="another process"):
        Delivery(MlflowReplica(uri, "exp", "rid", "r", {}, {}), tmp_path / "run").drain()
    live.release()
    assert Delivery(MlflowReplica(uri, "exp", "rid", "r", {}, {}), tmp_path / "run").drain() == 0


def _fake_finished_run(tmp_path, *overrides):
    """A run directory as a finished run with no reachable replica leaves it: manifest + journal."""
    cfg = OmegaConf.to_container(make_cfg(tmp_path, *QUICK, *overrides), resolve=True)
    rid = run_id(cfg)
    run_dir = tmp_path / "runs" / rid
    Manifest(run_dir.mkdir(parents=True) or run_dir).start(cfg, rid)
    Manifest(run_dir).update(status="finished")
    _journal(run_dir, range(0, 6), keys=("train/loss", "train/reward", "eval/toy/pass@2"))
    return run_dir, rid


def test_sync_replays_journals_to_mlflow_and_wandb_once(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir, rid = _fake_finished_run(tmp_path, "logger=default", "sweep=sync-test")
    assert s2lpo_main(["sync", str(tmp_path / "runs")]) == 0
    assert "mlflow: 18, wandb: 18" in capsys.readouterr().out
    c = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    [run] = c.search_runs([c.get_experiment_by_name("s2lpo").experiment_id], f"tags.`s2lpo.run_id` = '{rid}'")
    assert run.info.status == "FINISHED" and run.data.tags["sweep"] == "sync-test"
    journal = {k: sorted(v.items()) for k, v in read_history(run_dir).items()}
    assert mlflow_points(c, run.info.run_id) == journal
    [wdir] = offline_dirs(run_dir, rid)
    w = read_offline_run(wdir)
    assert (w.run_id, w.group, w.job_type, w.exit_code) == (rid, "sync-test", "s2lpo", 0)
    assert w.config["algorithm"]["name"] == "s2lpo" and w.config["seed"] == 0
    assert {k: sorted((s, m[k]) for s, m in w.rows if k in m) for k in journal} == journal
    # again: nothing to send, no new W&B directory, no duplicate in MLflow
    assert s2lpo_main(["sync", str(run_dir)]) == 0
    assert "mlflow: 0, wandb: 0" in capsys.readouterr().out
    assert offline_dirs(run_dir, rid) == [wdir]
    assert mlflow_points(c, run.info.run_id) == journal
    assert Manifest(run_dir).data["tracking"]["mlflow"]["run_id"] == run.info.run_id


def test_sync_adds_a_replica_the_run_never_had(tmp_path, capsys):
    run_dir, rid = _fake_finished_run(tmp_path, "logger=journal")
    assert s2lpo_main(["sync", str(run_dir)]) == 0 and "-" in capsys.readouterr().out  # nothing to deliver to
    assert s2lpo_main(["sync", str(run_dir), "--sink", "mlflow"]) == 0
    assert "mlflow: 18" in capsys.readouterr().out
    c = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    [run] = c.search_runs([c.get_experiment_by_name("s2lpo").experiment_id], f"tags.`s2lpo.run_id` = '{rid}'")
    assert run.info.status == "FINISHED"
    assert mlflow_points(c, run.info.run_id) == {k: sorted(v.items()) for k, v in read_history(run_dir).items()}


def test_sync_without_runs_says_so(tmp_path, capsys):
    assert s2lpo_main(["sync", str(tmp_path)]) == 2
    assert "no run directory" in capsys.readouterr().out


def test_wandb_mode_follows_the_environment(tmp_path, monkeypatch):
    cfg = OmegaConf.to_container(make_cfg(tmp_path, *QUICK, "logger=default"), resolve=True)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert [r.name for r in make_replicas(cfg, tmp_path, "rid")] == ["mlflow"]
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no API key
    assert [r.mode for r in make_replicas(cfg, tmp_path, "rid") if r.name == "wandb"] == ["offline"]
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert [r.mode for r in make_replicas(cfg, tmp_path, "rid") if r.name == "wandb"] == ["online"]


def test_replica_state_is_atomic_json(tmp_path):
    s = ReplicaState(tmp_path, "mlflow")
    s.remote, s.high_water = {"run_id": "x"}, {"a": 3}
    s.save()
    again = ReplicaState(tmp_path, "mlflow")
    assert (again.remote, again.high_water) == ({"run_id": "x"}, {"a": 3})
    assert not list((tmp_path / "tracking").glob("*.tmp"))


def test_new_sqlite_stores_are_copies_of_one_migrated_empty_store(tmp_path, monkeypatch):
    """The first new store of an MLflow version migrates once into the user cache; every later store is a copy
    (never migrated again) that MLflow opens as its own: the Default experiment at the opener's artifact root,
    runs and metrics as in a store it migrated itself, and the same schema version."""
    import sqlite3
    import threading

    import s2lpo.tracking.sqlite_store as store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    migrated = []
    real = store._migrate
    monkeypatch.setattr(store, "_migrate", lambda p: migrated.append(p) or real(p))
    # four threads make the same new store at once (each takes the lock through a file of its own): one store
    dbs = [tmp_path / "a" / "mlruns.db", tmp_path / "b" / "mlruns.db"]
    threads = [threading.Thread(target=store.ensure_store, args=(f"sqlite:///{dbs[0]}",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.ensure_store(f"sqlite:///{dbs[1]}")
    assert len(migrated) == 1 and store.empty_store().is_file()  # the template only
    assert all(db.is_file() for db in dbs) and not list(tmp_path.glob("*/.mlruns.db.*.tmp"))
    with sqlite3.connect(store.empty_store()) as con:
        assert con.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
    # a store MLflow migrated itself, for the schema version
    real(tmp_path / "own.db")
    version = "SELECT version_num FROM alembic_version"
    with sqlite3.connect(tmp_path / "own.db") as a, sqlite3.connect(dbs[1]) as b:
        assert a.execute(version).fetchall() == b.execute(version).fetchall()
    (tmp_path / "opener").mkdir()
    monkeypatch.chdir(tmp_path / "opener")
    client = MlflowClient(f"sqlite:///{dbs[1]}")
    default = client.get_experiment("0")
    assert default.name == "Default" and default.artifact_location == str(tmp_path / "opener" / "mlruns" / "0")
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "a", 1.5, step=3)
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "a")] == [(3, 1.5)]


def test_a_store_migrates_itself_where_the_user_cache_cannot_be_written(tmp_path, monkeypatch):
    import s2lpo.tracking.sqlite_store as store

    (tmp_path / "cache").write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert store.empty_store() is None
    store.ensure_store(f"sqlite:///{tmp_path}/mlruns.db")
    assert MlflowClient(f"sqlite:///{tmp_path}/mlruns.db").get_experiment("0").name == "Default"
