"""A model named by a config role (``learner`` / ``explorer``): its family recipe, weights directory, parameter
count (one number for both backends' FLOPs metrics), device and loading. Imports models, data and
``config.paths`` only."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from s2lpo.config.paths import abspath
from s2lpo.models.family import Family, FamilyRecipe, build_family


def family_recipe(cfg: DictConfig) -> FamilyRecipe:
    d = OmegaConf.to_container(cfg.family, resolve=True)
    d.pop("name", None)
    return FamilyRecipe.from_dict(d)


def role_sizes(cfg: DictConfig) -> list[str]:
    """The toy-family sizes the learner and the explorer of ``cfg`` are (a role with a ``path`` is not built)."""
    return [str(cfg[r].size) for r in ("learner", "explorer")
            if cfg[r].name != "none" and cfg[r].get("family") == "toy" and cfg[r].get("path") is None]


def toy_family(cfg: DictConfig, log=print, progress=None, sizes: list[str] | None = None) -> Family:
    """The run's toy family, built once and cached under ``paths.cache_dir`` (later calls only read it): ``sizes``
    built (default: the learner's and the explorer's, :func:`role_sizes`), the others when first asked for."""
    return build_family(family_recipe(cfg), abspath(cfg.paths.cache_dir), log=log, progress=progress,
                        sizes=role_sizes(cfg) if sizes is None else sizes)


def model_path(cfg: DictConfig, role: str, family: Family | None = None) -> Path | None:
    """The weights directory of ``cfg.<role>`` (None for ``explorer=none``): its ``path``, else the toy family's
    build of its ``size``."""
    m = cfg[role]
    if m.name == "none":
        return None
    if m.path is not None:
        return abspath(m.path)
    if m.family != "toy":
        raise ValueError(f"{role}.path is null for {m.name!r}; only toy-family models are built here")
    return (family or toy_family(cfg, log=lambda *_: None)).model_dir(m.size)


def model_params(cfg: DictConfig, role: str, family: Family | None = None) -> int:
    """Parameters of the learner's or explorer's model, the same number for both backends (FLOPs metrics):
    the toy family's manifest, else ``<role>.params``, else counted from the checkpoint's safetensors headers.
    0 for ``explorer=none``."""
    m = cfg[role]
    if m.name == "none":
        return 0
    if m.family == "toy":
        family = family or toy_family(cfg, log=lambda *_: None)
        return int(family.manifest["models"][m.size]["params"])
    if m.get("params"):
        return int(float(m.params))
    from safetensors import safe_open

    total = 0
    for f in sorted(abspath(m.path).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= int(d)
                total += n
    return total


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(path: Path, device: torch.device):
    """A causal LM from a local directory, in float32 on ``device`` (autocast picks the compute precision)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
