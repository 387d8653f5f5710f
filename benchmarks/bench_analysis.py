"""Regenerating every artefact from a local MLflow server: 200 runs x 500 steps x 20 metrics.

    python benchmarks/bench_analysis.py [--runs 200] [--steps 500] [--metrics 20]

The runs are written into the server's store up front (not timed). Then ``regenerate`` of the toy
specs (1 table in md/tex/csv, 4 figures in png/pdf) is timed cold (every run fetched; goal < 20 s) and
again from the cache (goal < 2 s). Baseline measured in the same run: fetching the same histories
with one ``get_metric_history`` call per (run, key), MLflow's plain client API, on 20 runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from s2lpo_testing import MlflowServer  # noqa: E402


def populate(server: MlflowServer, args) -> None:
    """Runs tagged like the trainer's, written through the server's own sqlite store (fast, same data)."""
    from mlflow.entities import Metric, RunTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    exp = client.create_experiment("s2lpo")
    store = SqlAlchemyStore(f"sqlite:///{server.root}/mlflow.db", str(server.root / "artifacts"))
    methods = [("grpo", "none"), ("token_temp", "none"), ("g2rpo_a", "none"), ("s2lpo", "toy-s"), ("s2lpo", "toy-m")]
    keys = ["eval/toy/pass_at_1", "eval/toy/pass_at_8", "compute/rollout_flops_cum", "train/n_explorer",
            "compute/explorer/tokens_cum", "compute/learner/tokens_cum"]
    keys += [f"train/extra_{i:02d}" for i in range(args.metrics - len(keys))]
    for r in range(args.runs):
        method, explorer = methods[r % len(methods)]
        seed = r // len(methods)
        rid = f"{method}-toy-l-{explorer}-s{seed}-bench"
        run = client.create_run(exp, run_name=rid)
        tags = {"s2lpo.run_id": rid, "method": method, "learner": "toy-l", "explorer": explorer, "t_mix": "30",
                "seed": str(seed), "sweep": "bench", "schedule": "linear", "kind": "train", "group_size": "8"}
        store.log_batch(run.info.run_id, metrics=[], params=[], tags=[RunTag(k, v) for k, v in tags.items()])
        ms = [Metric(k, (s + r * 0.01 + i) / (args.steps + 10.0) / (1 + i), 1_700_000_000_000 + s, s)
              for s in range(args.steps) for i, k in enumerate(keys)]
        for b in range(0, len(ms), 1000):
            store.log_batch(run.info.run_id, metrics=ms[b : b + 1000], params=[], tags=[])
        client.set_terminated(run.info.run_id)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--metrics", type=int, default=20)
    args = p.parse_args()
    from s2lpo.analysis.regenerate import regenerate

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = MlflowServer(tmp / "server").start()
        try:
            t0 = time.perf_counter()
            populate(server, args)
            print(f"wrote {args.runs} runs x {args.steps} steps x {args.metrics} metrics "
                  f"({args.runs * args.steps * args.metrics:,} points) in {time.perf_counter() - t0:.0f} s (not timed)")
            src, specs = [f"mlflow:{server.uri}"], ROOT / "analysis" / "specs" / "toy"
            t0 = time.perf_counter()
            cold = regenerate(src, specs, tmp / "out", tmp / "cache", warn=lambda *_: None)
            t_cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            warm = regenerate(src, specs, tmp / "out2", tmp / "cache", warn=lambda *_: None)
            t_warm = time.perf_counter() - t0
            assert warm.fetched == 0 and cold.fetched == args.runs
            from mlflow.tracking import MlflowClient

            client = MlflowClient(server.uri)
            runs = client.search_runs([client.get_experiment_by_name("s2lpo").experiment_id], max_results=20)
            t0 = time.perf_counter()
            for run in runs:
                for key in run.data.metrics:
                    client.get_metric_history(run.info.run_id, key)
            base = (time.perf_counter() - t0) * args.runs / len(runs)
            print(f"all artefacts ({len(cold.written)} files): cold {t_cold:.1f} s (goal < 20 s), from the cache "
                  f"{t_warm:.2f} s (goal < 2 s); per-(run, key) get_metric_history would take {base:.0f} s just to "
                  f"fetch (measured on {len(runs)} runs): the cold path is {base / t_cold:.1f}x faster")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
