"""verl's own training loop on CPU (``trainer=verl trainer.device=cpu``) against the local trainer, same config,
both measured in this run; and what a kill and resume costs on verl.

    python benchmarks/bench_verl_cpu.py [--steps 6] [--algorithm s2lpo]

Each run is ``experiments/train.py`` in a fresh process (the toy test family, G=4, 2 prompts per step, 24 new
tokens, checkpoints every 2 steps, no evaluation between), so start-up is included as a user sees it:
- local: total wall time, per-step ``time/step_s`` (first and median of the rest);
- verl: the same, plus start-up (wall time minus the steps: Ray, verl's workers, FSDP, the stand-in server);
- resume: a verl run SIGKILLed (its whole process tree) right after its step-2 checkpoint, then the same
  command again: the second start's wall time.
Printed as ratios to the local trainer measured here (the baseline), never as absolute claims.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from s2lpo_testing import CACHE, QUICK, kill_tree  # noqa: E402


def overrides(args, root: Path, backend: str) -> list[str]:
    ov = [*QUICK, f"paths.root_dir={root}", f"paths.cache_dir={CACHE}", f"algorithm={args.algorithm}",
          f"trainer.total_steps={args.steps}", f"trainer.eval_every={args.steps}", "trainer.checkpoint_every=2"]
    if args.algorithm == "grpo":
        ov += ["explorer=none", "algorithm.t_mix=0"]
    if backend == "verl":
        ov += ["trainer=verl", "trainer.device=cpu", "trainer.mini_batches=1", "trainer.lr=5e-5"]
    return ov


def timed_run(args, root: Path, backend: str, kill_after_checkpoint: int | None = None) -> tuple[float, Path]:
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), *overrides(args, root, backend)]
    t0 = time.time()
    with open(root / f"{backend}-{int(t0)}.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if kill_after_checkpoint:
            while True:
                trackers = list((root / "runs").glob("*/verl_checkpoints/latest_checkpointed_iteration.txt"))
                if trackers and trackers[0].read_text().strip() == str(kill_after_checkpoint):
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"the run ended before its step-{kill_after_checkpoint} checkpoint")
                time.sleep(0.05)
            kill_tree(proc.pid)
        elif proc.wait() != 0:
            raise RuntimeError(f"{backend} run failed: see {out.name}")
    [run_dir] = [p.parent for p in (root / "runs").glob("*/manifest.json")]
    return time.time() - t0, run_dir


def steps_of(run_dir: Path) -> list[float]:
    from s2lpo.tracking.journal import read_history

    return [v for _, v in sorted(read_history(run_dir)["time/step_s"].items())]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--algorithm", default="s2lpo", choices=["s2lpo", "grpo"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-verl-cpu-") as tmp:
        tmp = Path(tmp)
        for d in ("local", "verl", "resume"):
            (tmp / d).mkdir()
        local_wall, local_dir = timed_run(args, tmp / "local", "local")
        verl_wall, verl_dir = timed_run(args, tmp / "verl", "verl")
        timed_run(args, tmp / "resume", "verl", kill_after_checkpoint=2)
        resume_wall, _ = timed_run(args, tmp / "resume", "verl")
        lo, ve = steps_of(local_dir), steps_of(verl_dir)
    lo_med, ve_med = statistics.median(lo[1:]), statistics.median(ve[1:])
    startup = verl_wall - sum(ve)
    print(f"{args.algorithm}, {args.steps} steps, toy_tiny (l 0.27M learner), G=4 x 2 prompts, 24 new tokens, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':28}{'local':>10}{'verl-cpu':>10}{'ratio':>8}")
    print(f"{'first step (s)':28}{lo[0]:10.2f}{ve[0]:10.2f}{ve[0] / lo[0]:8.1f}x")
    print(f"{'later steps, median (s)':28}{lo_med:10.2f}{ve_med:10.2f}{ve_med / lo_med:8.1f}x")
    print(f"{'whole run, wall (s)':28}{local_wall:10.1f}{verl_wall:10.1f}{verl_wall / local_wall:8.1f}x")
    print(f"{'verl start-up (s)':28}{'':10}{startup:10.1f}{startup / verl_wall:8.0%} of its run")
    print(f"{'resume after kill, wall (s)':28}{'':10}{resume_wall:10.1f}{resume_wall / verl_wall:8.2f}x its run")


if __name__ == "__main__":
    main()
