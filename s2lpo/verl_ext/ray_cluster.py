"""A Ray cluster over a SLURM allocation, for multi-node verl runs.

The training job has one task per node (``learner.resources.nodes`` > 1: submitit's ``nodes=N,
ntasks_per_node=1``), and every task enters ``ray_cluster()``: task 0 starts the Ray head on its node
and, once every task's node has joined, yields the head's address (also set as ``RAY_ADDRESS``, so the
runner joins the cluster without ``num_cpus``, which Ray refuses when joining); every other task runs
``ray start --address=<head> --block`` and returns when the head goes away, yielding ``None``.

Two traps of verl's own SLURM example are avoided: the node list is expanded with
``scontrol show hostnames`` (its ``nodes_array`` indexing picks the wrong host), and the head's address
is its IP as resolved on the head itself. Ray's session files go to a short per-job directory.

Ray (>= 2.5x) authenticates with a token: task 0 makes a fresh one per job and hands it to the other tasks
through ``shared_dir`` (a directory every node sees, e.g. submitit's job folder; file mode 600), and
every Ray process of the job (head, workers, the trainer's driver) gets it as ``RAY_AUTH_TOKEN``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


class RayClusterError(RuntimeError):
    pass


def slurm_hostnames(nodelist: str | None = None) -> list[str]:
    nodelist = nodelist or os.environ["SLURM_JOB_NODELIST"]
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()


def wait_for_port(host: str, port: int, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise RayClusterError(f"the Ray head at {host}:{port} did not come up within {timeout:.0f}s")


def wait_for_nodes(address: str, n: int, timeout: float) -> None:
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        end = time.time() + timeout
        while time.time() < end:
            if sum(node["Alive"] for node in ray.nodes()) >= n:
                return
            time.sleep(1)
        raise RayClusterError(f"only {sum(x['Alive'] for x in ray.nodes())} of {n} Ray nodes joined in {timeout:.0f}s")
    finally:
        ray.shutdown()


def _resources(gpus: int | None, object_store_mb: int | None) -> list[str]:
    args = ["--disable-usage-stats"]
    if gpus is not None:
        args.append(f"--num-gpus={gpus}")
    if object_store_mb:
        args.append(f"--object-store-memory={object_store_mb * 1024 * 1024}")
    return args


def share_token(shared_dir: Path, rank: int, timeout: float) -> None:
    """Task 0 writes a fresh token; the others wait for it. Sets ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN`` (before
    anything imports Ray in this process: Ray reads them once)."""
    import secrets

    path = Path(shared_dir) / f".ray_token_{os.environ.get('SLURM_JOB_ID', 'local')}"
    if rank == 0:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    end = time.time() + timeout
    while not path.exists():
        if time.time() > end:
            raise RayClusterError(f"no Ray token from task 0 in {path} within {timeout:.0f}s (is {shared_dir} shared?)")
        time.sleep(1)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = path.read_text().strip()


def session_pids(sid: int) -> list[int]:
    """The live processes (zombies left out) of session ``sid``, from ``/proc``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, _pgrp, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if int(session) == sid and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def kill_session(sid: int, timeout: float = 30.0) -> None:
    """SIGKILL every process of session ``sid`` until none is left (Ray's workers lead process groups of their
    own, so a process group is not enough), as ``ray stop --force`` does for every Ray process of the node."""
    end = time.time() + timeout
    while (pids := session_pids(sid)) and time.time() < end:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


@contextmanager
def ray_cluster(shared_dir: Path, port: int = 6379, gpus_per_node: int | None = None,
                object_store_mb: int | None = None, timeout: float = 300.0, log=print) -> Iterator[str | None]:
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    n_tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    head = slurm_hostnames()[0]
    job = os.environ.get("SLURM_JOB_ID", "local")
    temp_dir = f"/tmp/ray-{job}"
    share_token(shared_dir, rank, timeout)
    if rank == 0:
        ip = socket.gethostbyname(head)
        address = f"{ip}:{port}"
        cmd = [RAY, "start", "--head", f"--node-ip-address={ip}", f"--port={port}", f"--temp-dir={temp_dir}",
               "--include-dashboard=false", *_resources(gpus_per_node, object_store_mb)]
        log(f"ray head on {head} ({address}); waiting for {n_tasks} node(s)")
        # a session of its own: Ray's daemons and workers stay in it, and stopping kills that session only
        # (`ray stop` kills every Ray process on the node: another job's cluster, another array task's run)
        started = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        out, _ = started.communicate()
        if started.returncode:
            kill_session(started.pid)
            raise subprocess.CalledProcessError(started.returncode, cmd, out)
        try:
            wait_for_nodes(address, n_tasks, timeout)
            os.environ["RAY_ADDRESS"] = address
            yield address
        finally:
            os.environ.pop("RAY_ADDRESS", None)
            kill_session(started.pid)
    else:
        ip = socket.gethostbyname(head)
        wait_for_port(ip, port, timeout)
        log(f"task {rank}: joining the ray head at {ip}:{port}")
        # the node leaves once the head has been gone 10 s (Ray's default waits a minute)
        env = {**os.environ, "RAY_gcs_rpc_server_reconnect_timeout_s": "10"}
        subprocess.run([RAY, "start", f"--address={ip}:{port}", "--block", *_resources(gpus_per_node, object_store_mb)],
                       capture_output=True, env=env)
        yield None


def probe(object_store_mb: int = 100) -> dict | None:
    """A SLURM job's check of the cluster it would train on: the Ray nodes and resources task 0 sees
    (``None`` on the other tasks). Submit it with the training job's resources to test a partition."""
    import submitit

    shared = submitit.JobEnvironment().paths.folder
    with ray_cluster(shared, port=int(os.environ.get("S2LPO_RAY_PORT", "6379")), object_store_mb=object_store_mb) as head:
        if head is None:
            return None
        import ray  # after the token is in the environment: Ray reads its auth settings once

        ray.init(address=head, logging_level="ERROR", log_to_driver=False)
        try:
            nodes = [n for n in ray.nodes() if n["Alive"]]
            return {"address": head, "nodes": len(nodes), "cpus": ray.cluster_resources().get("CPU", 0.0),
                    "hosts": sorted({n["NodeManagerHostname"] for n in nodes})}
        finally:
            ray.shutdown()
