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
        return compose("train", overrides=[f"paths.root_dir={tmp_path}", f"paths.cache_dir={CACHE}",
                                           f"paths.eval_cache_dir={tmp_path}/eval", *overrides])




def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (a run's driver, its Ray services and workers), then reap them."""
    import signal

    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


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

        from s2lpo.tracking.sqlite_store import ensure_store

        self.root.mkdir(parents=True, exist_ok=True)
        ensure_store(f"sqlite:///{self.root}/mlflow.db")  # the server opens a migrated store: seconds sooner
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


# -- logged runs with known values (analysis tests and benchmark) ------------------------------------------
ANALYSIS_RUNS = {  # (algorithm, explorer) -> final eval/toy/pass@1 per seed
    ("grpo", "none"): [0.50, 0.52, 0.54],
    ("s2lpo", "toy_s"): [0.60, 0.61, 0.65],
    ("token_temp", "none"): [0.55],
}


def write_logged_runs(root: Path, steps: int = 10, eval_every: int = 5, runs=None, extra_keys: int = 0,
                      overrides: tuple[str, ...] = ()) -> list[Path]:
    """Run directories (manifest + journal) with known metric values, as the trainer would leave them.

    eval/toy/pass@k at steps 0, eval_every, …: pass@1 rises linearly to the run's final value, pass@k =
    1 - (1 - pass@1)**k; train/n_explorer follows the linear schedule of group size 4 with t_mix 6;
    compute/rollout_flops_cum grows by 1e9 per step (2e9 with an explorer), compute/total_flops_cum by 6e9 (7e9);
    each evaluation is over 16 problems x 8 samples."""
    from omegaconf import OmegaConf

    from s2lpo.tracking.journal import Journal
    from s2lpo.tracking.run import Manifest, run_id

    dirs = []
    for (algo, explorer), finals in (runs or ANALYSIS_RUNS).items():
        for seed, final in enumerate(finals):
            ov = [*QUICK, f"algorithm={algo}", f"explorer={explorer}", f"seed={seed}", "algorithm.group_size=4",
                  "sweep=analysis", "logger=default"] + (["algorithm.t_mix=6"] if algo == "s2lpo" else ["algorithm.t_mix=0"])
            ov += list(overrides)
            cfg = OmegaConf.to_container(make_cfg(root, *ov), resolve=True)
            rid = run_id(cfg)
            d = root / "runs" / rid
            d.mkdir(parents=True, exist_ok=True)
            Manifest(d).start(cfg, rid)
            j = Journal(d)
            for step in range(steps + 1):
                m = {"train/loss": 1.0 / (step + 1) + seed, "compute/rollout_flops_cum": (step + 1) * 1e9 *
                     (2 if algo == "s2lpo" else 1), "compute/learner/tokens_cum": (step + 1) * 200.0,
                     "compute/explorer/tokens_cum": (step + 1) * (100.0 if algo == "s2lpo" else 0.0),
                     "compute/total_flops_cum": (step + 1) * 1e9 * (7 if algo == "s2lpo" else 6)}
                if algo == "s2lpo":
                    m["train/n_explorer"] = float(max(0, 4 - (step * 4) // 6)) if step <= 6 else 0.0
                m.update({f"extra/metric_{i:02d}": step * 0.5 + i for i in range(extra_keys)})
                if step % eval_every == 0:
                    p1 = final * step / steps
                    m.update({f"eval/toy/pass@{k}": 1 - (1 - p1) ** k for k in (1, 2, 4, 8)})
                    m.update({"eval/toy/n_problems": 16.0, "eval/toy/n_samples": 8.0})
                j.log(step, m)
            j.close()
            Manifest(d).update(status="finished")
            dirs.append(d)
    return dirs


def assert_passk_is_an_estimate(values: dict[int, float], n: int, problems: int) -> None:
    """``values`` (k -> pass@k) are unbiased estimates from ``n`` samples of each of ``problems`` problems: each is
    a mean over problems of 1 - C(n-c, k)/C(n, k) with integer correct counts c, so ``value * problems * C(n, k)``
    is an integer, and pass@k never falls as k grows."""
    from math import comb

    ks = sorted(values)
    for k in ks:
        scaled = values[k] * problems * comb(n, k)
        assert abs(scaled - round(scaled)) < 1e-6, (k, values[k], n, problems)
    assert all(values[a] <= values[b] + 1e-12 for a, b in zip(ks, ks[1:])), values


def build_sizes(recipe, cache_dir, sizes: list[str], threads: int):
    """``build_family`` in a spawned worker with the caller's torch threads (tests of concurrent builds); its
    manifest."""
    import torch

    from s2lpo.models.family import build_family

    torch.set_num_threads(threads)
    return build_family(recipe, cache_dir, log=lambda *_: None, sizes=sizes).manifest
