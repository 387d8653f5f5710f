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
from dataclasses import dataclass
from pathlib import Path

import yaml


class SweepError(ValueError):
    pass


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    runs: tuple[tuple[str, ...], ...]  # overrides per run, in grid order


def load_sweep(path: str | Path, extra: list[str] | tuple[str, ...] = ()) -> Sweep:
    path = Path(path)
    if not path.exists():
        raise SweepError(f"sweep file {path} does not exist; sweeps live in sweeps/<name>.yaml")
    spec = _read(path)
    for key in ("name", "axes"):
        if key not in spec:
            raise SweepError(f"{path}: missing '{key}' (a sweep needs name, axes and optionally common, only_for)")
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


def _read(path: Path) -> dict:
    """The file's YAML as a mapping, or a SweepError that names the file, where it stops parsing and the fix."""
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if (ctx := getattr(e, "context", None)) and (cm := getattr(e, "context_mark", None)) is not None:
            problem += f" ({ctx} at line {cm.line + 1}, column {cm.column + 1})"
        raise SweepError(f"{path} is not valid YAML{where}: {problem}; fix the file (a sweep is a mapping of name, "
                         "axes and optionally common, only_for; see sweeps/toy.yaml)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"{path} cannot be read as a sweep file: {e}") from None
    return _mapping(path, "the file", spec)


def _mapping(path: Path, what: str, value) -> dict:
    if not isinstance(value, dict):
        raise SweepError(f"{path}: {what} must be a mapping (key: value lines), not {type(value).__name__} "
                         f"{str(value)[:60]!r}; see sweeps/toy.yaml")
    return value
