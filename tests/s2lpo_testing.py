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
        return compose("train", overrides=[f"paths.root_dir={tmp_path}", f"paths.cache_dir={CACHE}", *overrides])


