"""Tracking costs, measured in this one run against baselines from the same run.

    python benchmarks/bench_tracking.py [--steps 40] [--repeats 2] [--points 10000]

1. Overhead per training step: the same toy run with its replicas on (MLflow on a local server + W&B
   offline) and off (journal only), alternated ``--repeats`` times; the wall time per step is read from
   the journal's timestamps (it includes ``Tracker.log``), eval steps excluded. Goal: < 2 %.
2. Delivery: ``--points`` journal points (500 steps x 20 keys by default) delivered to a fresh run on a
   local ``mlflow server`` through ``Delivery.drain`` (log_batch, 1000 per call). Goal: < 2 s. Baseline:
   the same server with one ``log_metric`` call per point (MLflow's plain API), on 1,000 points.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from s2lpo_testing import MlflowServer, make_cfg  # noqa: E402


def step_walls(run_dir: Path, eval_every: int, after: int = 1) -> list[float]:
    from s2lpo.tracking.journal import read_records

    recs = read_records(run_dir)
    t = {r["step"]: r["t"] for r in recs}
    return [t[s] - t[s - 1] for s in sorted(t) if s > after and s - 1 in t and s % eval_every != 0]


def overhead(args, server: MlflowServer, tmp: Path) -> None:
    from s2lpo.trainer.local import train

    common = ["family=toy", "learner=toy_m", "explorer=none", "algorithm=grpo", f"trainer.total_steps={args.steps}",
              "trainer.eval_every=10", "trainer.eval_samples=2", "trainer.final_eval_samples=2",
              "trainer.eval_problems=16", f"trainer.checkpoint_every={args.steps}", "trainer.threads=1",
              f"paths.cache_dir={args.cache}", f"logger.mlflow.tracking_uri={server.uri}", "logger.wandb.mode=offline"]
    walls: dict[str, list[float]] = {"off": [], "on": []}
    steady: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(args.repeats):
        for mode, logger in (("off", "journal"), ("on", "default")):
            cfg = make_cfg(tmp / f"{mode}{r}", *common, f"logger={logger}", f"seed={r}")
            res = train(cfg, log=lambda *_: None)
            walls[mode] += step_walls(res.run_dir, 10)
            steady[mode] += step_walls(res.run_dir, 10, after=10)  # W&B's service process has started
    off, on = statistics.median(walls["off"]), statistics.median(walls["on"])
    print(f"step wall time, median over {len(walls['off'])} steps: replicas off {off * 1000:.1f} ms, "
          f"on {on * 1000:.1f} ms; overhead {100 * (on / off - 1):+.2f} % (goal < 2 %)")
    moff, mon = statistics.mean(walls["off"]), statistics.mean(walls["on"])
    print(f"  (means: off {moff * 1000:.1f} ms, on {mon * 1000:.1f} ms, {100 * (mon / moff - 1):+.2f} %)")
    soff, son = statistics.mean(steady["off"]), statistics.mean(steady["on"])
    print(f"  (means after step 10: off {soff * 1000:.1f} ms, on {son * 1000:.1f} ms, {100 * (son / soff - 1):+.2f} %)")


def delivery(args, server: MlflowServer, tmp: Path) -> None:
    from mlflow.tracking import MlflowClient

    from s2lpo.tracking.delivery import Delivery
    from s2lpo.tracking.journal import Journal
    from s2lpo.tracking.mlflow_replica import MlflowReplica, configure_http

    keys = [f"bench/metric_{i:02d}" for i in range(20)]
    steps = args.points // len(keys)
    run_dir = tmp / "delivery"
    j = Journal(run_dir)
    for s in range(steps):
        j.log(s, {k: s * 0.001 + i for i, k in enumerate(keys)})
    j.close()
    d = Delivery(MlflowReplica(server.uri, "bench", "bench-delivery", "bench", {}, {}), run_dir)
    t0 = time.perf_counter()
    sent = d.drain()
    ours = time.perf_counter() - t0
    configure_http()
    client = MlflowClient(server.uri)
    run = client.create_run(client.get_experiment_by_name("bench").experiment_id)
    n_base = 1000
    t0 = time.perf_counter()
    for i in range(n_base):
        client.log_metric(run.info.run_id, keys[i % len(keys)], float(i), step=i // len(keys))
    base = (time.perf_counter() - t0) * sent / n_base
    print(f"{sent} points to a local mlflow server: {ours:.2f} s with Delivery (log_batch) (goal < 2 s); "
          f"log_metric per point would take {base:.1f} s (measured on {n_base}): {base / ours:.0f}x faster")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--points", type=int, default=10_000)
    p.add_argument("--cache", default=str(ROOT / ".cache"))
    p.add_argument("--only", choices=["overhead", "delivery"])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = MlflowServer(tmp / "server").start()
        try:
            if args.only in (None, "delivery"):
                delivery(args, server, tmp)
            if args.only in (None, "overhead"):
                overhead(args, server, tmp)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
