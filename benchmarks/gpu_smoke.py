"""The GPU smoke: what only a CUDA machine can check, in one command (``make gpu-smoke``).

Parts, each a fresh process on the toy test family (built offline, nothing downloaded), under a scratch root:

1. ``local``: the local trainer on CUDA (``trainer.device=cuda``), a few S2L-PO steps;
2. ``explorer-cache``: the verl backend's explorer-cache job, generating with vLLM;
3. ``verl``: ``trainer=verl`` on one GPU with vLLM as the rollout (FSDP actor + reference, KL on).

Prints one ``PASS``/``FAIL`` line per part with its wall time and the median step time from the run's journal,
and exits non-zero if a part failed. Without a CUDA device it prints why and exits 0 (a skip).

    python benchmarks/gpu_smoke.py [--root /tmp/s2lpo-gpu-smoke] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["experiment=toy_quick", "logger=journal", "trainer.eval_problems=16"]


def cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    return None


def step_times(run_dir: Path) -> list[float]:
    from s2lpo.tracking.journal import read_history

    return [v for _, v in sorted(read_history(run_dir).get("time/step_s", {}).items())]


def run_part(name: str, argv: list[str], root: Path, timeout: int) -> bool:
    t0 = time.time()
    log = root / f"{name}.log"
    with open(log, "w") as out:
        try:
            rc = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    wall = time.time() - t0
    runs = sorted((root / "runs").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    detail = ""
    if name != "explorer-cache" and runs:
        m = json.loads(runs[-1].read_text())
        times = step_times(runs[-1].parent)
        if times:
            detail = (f", first step {times[0]:.2f}s, median step {statistics.median(times[1:] or times):.2f}s "
                      f"over {len(times)} steps, status {m['status']}")
    ok = rc == 0
    print(f"{'PASS' if ok else 'FAIL'} {name}: {wall:.1f}s{detail}" + ("" if ok else f" (exit {rc}; log {log})"),
          flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--timeout", type=int, default=1800, help="per part, seconds")
    args = p.parse_args(argv)
    reason = cuda_reason()
    if reason:
        print(f"SKIP gpu-smoke: {reason}")
        return 0
    root = (args.root or Path(tempfile.mkdtemp(prefix="s2lpo-gpu-smoke-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    common = [*QUICK, f"paths.cache_dir={root / 'cache'}", f"trainer.total_steps={args.steps}"]
    verl = ["trainer=verl", "trainer.device=cuda", "trainer.mini_batches=1", "learner.resources.gpus_per_node=1",
            "trainer.verl.actor_rollout_ref.rollout.tensor_model_parallel_size=1",
            "trainer.verl.actor_rollout_ref.rollout.gpu_memory_utilization=0.3", "algorithm.kl_coef=0.001"]
    print(f"gpu-smoke under {root}", flush=True)
    parts = [
        ("local", [py, "experiments/train.py", *common, "trainer.device=cuda"]),
        ("explorer-cache", [py, "experiments/generate_explorer.py", *common, *verl]),
        ("verl", [py, "experiments/train.py", *common, *verl]),
    ]
    results = []
    for name, cmd in parts:  # a run directory of its own per part; one family and explorer cache for all
        (root / name).mkdir(exist_ok=True)
        results.append(run_part(name, [*cmd, f"paths.root_dir={root / name}"], root / name, args.timeout))
    print(f"gpu-smoke: {sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
