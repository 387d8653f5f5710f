"""Shared fixtures; helpers live in s2lpo_testing.py."""

from __future__ import annotations

import os

import pytest

from s2lpo_testing import CACHE, make_cfg


def share_the_cores() -> int | None:
    """Under pytest-xdist (``make test``), each worker's torch and the processes it starts get that worker's
    share of the cores. With a thread per core in each of two processes, libgomp's spin-waiting makes them
    take turns: a 2-thread loop of small matmuls took 0.9 s alone and 65.6 s beside a second one on 2 cores
    (1.3 s and 1.3-1.5 s with one thread each). Study workers split the cores the same way
    (``s2lpo.study.parallel.threads_per_job``); verl's CPU actors run one thread each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return None
    import torch

    from s2lpo.study.parallel import threads_per_job

    n = threads_per_job(workers)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return n


share_the_cores()


@pytest.fixture(scope="session")
def tiny_family():
    from s2lpo.models.family import build_family
    from s2lpo.models.resolve import family_recipe

    cfg = make_cfg(CACHE, "family=toy_tiny")
    return build_family(family_recipe(cfg), CACHE, log=lambda *_: None)


@pytest.fixture
def mlflow_server(tmp_path):
    from s2lpo_testing import MlflowServer

    server = MlflowServer(tmp_path / "mlflow-server").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node SLURM cluster with accounting (Debian's packages; installed when missing and
    this is root with apt-get). Skipped where it cannot run, except in CI (CI=true), where that fails."""
    import os

    from s2lpo.sweep.cluster import ClusterError, LocalCluster

    cluster = LocalCluster()
    started = not cluster.ready() if cluster.installed() and cluster.conf.exists() else True
    try:
        cluster.up()
    except ClusterError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no SLURM cluster here: {str(e)[:300]}")
    yield cluster
    if started:
        cluster.down()
