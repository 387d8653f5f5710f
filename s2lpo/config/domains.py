"""The domain of every config value that ``validate`` does not check by hand, as a table, and the keys our
config groups know (an unknown key, ``+``-added ones included, is an error: it would be silently ignored).

Each rule: dotted field, a predicate on the value, and what the value must be (the fix names it).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"


def _num(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


RULES: list[tuple[str, Callable[[object], bool], str]] = [
    ("seed", _int, "an integer"),
    ("trainer.grad_clip", lambda v: _num(v) and v > 0, "a number > 0 (the gradient-norm clip; 1.0 as in verl)"),
    ("trainer.weight_decay", lambda v: _num(v) and v >= 0, "a number >= 0 (the paper: 0.01)"),
    ("trainer.warmup_steps", lambda v: _int(v) and v >= 0, "an integer >= 0"),
    ("trainer.threads", lambda v: v is None or (_int(v) and v >= 1), "null (torch's default) or an integer >= 1"),
    ("trainer.eval_temperature", lambda v: _num(v) and v > 0, "a number > 0"),
    ("algorithm.is_cap", lambda v: _num(v) and v > 0, "a number > 0 (the truncation of the IS weights, e.g. 2.0)"),
    ("algorithm.shaping_gamma", lambda v: _num(v) and v >= 0, "a number >= 0"),
    ("algorithm.entropy_coef", lambda v: _num(v) and v >= 0, "a number >= 0 (the paper: 0)"),
    ("algorithm.guidance.k", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("data.max_prompt_length", lambda v: v is None or (_int(v) and v >= 1), "null or an integer >= 1"),
]


def domain_problems(cfg: DictConfig) -> list[str]:
    errs = []
    for field, ok, what in RULES:
        value = OmegaConf.select(cfg, field, default="<missing>")
        if value == "<missing>":
            continue  # a group without the field (e.g. an older experiment file): its own checks apply
        if not ok(value):
            errs.append(f"{field}={value!r} must be {what}")
    return errs


def _keys(d, prefix: str = "") -> set[str]:
    out = set()
    for k, v in (d or {}).items():
        if k == "defaults":
            continue
        out.add(prefix + str(k))
        if isinstance(v, dict):
            out |= _keys(v, f"{prefix}{k}.")
    return out


# the config directories whose options define a group's keys (a learner or explorer option selects a model of
# conf/model/; an explorer adds its family's conf/explorer_job/)
GROUP_DIRS = {"algorithm": ("algorithm",), "data": ("data",), "learner": ("model", "learner"),
              "explorer": ("model", "explorer_job", "explorer"), "trainer": ("trainer",), "family": ("family",),
              "logger": ("logger",)}


@lru_cache(maxsize=1)
def known_keys() -> dict[str, set[str]]:
    """group -> every dotted key any option of its directories defines (``trainer``: below ``trainer.verl``
    is verl's own tree and is not ours to check)."""
    out: dict[str, set[str]] = {}
    for group, dirs in GROUP_DIRS.items():
        keys: set[str] = set()
        for f in (f for d in dirs for f in (CONF / d).glob("*.yaml")):
            d = yaml.safe_load(f.read_text()) or {}
            d.pop("defaults", None)
            if group == "trainer" and "trainer" in d:  # verl.yaml is @package _global_
                d = d["trainer"]
            keys |= _keys(d)
        out[group] = keys
    return out


FREE_MAPS = {"family": ("left_to_right", "left_to_right_only")}  # maps whose keys are the user's (sizes), checked by their group's checker


def unknown_key_problems(cfg: DictConfig) -> list[str]:
    errs = []
    for group, known in known_keys().items():
        node = OmegaConf.to_container(cfg[group], resolve=False) if group in cfg else {}
        if group == "trainer":
            node.pop("verl", None)
        for key in sorted(_keys(node)):
            if key in known or any(key.startswith(k + ".") for k in known if k.endswith("resources")) or \
                    any(key.startswith(m + ".") for m in FREE_MAPS.get(group, ())):
                continue
            if "." in key and key.rsplit(".", 1)[0] not in known:
                continue  # reported at its parent
            leaves = sorted(k for k in known if not any(o.startswith(k + ".") for o in known))
            close = difflib.get_close_matches(key, leaves, n=1)
            hint = f"did you mean {group}.{close[0]}? " if close else ""
            errs.append(f"{group}.{key} is not a setting of the {group} group and would be ignored; {hint}"
                        f"the group's settings are in conf/{group}/")
    return errs


def position_problems(cfg: DictConfig) -> list[str]:
    """Responses must fit the models' positions (the toy family's ``max_position_embeddings``, a real model's
    ``config.json``): longer ones would fail mid-run, after the models are loaded."""
    import json

    n = cfg.data.max_new_tokens
    if not _int(n):
        return []
    limits = []
    for role in ("learner", "explorer"):
        m = cfg[role]
        if m.name == "none":
            continue
        limit = None
        if m.family == "toy":
            limit = cfg.family.get("max_position_embeddings")
        elif m.path is not None and (Path(str(m.path)) / "config.json").exists():
            limit = json.loads((Path(str(m.path)) / "config.json").read_text()).get("max_position_embeddings")
        if _int(limit) and n >= limit:
            limits.append((limit, f"{role}={m.name}"))
    if not limits:
        return []
    limit = min(x for x, _ in limits)
    return [f"data.max_new_tokens={n} does not fit the positions of {' and '.join(w for _, w in limits)} ({limit}, "
            f"prompt included); lower data.max_new_tokens below {limit}"]
