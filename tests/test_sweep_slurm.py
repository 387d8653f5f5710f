"""Sweeps on a real single-node SLURM cluster (sbatch, sacct, requeue), tracking to a real MLflow server."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import submitit
from mlflow.tracking import MlflowClient

from s2lpo.sweep.grid import load_sweep
from s2lpo.sweep.manifest import SweepManifest
from s2lpo.sweep.status import sweep_status
from s2lpo.sweep.submit import submit_sweep
from s2lpo.tracking.journal import read_history
from s2lpo.tracking.wandb_files import offline_dirs
from s2lpo.trainer.local import train
from s2lpo_testing import CACHE, QUICK, ROOT, make_cfg, mlflow_points

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

JOB = ["learner.resources.cpus_per_task=1", "learner.resources.mem_gb=1", "explorer.resources.cpus_per_task=1",
       "explorer.resources.mem_gb=1", "launcher.signal_delay_s=30"]


def write_sweep(path, name, server, common=(), seeds=(0,), algorithms=("grpo", "s2lpo")):
    quick = [o for o in QUICK if not o.startswith(("algorithm.t_mix", "explorer="))]
    spec = {"name": name,
            "common": [f"paths.cache_dir={CACHE}", *quick, *JOB, "logger=default", "logger.wandb.mode=offline",
                       f"logger.mlflow.tracking_uri={server.uri}", "logger.delivery.interval_s=0.5", *common],
            "axes": {"algorithm": list(algorithms), "explorer": ["toy_s"], "algorithm.t_mix": [3], "seed": list(seeds)},
            "only_for": {"explorer": ["s2lpo"], "algorithm.t_mix": ["s2lpo"]}}
    path.write_text(json.dumps(spec))  # JSON is YAML
    return load_sweep(path)


def wait_for(root, name, done, timeout=600, poll=1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = sweep_status(root, name)
        if done(rows):
            return rows
        time.sleep(poll)
    raise AssertionError(f"sweep {name} not there within {timeout}s: {[(r.run_id, r.state, r.slurm_state) for r in rows]}")


def journal_points(run_dir):
    return {k: sorted(v.items()) for k, v in read_history(run_dir).items()}


def test_a_sweep_runs_on_slurm_reports_and_is_not_resubmitted(tmp_path, tiny_family, slurm_cluster, mlflow_server):
    sweep = write_sweep(tmp_path / "six.yaml", "six", mlflow_server, seeds=(0, 1, 2))
    root = tmp_path / "root"
    rep = submit_sweep(sweep, root)
    assert len(rep.submitted) == 6 and len(rep.cache_jobs) == 1 and rep.skipped == {}
    queued = {r.run_id: r.state for r in sweep_status(root, "six")}
    assert set(queued.values()) <= {"queued", "running", "done"} and len(queued) == 6
    rows = wait_for(root, "six", lambda rs: all(r.state == "failed" or r.slurm_state == "COMPLETED" for r in rs))
    assert [r.state for r in rows] == ["done"] * 6, [(r.run_id, r.state, r.slurm_state) for r in rows]
    assert all(r.step == r.total_steps == 4 and r.slurm_state == "COMPLETED" for r in rows)
    # the training jobs waited for the explorer-cache job (afterok), and every run is in MLflow once
    manifest = SweepManifest(root, "six").data
    assert all(e["jobs"] for e in manifest["runs"].values())
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("s2lpo").experiment_id
    [parent] = client.search_runs([exp], "tags.`s2lpo.kind` = 'sweep' and tags.`s2lpo.sweep` = 'six'")
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["s2lpo.run_id"] for c in children) == sorted(r.run_id for r in rows)
    for c in children:
        run_dir = root / "runs" / c.data.tags["s2lpo.run_id"]
        assert c.info.status == "FINISHED"
        assert mlflow_points(client, c.info.run_id) == journal_points(run_dir)
    # the same sweep again: nothing to do
    again = submit_sweep(sweep, root)
    assert again.submitted == [] and again.cache_jobs == [] and set(again.skipped.values()) == {"done"}


def _job(root, name, rid):
    job_id = SweepManifest(root, name).data["runs"][rid]["jobs"][-1]
    return submitit.SlurmJob(root / "sweeps" / name / "submitit", job_id)


def _job_pids(job_id):
    """The pids of the job's processes on the (one) node, from slurmd."""
    out = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()[1:] if line.split() and line.split()[0].isdigit()]


def test_preempted_job_requeues_and_resumes_into_the_same_runs(tmp_path, tiny_family, slurm_cluster, mlflow_server):
    long = ["trainer.total_steps=40", "trainer.checkpoint_every=5", "trainer.eval_every=10"]
    sweep = write_sweep(tmp_path / "pre.yaml", "pre", mlflow_server, common=long, algorithms=("grpo",))
    root = tmp_path / "root"
    [rid] = submit_sweep(sweep, root).submitted
    run_dir = root / "runs" / rid
    wait_for(root, "pre", lambda rs: (rs[0].step or 0) >= 8 and (run_dir / "tracking" / "mlflow.json").exists()
             and offline_dirs(run_dir), timeout=300, poll=0.1)
    job = _job(root, "pre", rid)
    # the job's processes held still (SIGSTOP) while SLURM sends the signals, which they take on SIGCONT: a
    # 40-step run on a fast machine could otherwise finish between the poll above and the signal (CI saw
    # restarts == 0 once). (`scontrol suspend` cannot be used: SLURM refuses to signal a suspended job.)
    pids = _job_pids(job.job_id)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    [held] = sweep_status(root, "pre")
    assert held.step < 40 and held.slurm_state == "RUNNING", (held.step, held.slurm_state)
    first_mlflow = json.loads((run_dir / "tracking" / "mlflow.json").read_text())["remote"]["run_id"]
    job._interrupt()  # SIGTERM (ignored) then USR2: checkpoint hook, requeue, exit
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    rows = wait_for(root, "pre", lambda rs: rs[0].state == "failed" or rs[0].slurm_state == "COMPLETED", timeout=400)
    assert rows[0].state == "done" and rows[0].job_id == job.job_id  # requeued: the job id stays
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["restarts"] >= 1 and m["slurm_restart_count"] >= 1
    # the same history as an uninterrupted run of the same seed (wall-clock timings aside)
    ref = train(make_cfg(tmp_path / "ref", *[o for o in sweep.runs[0] if not o.startswith("logger")],
                         "logger=journal", "launcher=slurm"), log=lambda *_: None)
    strip = lambda h: {k: v for k, v in h.items() if not k.startswith("time/")}  # noqa: E731
    assert strip(journal_points(run_dir)) == strip(journal_points(ref.run_dir))
    # the same MLflow run (one point per step) and the same W&B id
    assert json.loads((run_dir / "tracking" / "mlflow.json").read_text())["remote"]["run_id"] == first_mlflow
    client = MlflowClient(mlflow_server.uri)
    assert [s for s, _ in mlflow_points(client, first_mlflow)["train/loss"]] == list(range(1, 41))
    assert len(offline_dirs(run_dir, rid)) >= 2


def test_a_cancelled_job_is_failed_and_resubmitted(tmp_path, tiny_family, slurm_cluster, mlflow_server):
    long = ["trainer.total_steps=300", "trainer.checkpoint_every=5", "trainer.eval_every=100"]
    sweep = write_sweep(tmp_path / "can.yaml", "can", mlflow_server, common=long, algorithms=("grpo",), seeds=(5,))
    root = tmp_path / "root"
    [rid] = submit_sweep(sweep, root).submitted
    wait_for(root, "can", lambda rs: (rs[0].step or 0) >= 3, timeout=300)
    subprocess.run(["scancel", _job(root, "can", rid).job_id], check=True)
    rows = wait_for(root, "can", lambda rs: rs[0].state == "failed", timeout=120)
    assert rows[0].slurm_state == "CANCELLED"
    again = submit_sweep(sweep, root)
    assert again.submitted == [rid], again.skipped
    rows = wait_for(root, "can", lambda rs: rs[0].slurm_state == "COMPLETED", timeout=400)
    assert rows[0].step == 300 and len(SweepManifest(root, "can").data["runs"][rid]["jobs"]) == 2


def test_hydra_multirun_through_the_submitit_launcher(tmp_path, tiny_family, slurm_cluster):
    """The same launcher config drives Hydra's own (blocking) submitit launcher."""
    import os
    import sys

    from s2lpo_testing import ROOT

    quick = [o for o in QUICK if not o.startswith(("algorithm.t_mix", "explorer="))]
    cmd = [sys.executable, str(ROOT / "experiments/train.py"), "-m", "launcher=slurm", f"paths.root_dir={tmp_path}",
           f"paths.cache_dir={CACHE}", *quick, "explorer=none", "algorithm=grpo", *JOB[:2], "seed=0,1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=os.environ)
    assert out.returncode == 0, out.stderr[-2000:]
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/manifest.json")]
    assert sorted((m["config"]["seed"], m["status"]) for m in manifests) == [(0, "finished"), (1, "finished")]
    assert all(m["slurm_job_id"] for m in manifests)


def test_a_ray_cluster_over_the_allocations_tasks(tmp_path, slurm_cluster):
    """Multi-node verl jobs: task 0 starts the Ray head, the other tasks join it (here two tasks on the one
    node of the local cluster stand for two nodes: two raylets), and the head sees all of them. Stopping the
    job's cluster leaves another Ray cluster on the node running (`ray stop` killed it: CI lost a verl run
    that ran beside this test)."""
    from s2lpo.verl_ext.ray_cluster import RAY, kill_session, probe, session_pids
    from s2lpo_testing import free_port

    other_dir = tempfile.mkdtemp(prefix="ray-other-", dir="/tmp")  # Ray's socket paths must stay short
    other = subprocess.Popen([RAY, "start", "--head", f"--port={free_port()}", f"--temp-dir={other_dir}",
                              "--include-dashboard=false", "--num-cpus=1", "--disable-usage-stats"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = other.communicate(timeout=120)  # Ray's daemons do not hold the pipe (ray_cluster.py reads it so)
        assert other.returncode == 0, out[-3000:]  # a failed start says why (CI once saw only "1 == 0")
        bystander = session_pids(other.pid)
        ex = submitit.SlurmExecutor(folder=str(tmp_path / "submitit"))
        ex.update_parameters(nodes=1, ntasks_per_node=2, cpus_per_task=1, mem="2GB", time=10, job_name="ray-probe",
                             setup=[f"export S2LPO_RAY_PORT={free_port()}"])
        job = ex.submit(probe)
        res, joined = job.results()
        assert res["nodes"] == 2 and res["cpus"] >= 2 and len(res["hosts"]) == 1
        assert joined is None  # the joining task returned once the head stopped
        assert bystander and set(bystander) <= set(session_pids(other.pid))  # the other cluster still runs
    finally:
        kill_session(other.pid)
        shutil.rmtree(other_dir, ignore_errors=True)


def test_a_verl_sweep_runs_end_to_end_on_slurm(tmp_path, tiny_family, slurm_cluster, mlflow_server):
    """The cluster path as a user takes it, on CPU: ``s2lpo sweep submit <grid> trainer=verl trainer.device=cpu``
    -> the explorer-cache job -> SLURM array jobs running verl's trainer -> the MLflow server -> ``s2lpo sweep
    status`` all done -> ``analysis/regenerate.py`` writes the toy table from those runs."""
    from s2lpo.cli import main

    # one seed: arrays over seeds are the local-backend sweep's test (six runs); here each verl start costs ~1 min
    sweep = write_sweep(tmp_path / "verl.yaml", "verl", mlflow_server, seeds=(0,),
                        common=["learner.resources.mem_gb=6", "launcher.array_parallelism=2"])
    root = tmp_path / "root"
    verl = ["trainer=verl", "trainer.device=cpu", "trainer.mini_batches=1", "trainer.lr=1e-4"]
    assert main(["sweep", "submit", str(sweep.path), *verl, "--root", str(root)]) == 0
    rows = wait_for(root, "verl", lambda rs: all(r.state == "failed" or r.slurm_state == "COMPLETED" for r in rs),
                    timeout=900)
    assert [r.state for r in rows] == ["done"] * 2, [(r.run_id, r.state, r.slurm_state) for r in rows]
    client = MlflowClient(mlflow_server.uri)
    for r in rows:
        run_dir = root / "runs" / r.run_id
        m = json.loads((run_dir / "manifest.json").read_text())
        assert m["config"]["trainer"]["backend"] == "verl" and m["status"] == "finished"
        assert sorted(read_history(run_dir)["verl/training/global_step"]) == [1, 2, 3, 4]  # verl's own loop
        points = mlflow_points(client, m["tracking"]["mlflow"]["run_id"])
        assert points == journal_points(run_dir)
    assert main(["sweep", "status", "verl", "--root", str(root)]) == 0
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "regenerate.py"), "--source",
                           f"journal:{root}/runs", "--specs", str(ROOT / "analysis/specs/toy/table1_toy.yaml"),
                           "--out", str(out), "--cache", str(tmp_path / "cache")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    table = (out / "table1_toy.csv").read_text()
    assert "grpo" in table.lower() and "s2lpo" in table.lower().replace("-", "")
