"""Hydra plugin of s2lpo: verl's flattened PPO trainer config as one node of Hydra's ConfigStore.

``trainer=verl`` composes verl's ``_generated_ppo_trainer.yaml`` under ``trainer.verl``. Putting
``pkg://verl.trainer.config`` on the search path would do that too, but it merges verl's config groups
into ours (``algorithm=…`` then offers verl's ``rollout_correction``, ``data=…`` and ``model=…`` its
options) and imports verl on every composition. Hydra imports this module while it scans for plugins,
before any composition, in every process (``@hydra.main`` and the compose API alike); the file is found
without importing verl.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

NODE = "s2lpo_verl_ppo_trainer"  # conf/trainer/verl.yaml: defaults: [/s2lpo_verl_ppo_trainer@trainer.verl]


def _verl_trainer_yaml() -> Path | None:
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "trainer" / "config" / "_generated_ppo_trainer.yaml"
    return path if path.exists() else None


_path = _verl_trainer_yaml()
if _path is not None:  # without verl, trainer=verl fails to compose and check_trainer says to install it
    ConfigStore.instance().store(name=NODE, node=OmegaConf.load(_path), provider="s2lpo")
