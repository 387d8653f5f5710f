"""Shared fixtures; helpers live in s2lpo_testing.py."""

from __future__ import annotations

import pytest

from s2lpo_testing import CACHE, make_cfg


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
