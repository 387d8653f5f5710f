"""Sweep grids as data (``sweeps/<name>.yaml``) expanded into one override list per run.

    name: toy
    common: [family=toy, learner=toy_l]          # every run
    axes:                                        # the grid: one value per axis per run
      explorer: [toy_s, toy_m]
      algorithm: [grpo, token_temp, g2rpo_a, s2lpo]
      seed: [0, 1, 2]
    only_for:                                    # an axis that only applies to some algorithms
      explorer: [s2lpo]                          # (the others run once, with explorer=none)

A run gets ``sweep=<name>`` too, which links it to the sweep's parent run in MLflow and its W&B group.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from s2lpo.config.yaml_file import load_mapping, not_a_mapping


class SweepError(ValueError):
    pass


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SHAPE = "a sweep is a mapping of name, axes and optionally common, only_for; see sweeps/toy.yaml"


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    runs: tuple[tuple[str, ...], ...]  # overrides per run, in grid order


def load_sweep(path: str | Path, extra: list[str] | tuple[str, ...] = ()) -> Sweep:
    path = Path(path)
    if not path.exists():
        raise SweepError(f"sweep file {path} does not exist; sweeps live in sweeps/<name>.yaml")
    spec = load_mapping(path, SweepError, SHAPE)
    for key in ("name", "axes"):
        if key not in spec:
            raise SweepError(f"{path}: missing '{key}' (a sweep needs name, axes and optionally common, only_for)")
    if not isinstance(spec["name"], str | int) or not NAME.fullmatch(str(spec["name"])):
        raise SweepError(f"{path}: name={spec['name']!r} must be letters, digits, '_', '-' or '.' (it names the "
                         "sweep's folder sweeps/<name>/ and every run's sweep tag), e.g. name: paper_rerun")
    unknown = set(spec) - {"name", "common", "axes", "only_for"}
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: name, common, axes, only_for")
    axes: dict[str, list] = _mapping(path, "axes", spec["axes"])
    for k, v in axes.items():
        if not isinstance(v, list) or not v:
            raise SweepError(f"{path}: axes.{k} must be a non-empty list of values, not {v!r}")
    only_for: dict[str, list] = _mapping(path, "only_for", spec.get("only_for") or {})
    for k, v in only_for.items():
        if k not in axes:
            raise SweepError(f"{path}: only_for.{k} names no axis; axes are {sorted(axes)}")
        if not isinstance(v, list):
            raise SweepError(f"{path}: only_for.{k} must be a list of algorithms, not {v!r}")
    common = spec.get("common") or []
    if not isinstance(common, list):
        raise SweepError(f"{path}: common must be a list of overrides (e.g. [family=toy]), not {common!r}")
    common = [str(o) for o in common]
    runs: list[tuple[str, ...]] = []
    seen = set()
    for values in itertools.product(*axes.values()):
        choice = dict(zip(axes, values))
        algo = choice.get("algorithm")
        ov = []
        for k, v in choice.items():
            if k in only_for and algo not in only_for[k]:
                if k == "explorer":
                    ov.append("explorer=none")
                continue
            ov.append(f"{k}={v}")
        run = tuple([*common, *ov, *extra, f"sweep={spec['name']}"])
        if run not in seen:
            seen.add(run)
            runs.append(run)
    return Sweep(str(spec["name"]), path, tuple(runs))


def _mapping(path: Path, what: str, value) -> dict:
    if (msg := not_a_mapping(path, what, value, SHAPE)) is not None:
        raise SweepError(msg)
    return value
