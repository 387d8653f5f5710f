"""Every bad input and damaged run of issue 16, tried through the real entry points as a user would, counted.

    python tests/hostile_inputs.py [--jobs 2] [--only SUBSTRING]

Each case runs ``experiments/*.py`` or ``s2lpo`` in a fresh process under a temporary root (the tiny toy family
from the test cache) and is classified from what the user sees:

* clean: a rejected input exits non-zero with one message naming the field / file (no traceback); a damaged run
  that can be mended is, with a warning saying what was done;
* unclear: exits non-zero without a traceback, but the message does not name what is wrong;
* traceback: a Python traceback reaches the user;
* silent: a bad input is accepted (exit 0), or a damage goes unmentioned.

Not a test module (pytest does not collect it): it takes minutes; its counts go into the issue's closing note.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("S2LPO_TEST_CACHE", ROOT / ".cache"))
QUICK = ["family=toy_tiny", "learner=toy_l", "explorer=toy_s", "logger=journal", "trainer.total_steps=2",
         "trainer.eval_every=2", "trainer.eval_problems=4", "trainer.eval_samples=2", "trainer.final_eval_samples=2",
         "trainer.checkpoint_every=1", "trainer.threads=1", "algorithm.group_size=4", "algorithm.t_mix=0",
         "algorithm=grpo", "explorer=none", "data.prompts_per_step=2", "data.max_new_tokens=16"]


@dataclass
class Case:
    name: str
    argv: list[str]  # after the interpreter; {root} is the case's directory
    expect: str  # "reject" | "recover"
    needle: str  # what the message must name
    setup: object = None  # callable(root) preparing files
    after: object = None  # callable(root) -> str | None (a problem found after a recovery)
    env: dict = field(default_factory=dict)


def train(*ov: str, expect="reject", needle="", **kw) -> Case:
    return Case(" ".join(ov), ["experiments/train.py", "paths.root_dir={root}", f"paths.cache_dir={CACHE}", *QUICK,
                               *ov], expect, needle or ov[-1].split("=")[0].lstrip("+"), **kw)


CONFIG = [
    train("trainer.grad_clip=-1"), train("algorithm.offpolicy_correction=truncated_is", "algorithm.is_cap=-1"),
    train("+algorithm.tmix=5"), train("algorithm.tmix=5"), train("trainer.total_steps=abc"),
    train("algorithm=rollout_correction", needle="rollout_correction"), train("learner.path=/nonexistent"),
    train("trainer.threads=-1"), train("trainer.eval_temperature=0"), train("trainer.weight_decay=-1"),
    train("family.sizes.l.hidden_size=-5"), train("seed=abc"), train("data.max_new_tokens=1000"),
    train("trainer.warmup_steps=-5"), train("trainer.eval_problems=100000"), train("trainer.lr=0"),
    train("trainer.lr=abc"), train("algorithm.group_size=1"), train("algorithm.t_mix=-1"),
    train("algorithm=s2lpo", "explorer=toy_s", "algorithm.t_mix=1"),
    train("algorithm=s2lpo", "explorer=toy_s", "algorithm.t_mix=100"), train("algorithm.temperature=0"),
    train("algorithm.top_p=2"), train("algorithm.top_k=-1"), train("algorithm.clip_ratio=0"),
    train("algorithm.kl_coef=-0.1"), train("algorithm.loss_agg_mode=mean"), train("algorithm.schedule=exp"),
    train("algorithm=g2rpo_a", "algorithm.guidance.k=0"), train("algorithm=g2rpo_a", "algorithm.guidance.period=abc"),
    train("data.prompts_per_step=0"), train("data.reward=nope"), train("trainer.precision=fp16"),
    train("trainer.device=cuda"), train("trainer.backend=tpu"), train("logger.sinks=[mlflow]", needle="journal"),
    train("logger=mlflow", "logger.mlflow.tracking_uri=nothing"), train("logger=default", "logger.wandb.mode=sometimes"),
    train("logger.delivery.interval_s=-1"), train("algorithm=s2lpo", "algorithm.t_mix=2", needle="explorer"),
    train("algorithm=s2lpo", "algorithm.t_mix=2", "explorer=qwen3_4b", needle="explorer.family"),
    train("learner=qwen3_8b", needle="learner"), train("trainer.mini_batches=3"), train("trainer.ppo_epochs=0"),
    train("+trainer.foo=1"), train("+data.bar=2"), train("paths.runs_dir=/sys/s2lpo-runs", needle="paths.runs_dir"),  # Hydra's output dir: console.hydra_dir
    train("algorithm=s2lpo", "explorer=toy_s", "algorithm.t_mix=2", "paths.explorer_cache_dir=/sys/s2lpo-xc",
          needle="paths.explorer_cache_dir"),
    train("family.n_eval=0"), train("algorithm=s2lpo", "explorer=toy_s", "algorithm.t_mix=2",
                                     "explorer.sampling.samples_per_prompt=1"),
    train("algorithm=s2lpo", "explorer=toy_s", "algorithm.t_mix=2", "explorer.sampling.temperature=0"),
    train("trainer.checkpoint_every=0"), train("trainer.total_steps=0"), train("trainer.eval_every=abc"),
    train("data.max_new_tokens=0"), train("algorithm.temperature_mode=hot"), train("trainer.grad_clip=abc"),
]


def prep(dataset: str, content, suffix: str, needle: str, name: str) -> Case:
    def setup(root: Path, content=content, suffix=suffix):
        p = root / f"in{suffix}"
        if content == "DIR":
            p.mkdir()
        elif isinstance(content, (list, dict)):
            if suffix == ".parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pylist(content), p)
            elif suffix == ".jsonl":
                p.write_text("".join(json.dumps(r) + "\n" for r in content))
            else:
                p.write_text(json.dumps(content))
        elif content is not None:
            p.write_bytes(content if isinstance(content, bytes) else content.encode())

    return Case(f"prepare {dataset}: {name}", ["experiments/prepare_data.py", dataset, f"{{root}}/in{suffix}",
                                               "--out", "{root}/out"], "reject", needle, setup,
                after=lambda root: "files written on error" if (root / "out").exists() else None)


DAPO = {"data_source": "math_dapo", "prompt": [{"role": "user", "content": "What is 1+1?"}], "ability": "MATH",
        "reward_model": {"ground_truth": "2", "style": "rule"}, "extra_info": {"index": "0"}}
DATA = [
    prep("dapo_math", b"", ".parquet", "in.parquet", "0-byte parquet"),
    prep("dapo_math", b"PAR1 garbage", ".parquet", "in.parquet", "garbage parquet"),
    prep("dapo_math", "TRUNC", ".parquet", "in.parquet", "truncated parquet"),
    prep("aime25", b"", ".json", "in.json", "0-byte json"),
    prep("csqa", b"\xff\xfe garbage\n", ".jsonl", "in.jsonl", "garbage jsonl"),
    prep("aime25", "5", ".json", "in.json", "json holding 5"),
    prep("dapo_math", [{**DAPO, "reward_model": "2"}], ".parquet", "row 1", "reward_model as a string"),
    prep("dapo_math", [{**DAPO, "prompt": [{"role": "user"}]}], ".parquet", "row 1", "message without content"),
    prep("aime25", "DIR", ".json", "directory", "a directory"),
    prep("csqa", [{"id": "q", "question": "Where?", "answerKey": "Z",
                   "choices": {"label": ["A", "B"], "text": ["here", "there"]}}], ".jsonl", "answerKey", "answerKey Z"),
    prep("aime25", [{"problem": "x", "answer": {"v": 3}}], ".json", "row 1", "dict answer"),
    prep("aime25", None, ".json", "in.json", "missing file"),
    prep("aime25", '{"problem": "x"', ".json", "in.json", "broken json"),
    prep("aime25", "[1, 2]", ".json", "row 1", "rows that are not objects"),
]


def _trained(root: Path, logger: str = "mlflow", steps: int = 2) -> Path:
    """A finished run under ``root`` (checkpoints at every step)."""
    subprocess.run([sys.executable, str(ROOT / "experiments/train.py"), f"paths.root_dir={root}",
                    f"paths.cache_dir={CACHE}", *QUICK, f"logger={logger}", f"trainer.total_steps={steps}"],
                   check=True, capture_output=True, cwd=root)
    [run_dir] = (root / "runs").glob("grpo-*")
    return run_dir


def _killed(run_dir: Path) -> None:
    m = json.loads((run_dir / "manifest.json").read_text())
    m["status"] = "killed"
    (run_dir / "manifest.json").write_text(json.dumps(m))


def damaged(name: str, damage, expect: str, needle: str, logger: str = "mlflow", after=None,
            extra: tuple[str, ...] = ()) -> Case:
    def setup(root: Path):
        damage(_trained(root, logger))

    return Case(f"damaged run: {name}", ["experiments/train.py", "paths.root_dir={root}", f"paths.cache_dir={CACHE}",
                                         *QUICK, f"logger={logger}", *extra], expect, needle, setup, after)


def _cut(run_dir: Path, keep: int) -> None:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if json.loads(ln)["step"] < keep]
    (run_dir / "metrics.jsonl").write_text("".join(kept) + lines[len(kept)][:9])


def _journal_complete(root: Path) -> str | None:
    [run_dir] = (root / "runs").glob("grpo-*")
    from s2lpo.tracking.journal import read_history

    steps = set(read_history(run_dir).get("train/loss", {}))
    return None if steps == {1, 2} else f"journal holds steps {sorted(steps)}"


RUNS = [
    damaged("journal cut, killed run", lambda d: (_killed(d), (d / "checkpoints" / "step_0000002.pt").unlink(),
                                                  _cut(d, 1)), "recover", "restored from MLflow", after=_journal_complete),
    damaged("journal deleted, no replica", lambda d: (_killed(d), (d / "metrics.jsonl").unlink()), "reject",
            "lacks steps", logger="journal"),
    damaged("journal cut, finished run", lambda d: _cut(d, 2), "recover", "restored from MLflow", after=_journal_complete),
    damaged("manifest empty", lambda d: (d / "manifest.json").write_text(""), "recover", "manifest.json is damaged"),
    damaged("manifest garbage", lambda d: (d / "manifest.json").write_text("{[}"), "recover", "manifest.json is damaged"),
    damaged("only checkpoint truncated", lambda d: (_killed(d), (d / "checkpoints" / "step_0000001.pt").unlink(),
                                                    (d / "checkpoints" / "step_0000002.pt").write_bytes(b"PK\x03")),
            "reject", "no intact checkpoint"),
    damaged("newest checkpoint garbage", lambda d: (_killed(d), (d / "checkpoints" / "step_0000002.pt").write_bytes(
        b"garbage")), "recover", "is damaged", after=_journal_complete),
    damaged("tracking/mlflow.json garbage", lambda d: (_killed(d), (d / "tracking" / "mlflow.json").write_text("[")),
            "recover", "mlflow.json is damaged"),
    damaged("explorer shard garbage", lambda d: None, "reject", "explorer cache shard",
            extra=("algorithm=s2lpo", "explorer=toy_s", "algorithm.t_mix=2", "paths.explorer_cache_dir={root}/xc")),
]


def _garbage_shard(case: Case):
    inner = case.setup

    def setup(root: Path):
        inner(root)
        d = root / "xc" / "somedigest" / "someparams"
        d.mkdir(parents=True)
        (d / "part-1-1.parquet").write_bytes(b"not parquet")
        # the explorer's digest directory is only known after a fill: put the shard where the run will look
        subprocess.run([sys.executable, str(ROOT / "experiments/generate_explorer.py"), f"paths.root_dir={root}",
                        f"paths.cache_dir={CACHE}", *QUICK, "algorithm=s2lpo", "explorer=toy_s", "algorithm.t_mix=2",
                        f"paths.explorer_cache_dir={root}/xc"], check=True, capture_output=True)
        real = next(p for p in (root / "xc").glob("*/*") if p.name != "someparams")
        (real / "part-0-0.parquet").write_bytes(b"not parquet")

    case.setup = setup
    return case


RUNS[-1] = _garbage_shard(RUNS[-1])

OTHER = [
    Case("evaluate: missing benchmark", ["experiments/evaluate.py", "paths.root_dir={root}", f"paths.cache_dir={CACHE}",
                                         *QUICK, "eval.benchmarks=[{root}/nope.parquet]"], "reject", "nope.parquet"),
    Case("evaluate: no benchmarks", ["experiments/evaluate.py", "paths.root_dir={root}", f"paths.cache_dir={CACHE}",
                                     *QUICK], "reject", "eval.benchmarks"),
    Case("evaluate: unknown preset", ["experiments/evaluate.py", "paths.root_dir={root}", f"paths.cache_dir={CACHE}",
                                      *QUICK, "eval.preset=greedy", "eval.benchmarks=[x]"], "reject", "preset"),
    Case("evaluate: run_dir not a run", ["experiments/evaluate.py", "paths.root_dir={root}", f"paths.cache_dir={CACHE}",
                                         *QUICK, "eval.run_dir={root}"], "reject", "eval.run_dir"),
    Case("sync: nothing there", ["-m", "s2lpo.cli", "sync", "{root}"], "reject", "no run directory"),
    Case("sweep: missing file", ["-m", "s2lpo.cli", "sweep", "submit", "{root}/nope.yaml", "--dry-run"], "reject",
         "nope.yaml"),
    Case("sweep: status of an unknown sweep", ["-m", "s2lpo.cli", "sweep", "status", "nope", "--root", "{root}"],
         "reject", "nope"),
    Case("family_passk: n not a number", ["experiments/family_passk.py", "paths.root_dir={root}",
                                          f"paths.cache_dir={CACHE}", "+n=abc"], "reject", "n='abc'"),
    Case("study: seeds a string", ["experiments/study.py", "paths.root_dir={root}", f"paths.cache_dir={CACHE}",
                                   "study.seeds=abc"], "reject", "study.seeds='abc'"),
    Case("sweep: file not YAML", ["-m", "s2lpo.cli", "sweep", "submit", "{root}/s.yaml", "--dry-run"], "reject",
         "not valid YAML at line 4, column 1", lambda root: (root / "s.yaml").write_text("name: x\naxes:\n  seed: [0\n")),
    Case("sweep: file a list", ["-m", "s2lpo.cli", "sweep", "submit", "{root}/s.yaml", "--dry-run"], "reject",
         "the file must be a mapping", lambda root: (root / "s.yaml").write_text("- seed\n")),
    Case("analysis: spec not YAML", ["analysis/regenerate.py", "--specs", "{root}/s.yaml", "--out", "{root}/out"],
         "reject", "not valid YAML at line 3, column 1", lambda root: (root / "s.yaml").write_text("kind: table\nrows: [a\n")),
    Case("prepare: a path holding console markup", ["experiments/prepare_data.py", "aime25", "{root}/d[/x]/in.json",
                                                    "--out", "{root}/out"], "reject", "d[/x]/in.json: not JSON",
         lambda root: (root / "d[/x]").mkdir(parents=True) or (root / "d[/x]/in.json").write_text("{")),
]

CASES = CONFIG + DATA + RUNS + OTHER


def run_case(case: Case) -> tuple[Case, str, str]:
    root = Path(tempfile.mkdtemp(prefix="s2lpo-hostile-"))
    try:
        if case.setup is not None:
            if case.name.endswith("truncated parquet"):
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pylist([DAPO] * 50), root / "in.parquet")
                (root / "in.parquet").write_bytes((root / "in.parquet").read_bytes()[:300])
            else:
                case.setup(root)
        argv = [a.replace("{root}", str(root)) for a in case.argv]
        cmd = [sys.executable, *([str(ROOT / argv[0])] if argv[0].endswith(".py") else argv[:1]),
               *argv[1:]] if argv[0].endswith(".py") else [sys.executable, *argv]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root, env={**os.environ, **case.env})
        out = p.stdout + p.stderr
        if "Traceback (most recent call last)" in out:
            return case, "traceback", out[-400:]
        problem = case.after(root) if case.after else None
        if case.expect == "reject":
            if p.returncode == 0:
                return case, "silent", "accepted"
            return case, ("clean" if case.needle in out and not problem else "unclear"), (problem or out.strip()[-300:])
        if p.returncode != 0:
            return case, "unclear", out.strip()[-300:]
        if case.needle not in out or problem:
            return case, "silent", problem or "no warning"
        return case, "clean", out.strip()[-200:]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    cases = [c for c in CASES if args.only in c.name]
    counts: dict[str, int] = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        for case, verdict, detail in pool.map(run_case, cases):
            counts[verdict] = counts.get(verdict, 0) + 1
            print(f"{verdict:9s} {case.name}" + ("" if verdict == "clean" else f"\n          {detail!r}"), flush=True)
    print(f"tried {len(cases)}: " + ", ".join(f"{counts.get(k, 0)} {k}"
                                               for k in ("clean", "unclear", "traceback", "silent")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
