"""verl's config as verl sees it: ``trainer.verl`` re-rooted.

verl's flattened config interpolates absolute paths (``${actor_rollout_ref.actor.strategy}``), which only
resolve when its tree is the root; composed under ``trainer.verl`` it must be lifted out before it is
resolved or handed to verl. (Nothing inside it may interpolate our own keys.)
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def verl_config(cfg: DictConfig) -> DictConfig:
    return OmegaConf.create(OmegaConf.to_container(cfg.trainer.verl, resolve=False))


def run_container(cfg: DictConfig) -> dict:
    """The resolved run config as a dict, with ``trainer.verl`` resolved as its own root."""
    if "verl" not in cfg.trainer:
        return OmegaConf.to_container(cfg, resolve=True)
    verl = OmegaConf.to_container(verl_config(cfg), resolve=True)
    rest = OmegaConf.to_container(cfg, resolve=False)
    rest["trainer"].pop("verl")
    out = OmegaConf.to_container(OmegaConf.create(rest), resolve=True)
    out["trainer"]["verl"] = verl
    return out
