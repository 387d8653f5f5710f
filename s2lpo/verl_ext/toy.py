"""The toy family as verl sees a Qwen3 checkpoint: a view of a toy model directory for the verl backend.

The toy models are Qwen3-architecture (``model_type: qwen3``), so verl's agent loops pick their Qwen
Continuous Token builder, which needs the ChatML boundary token ``<|im_end|>``. The view links the weights
and config, and saves the toy tokenizer with ``<|im_start|>``/``<|im_end|>`` added (ids past the model's
vocabulary: single-turn prompts never contain them and the model never samples them) and a chat template
that renders a message's content unchanged, so verl's prompt ids equal the local trainer's and both backends
share one explorer cache.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PLAIN_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
LINKED = ("model.safetensors", "config.json", "generation_config.json")


def verl_view(model_dir: Path, out: Path) -> Path:
    """``out``: the verl view of the toy model in ``model_dir``, built when missing. It is assembled in a
    folder of its own beside ``out`` and renamed into place, so a build that is killed midway never leaves a
    folder that looks complete (its tokenizer files are what marks a view done); a half-built one is redone."""
    from transformers import AutoTokenizer

    if (out / "tokenizer_config.json").exists():
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in LINKED:
            if (src := Path(model_dir) / name).exists():
                (tmp / name).symlink_to(src.resolve())
        tok = AutoTokenizer.from_pretrained(model_dir)
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = PLAIN_TEMPLATE
        tok.save_pretrained(tmp)
        if (out / "tokenizer_config.json").exists():  # another process finished it meanwhile
            return out
        shutil.rmtree(out, ignore_errors=True)  # what a killed build of the old layout left
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def with_toy_files(cfg, log=print):
    """``cfg`` with what the verl backend reads from files filled in for the toy family (built offline):
    verl views of the learner and explorer, and the toy task's RL and evaluation problems as parquet files in
    verl's schema, all under ``<cache_dir>/verl_toy/<family>``. Other families are returned unchanged. The run
    id is computed before this (the files are a function of the family recipe, already in the config)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from filelock import FileLock
    from omegaconf import OmegaConf, open_dict

    from s2lpo.config.paths import abspath
    from s2lpo.data.prepare import toy_rows
    from s2lpo.models.family import build_family
    from s2lpo.models.resolve import family_recipe

    if cfg.learner.family != "toy":
        return cfg
    family = build_family(family_recipe(cfg), abspath(cfg.paths.cache_dir), log=log)
    base = abspath(cfg.paths.cache_dir) / "verl_toy" / family.root.name
    splits = family.splits()
    ask = cfg.trainer.eval_problems
    n_eval = len(splits.eval) if ask is None else min(int(ask), len(splits.eval))
    files = {"train": (splits.rl, "train"), f"test-{n_eval}": (splits.eval[:n_eval], "test")}
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    base.mkdir(parents=True, exist_ok=True)
    # one writer at a time: the runs of a sweep (array tasks side by side) share the cache
    with FileLock(base.parent / f".{base.name}.lock"):
        for name, (problems, split) in files.items():
            path = base / f"{name}.parquet"
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                pq.write_table(pa.Table.from_pylist(toy_rows(problems, split)), tmp)
                tmp.replace(path)
        with open_dict(out):
            for role in ("learner", "explorer"):
                if out[role].name != "none" and out[role].path is None:
                    out[role].path = str(verl_view(family.model_dir(out[role].size), base / out[role].size))
        if out.data.train_file is None:
            out.data.train_file = str(base / "train.parquet")
            out.data.eval_files = [str(base / f"test-{n_eval}.parquet")]
    return out
