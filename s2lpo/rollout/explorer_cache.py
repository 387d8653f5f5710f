"""The explorer rollout cache.

A frozen explorer's samples depend only on (explorer weights digest, prompt token ids, sampling
parameters, sample index), so they are generated once, stored, and reused by every run of a sweep
and by resumed runs. Layout::

    <explorer_cache_dir>/<weights digest>/<sampling-params hash>/
        params.json                 # the sampling parameters, for people
        part-<time>-<pid>.parquet   # columns: prompt_key, sample_index, prompt_ids, tokens,
                                    #          logprobs, finish_reason, reward

Shards are written to a temporary name and renamed, so readers never see half a file; a lock
serialises writers, and a key present twice (two writers raced) keeps its first row.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from s2lpo.config.paths import abspath
from s2lpo.models.family import weights_digest
from s2lpo.rollout.sampler import Sample, SamplingParams, sample


class ExplorerCacheError(RuntimeError):
    """The explorer cache cannot be read or written (the message names the file and the fix)."""


SCHEMA = pa.schema(
    [
        ("prompt_key", pa.string()),
        ("sample_index", pa.int32()),
        ("prompt_ids", pa.list_(pa.int32())),
        ("tokens", pa.list_(pa.int32())),
        ("logprobs", pa.list_(pa.float32())),
        ("finish_reason", pa.string()),
        ("reward", pa.float32()),
    ]
)


def explorer_sampling(cfg) -> tuple[SamplingParams, int]:
    """The explorer's own sampling (``explorer.sampling``) and its samples per prompt (the cache's pool)."""
    s = cfg.explorer.sampling
    return (SamplingParams(float(s.temperature), float(s.top_p), int(s.top_k), int(s.max_new_tokens)),
            int(s.samples_per_prompt))


def prompt_key(prompt_ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(list(prompt_ids)).encode()).hexdigest()[:20]


def params_key(params: SamplingParams) -> str:
    return hashlib.sha256(json.dumps(params.as_dict(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class CachedSample:
    tokens: list[int]
    logprobs: list[float]
    finish_reason: str
    reward: float


class ExplorerCache:
    def __init__(self, cache_dir: str | Path, explorer_digest: str, params: SamplingParams):
        self.dir = Path(cache_dir) / explorer_digest / params_key(params)
        self.params = params
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "params.json").write_text(json.dumps(params.as_dict(), sort_keys=True))
        except OSError as e:
            raise ExplorerCacheError(f"cannot write the explorer cache {self.dir}: {e.strerror}; make it writable or "
                                     "set paths.explorer_cache_dir to a writable directory") from None
        self._rows: dict[tuple[str, int], CachedSample] = {}
        self._prompts: dict[str, list[int]] = {}
        self._seen: set[str] = set()
        self.reload()

    def reload(self) -> None:
        for f in sorted(self.dir.glob("part-*.parquet")):
            if f.name in self._seen:
                continue
            try:
                t = pq.read_table(f).to_pylist()
            except (OSError, pa.ArrowException) as e:
                raise ExplorerCacheError(
                    f"explorer cache shard {f} is damaged ({str(e).strip().splitlines()[0][:120]}); remove it "
                    f"(rm {f}): its samples are generated again when a run or experiments/generate_explorer.py "
                    "next needs them") from None
            self._seen.add(f.name)
            for r in t:
                key = (r["prompt_key"], r["sample_index"])
                if key not in self._rows:
                    self._rows[key] = CachedSample(r["tokens"], r["logprobs"], r["finish_reason"], r["reward"])
                    self._prompts[r["prompt_key"]] = r["prompt_ids"]

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, prompt_ids: list[int], index: int) -> CachedSample | None:
        pk = prompt_key(prompt_ids)
        row = self._rows.get((pk, index))
        if row is not None and self._prompts[pk] != list(prompt_ids):
            raise RuntimeError(f"explorer cache {self.dir}: prompt ids differ for key {pk} (hash collision?)")
        return row

    def missing(self, prompts: list[list[int]], n_samples: int) -> list[tuple[list[int], int]]:
        return [(p, j) for p in prompts for j in range(n_samples) if (prompt_key(p), j) not in self._rows]

    def fill(
        self,
        model,
        prompts: list[list[int]],
        ground_truths: list[str],
        n_samples: int,
        score: Callable[[list[int], str], float],
        eos_id: int,
        pad_id: int,
        seed: int,
        batch_size: int = 512,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Generate every missing (prompt, sample index < n_samples) with the explorer; returns how many
        (``progress(done)`` after each generation batch)."""

        def generate(todo: list[tuple[list[int], int]], todo_seed: int) -> list[Sample]:
            g = torch.Generator(device=next(model.parameters()).device)
            g.manual_seed(todo_seed)
            return sample(model, [p for p, _ in todo], self.params, eos_id, pad_id, g, batch_size, progress)

        return self.fill_with(generate, prompts, ground_truths, n_samples, score, seed)

    def fill_with(
        self,
        generate: Callable[[list[tuple[list[int], int]], int], list[Sample]],
        prompts: list[list[int]],
        ground_truths: list[str],
        n_samples: int,
        score: Callable[[list[int], str], float],
        seed: int,
    ) -> int:
        """Like ``fill`` with any generator (the HF sampler, vLLM): ``generate(todo, seed)`` returns one sample
        per (prompt ids, sample index) of ``todo``; ``seed`` depends on ``todo`` only."""
        truth = {prompt_key(p): gt for p, gt in zip(prompts, ground_truths)}
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.reload()
            todo = self.missing(prompts, n_samples)
            if not todo:
                return 0
            # the seed depends on what is generated, not on who asked first
            digest = hashlib.sha256(json.dumps([[prompt_key(p), j] for p, j in todo]).encode()).digest()
            samples = generate(todo, seed ^ int.from_bytes(digest[:6], "little"))
            rows = []
            for (p, j), s in zip(todo, samples):
                pk = prompt_key(p)
                rows.append({"prompt_key": pk, "sample_index": j, "prompt_ids": list(p), "tokens": s.tokens,
                             "logprobs": s.logprobs, "finish_reason": s.finish_reason,
                             "reward": score(s.tokens, truth[pk])})
            name = f"part-{time.time_ns()}-{os.getpid()}.parquet"
            tmp = self.dir / f".{name}.tmp"
            try:
                pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
                os.replace(tmp, self.dir / name)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise ExplorerCacheError(f"could not write {len(rows)} explorer samples to {self.dir}: {e.strerror}; "
                                         "free space there or set paths.explorer_cache_dir elsewhere") from None
            self.reload()
            return len(rows)


def explorer_cache_for(cfg, explorer_path: Path) -> ExplorerCache:
    """The cache of ``cfg``'s explorer (weights at ``explorer_path``) under its own sampling parameters."""
    return ExplorerCache(abspath(cfg.paths.explorer_cache_dir), weights_digest(explorer_path), explorer_sampling(cfg)[0])
