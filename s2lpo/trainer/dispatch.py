"""One entry for both backends: ``trainer.backend`` picks the local trainer or the verl extension."""

from __future__ import annotations

from omegaconf import DictConfig


def train(cfg: DictConfig, progress=None, log=print):
    if cfg.trainer.backend == "verl":
        from s2lpo.verl_ext.runner import train as backend_train
    else:
        from s2lpo.trainer.local import train as backend_train
    return backend_train(cfg, progress=progress, log=log)
