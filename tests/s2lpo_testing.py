"""Shared test helpers (on sys.path through pytest's `pythonpath`; a plain module, no package). Tests use the tiny family recipe (conf/family/toy_tiny.yaml), built once into
.cache/ of the checkout (reused by later runs) unless S2LPO_TEST_CACHE points elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
CACHE = Path(os.environ.get("S2LPO_TEST_CACHE", ROOT / ".cache"))

QUICK = [
    "family=toy_tiny", "learner=toy_l", "explorer=toy_s", "logger=journal",
    "trainer.total_steps=4", "trainer.eval_every=2", "trainer.eval_problems=8", "trainer.eval_samples=2",
    "trainer.final_eval_samples=4", "trainer.checkpoint_every=2", "trainer.threads=1",
    "algorithm.group_size=4", "algorithm.t_mix=3", "data.prompts_per_step=2", "data.max_new_tokens=24",
]


def make_cfg(tmp_path: Path, *overrides: str):
    """Compose conf/train.yaml as the app would, with paths under ``tmp_path`` and the shared cache."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("train", overrides=[f"paths.root_dir={tmp_path}", f"paths.cache_dir={CACHE}", *overrides])




def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` (sqlite backend, one worker) on a free loopback port."""

    def __init__(self, root: Path):
        self.root, self.port = Path(root), free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 90.0) -> MlflowServer:
        import subprocess
        import sys
        import time
        import urllib.request

        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_ENABLE_TELEMETRY": "false",
               "DO_NOT_TRACK": "1"}
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        self.proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--default-artifact-root", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=open(self.root / "server.log", "ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.uri} within {timeout:.0f}s")

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except Exception:  # noqa: BLE001 - a server that ignores SIGTERM is killed
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def mlflow_points(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """``{journal key: [(step, value), ...]}`` of every row MLflow holds for a run (duplicates kept)."""
    from s2lpo.tracking.mlflow_replica import from_mlflow_key

    run = client.get_run(run_id)
    return {from_mlflow_key(k): sorted((m.step, m.value) for m in client.get_metric_history(run_id, k))
            for k in run.data.metrics}
