"""A run's step-0 evaluation, computed once for every run that starts from the same weights.

Every run of a study or sweep that starts from the same learner with the same seed evaluates the same thing at
step 0 (the evaluation's sampling is seeded by the run's seed and the step alone), so the result is kept under
``paths.cache_dir/eval`` keyed by everything it depends on: the weight files (name, size, modification time), the
problems, the sampling, the seed, the batching, precision, device and torch threads, and the source of the code
that samples and scores. A study's five methods of one seed evaluate their start once, not five times.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

# the code a step-0 evaluation runs: a change to any of these files is a different key
_CODE = ["rollout/sampler.py", "rollout/decode.py", "eval/runner.py", "eval/passk.py", "rewards"]


def code_digest() -> str:
    root = Path(__file__).resolve().parents[1]  # the s2lpo package
    h = hashlib.sha256()
    for rel in _CODE:
        p = root / rel
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:16]


def weights_identity(model_dir: Path) -> list[tuple[str, int, int]]:
    """The weight files of ``model_dir`` by name, size and modification time (hashing an 8B model's 16 GB on every
    run's start would cost more than it saves)."""
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(Path(model_dir).iterdir())
            if f.suffix in (".safetensors", ".bin", ".pt")]


def start_eval_key(model_dir: Path, problems: list, **settings) -> dict:
    """Everything a start-of-run evaluation's result depends on; ``settings``: n, sampling, seed, batch size …"""
    return {"weights": [str(Path(model_dir).resolve()), weights_identity(model_dir)],
            "problems": hashlib.sha256(json.dumps([[p.prompt, str(p.answer)] for p in problems]).encode()).hexdigest(),
            "code": code_digest(), "torch": torch.__version__, "threads": torch.get_num_threads(), **settings}


def memo_eval(cache_dir: Path, key: dict, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``compute()``'s metrics, read from ``cache_dir`` when an earlier call with the same ``key`` wrote them
    (written atomically; a damaged or unreadable entry is computed again)."""
    h = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    f = Path(cache_dir) / f"{h}.json"
    try:
        entry = json.loads(f.read_text())
        if entry["key"] == json.loads(json.dumps(key, sort_keys=True, default=str)):
            return {k: float(v) for k, v in entry["metrics"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    metrics = compute()
    tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
    try:  # a cache: a run whose entry cannot be written has its metrics all the same
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"key": key, "metrics": metrics}, sort_keys=True, default=str))
        os.replace(tmp, f)
    except OSError:
        tmp.unlink(missing_ok=True)
    return metrics
