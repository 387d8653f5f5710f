"""Sweep submission and per-job overhead on the local SLURM cluster (started if needed).

    python benchmarks/bench_sweep.py [--runs 48] [--jobs 4]

1. ``submit_sweep`` of a 48-run toy grid (jobs held, then cancelled: nothing runs), from the call to
   every job queued; goal < 5 s. Baseline measured in the same run: the same 48 jobs submitted one
   ``sbatch`` each (submitit without ``batch()``, what a per-run launcher does).
2. Per-job framework overhead: for ``--jobs`` toy runs, the time from the job's start (submitit's first
   log line) to the run's first journal record (step 0, the initial evaluation) and to its first
   training step.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from s2lpo_testing import QUICK  # noqa: E402

JOB = ["learner.resources.cpus_per_task=1", "learner.resources.mem_gb=1", "explorer.resources.cpus_per_task=1",
       "explorer.resources.mem_gb=1", "logger=journal", f"paths.cache_dir={ROOT / '.cache'}"]


def grid(path: Path, name: str, runs: int, hold: bool) -> None:
    quick = [o for o in QUICK if not o.startswith(("algorithm.t_mix", "explorer=", "logger="))]
    lrs = [f"{1e-5 * (i + 1):.0e}" for i in range(max(1, runs // 12))]
    common = [*quick, *JOB] + (["+launcher.additional_parameters.hold=true"] if hold else [])
    spec = {"name": name, "common": common,
            "axes": {"algorithm": ["grpo", "s2lpo"], "explorer": ["toy_s"], "algorithm.t_mix": [3],
                     "trainer.lr": lrs, "seed": list(range(6))},
            "only_for": {"explorer": ["s2lpo"], "algorithm.t_mix": ["s2lpo"]}}
    path.write_text(json.dumps(spec))


def cancel(job_ids: list[str]) -> None:
    bases = sorted({j.split("_")[0] for j in job_ids})
    if bases:
        subprocess.run(["scancel", *bases], check=False)


def bench_submit(args, tmp: Path) -> None:
    import submitit

    from s2lpo.sweep.grid import load_sweep
    from s2lpo.sweep.jobs import TrainJob
    from s2lpo.sweep.submit import SweepManifest, plan_sweep, submit_sweep

    grid(tmp / "g.yaml", "bench", args.runs, hold=True)
    sweep = load_sweep(tmp / "g.yaml")
    t0 = time.perf_counter()
    rep = submit_sweep(sweep, tmp / "root")
    ours = time.perf_counter() - t0
    m = SweepManifest(tmp / "root", "bench").data
    ids = [e["jobs"][-1] for e in m["runs"].values()] + [j for js in m["cache_jobs"].values() for j in js]
    queued = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert set(ids) <= set(queued), "not every job is queued"
    cancel(ids)
    planned = plan_sweep(sweep, tmp / "root")
    t0 = time.perf_counter()
    ex = submitit.SlurmExecutor(folder=str(tmp / "naive"))
    ex.update_parameters(time=60, cpus_per_task=1, mem="1GB", additional_parameters={"hold": True})
    naive = [ex.submit(TrainJob(), r.overrides) for r in planned]
    base = time.perf_counter() - t0
    cancel([j.job_id for j in naive])
    print(f"{len(rep.submitted)} runs + {len(rep.cache_jobs)} explorer-cache job(s) queued by submit_sweep in "
          f"{ours:.2f} s (goal < 5 s; validation of every run included); one sbatch per run: {base:.2f} s "
          f"without validation ({base / ours:.1f}x)")


def _log_start(out_log: Path) -> float:
    m = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - Starting", out_log.read_text())
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def bench_overhead(args, tmp: Path) -> None:
    from s2lpo.sweep.grid import load_sweep
    from s2lpo.sweep.status import sweep_status
    from s2lpo.sweep.submit import SweepManifest, submit_sweep
    from s2lpo.tracking.journal import read_records

    grid(tmp / "o.yaml", "overhead", 12, hold=False)
    sweep = load_sweep(tmp / "o.yaml")
    sweep = type(sweep)(sweep.name, sweep.path, tuple(r for r in sweep.runs if "algorithm=grpo" in r)[: args.jobs])
    root = tmp / "root2"
    submit_sweep(sweep, root)
    deadline = time.time() + 600
    while time.time() < deadline and not all(r.slurm_state == "COMPLETED" for r in sweep_status(root, sweep.name)):
        time.sleep(1)
    m = SweepManifest(root, sweep.name).data
    to0, to1 = [], []
    for e in m["runs"].values():
        job = e["jobs"][-1]
        folder = root / "sweeps" / sweep.name / "submitit"
        start = _log_start(next(folder.glob(f"{job}_0_log.out")))
        t = {r["step"]: r["t"] for r in read_records(e["run_dir"])}
        to0.append(t[0] - start)
        to1.append(t[1] - start)
    print(f"per-job overhead over {len(to0)} jobs (median): job start -> first journal record (step 0, after the "
          f"initial evaluation) {statistics.median(to0):.1f} s; -> first training step {statistics.median(to1):.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=48)
    p.add_argument("--jobs", type=int, default=4)
    args = p.parse_args()
    from s2lpo.sweep.cluster import LocalCluster

    LocalCluster().up()
    with tempfile.TemporaryDirectory() as d:
        bench_submit(args, Path(d))
        bench_overhead(args, Path(d))


if __name__ == "__main__":
    main()
