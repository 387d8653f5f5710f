"""Sweep grids, fast composition, validation before submission, and the status rules (no cluster)."""

import json

import pytest
from omegaconf import OmegaConf

from s2lpo.sweep.grid import SweepError, load_sweep
from s2lpo.sweep.jobs import compose, compose_many
from s2lpo.sweep.status import _parse_states, run_state
from s2lpo.sweep.submit import plan_sweep
from s2lpo_testing import CACHE, ROOT


def test_the_toy_grid_expands_with_only_for():
    s = load_sweep(ROOT / "sweeps/toy.yaml")
    assert s.name == "toy" and len(s.runs) == 3 * 3 + 2 * 3  # 3 baselines x 3 seeds + s2lpo x 2 explorers x 3 seeds
    assert s.runs[0] == ("family=toy", "learner=toy_l", "explorer=none", "algorithm=grpo", "seed=0", "sweep=toy")
    assert ("family=toy", "learner=toy_l", "explorer=toy_m", "algorithm=s2lpo", "algorithm.t_mix=30", "seed=2",
            "sweep=toy") in s.runs
    paper = load_sweep(ROOT / "sweeps/paper.yaml")
    rows = sorted(p.name[:-5] for p in (ROOT / "conf/experiment/paper").glob("qwen3_*.yaml"))
    assert len(rows) == 9 and len(paper.runs) == 9 * 3  # every paper row x 3 seeds
    assert {r[0] for r in paper.runs} == {f"experiment=paper/{x}" for x in rows}


@pytest.mark.parametrize(("spec", "msg"), [
    ({"axes": {"seed": [0]}}, "missing 'name'"),
    ({"name": "x", "axes": {"seed": []}}, "axes.seed must be a non-empty list"),
    ({"name": "x", "axes": {"seed": [0]}, "only_for": {"explorer": ["s2lpo"]}}, "only_for.explorer names no axis"),
    ({"name": "x", "axes": {"seed": [0]}, "grid": 1}, "unknown key"),
])
def test_bad_sweep_files_are_named(tmp_path, spec, msg):
    (tmp_path / "s.yaml").write_text(json.dumps(spec))
    with pytest.raises(SweepError, match=msg):
        load_sweep(tmp_path / "s.yaml")
    with pytest.raises(SweepError, match="does not exist"):
        load_sweep(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("text", "msg"), [
    ("name: bad\naxes:\n  seed: [0, 1\n", r"s.yaml is not valid YAML at line 4, column 1: expected ',' or ']'.*"
                                           r"\(while parsing a flow sequence at line 3, column 9\); fix the file"),
    ("# S2L-PO\nthe paper: *i* a frozen: model\n", r"not valid YAML at line 2, column \d+"),
    ("- a\n- b\n", r"s.yaml: the file must be a mapping \(key: value lines\), not list"),
    ("just text\n", r"the file must be a mapping \(key: value lines\), not str 'just text'"),
    ("name: x\naxes: [seed]\n", r"axes must be a mapping \(key: value lines\), not list"),
    ("name: x\naxes: {seed: 0}\n", r"axes.seed must be a non-empty list of values, not 0"),
    ("name: x\naxes: {seed: [0]}\ncommon: family=toy\n", r"common must be a list of overrides .* not 'family=toy'"),
    ("name: x\naxes: {seed: [0]}\nonly_for: [seed]\n", r"only_for must be a mapping"),
    ("name: x\naxes: {explorer: [a]}\nonly_for: {explorer: s2lpo}\n", r"only_for.explorer must be a list"),
    ("name: ../../elsewhere\naxes: {seed: [0]}\n", r"name='../../elsewhere' must be letters, digits"),
    ("name: my sweep\naxes: {seed: [0]}\n", r"name='my sweep' must be letters, digits, '_', '-' or '.'"),
    ("name: [a]\naxes: {seed: [0]}\n", r"name=\['a'\] must be"),
])
def test_malformed_sweep_files_get_one_clear_error(tmp_path, text, msg):
    """A sweep file that is not YAML, or not the grid's shape, is named with where it breaks, not a traceback."""
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SweepError, match=msg):
        load_sweep(tmp_path / "s.yaml")


def test_compose_many_equals_hydra_compose_run_by_run():
    runs = [["launcher=slurm", *r] for r in load_sweep(ROOT / "sweeps/toy.yaml").runs]
    runs += [["algorithm=grpo", "explorer=none", "trainer.lr=2e-5", "+launcher.additional_parameters.hold=true",
              "launcher=slurm", "data.max_new_tokens=7"], ["seed=3", "++trainer.lr=3e-5"]]
    for ov, cfg in zip(runs, compose_many(runs)):
        assert OmegaConf.to_container(cfg, resolve=True) == OmegaConf.to_container(compose(ov), resolve=True), ov
    with pytest.raises(KeyError, match="no such key"):
        compose_many([["trainer.no_such_key=1"]])


def test_a_bad_run_stops_the_whole_submission_before_any_job(tmp_path):
    spec = {"name": "bad", "common": ["family=toy_tiny", f"paths.cache_dir={CACHE}", "trainer.device=cuda"],
            "axes": {"algorithm": ["grpo", "s2lpo"], "algorithm.t_mix": [1], "seed": [0]}}
    (tmp_path / "s.yaml").write_text(json.dumps(spec))
    with pytest.raises(SweepError, match=r"(?s)nothing submitted.*2 runs \(0, 1\): algorithm.t_mix=1 divides by T_mix-1") as e:
        plan_sweep(load_sweep(tmp_path / "s.yaml"), tmp_path)
    assert "CUDA" not in str(e.value)  # jobs run on GPU nodes: the submitting machine's devices do not matter
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize(("manifest", "slurm", "state"), [
    ("finished", "FAILED", "done"),  # the manifest decides
    ("running", "COMPLETED", "failed"),  # SLURM says completed, the run never finished (hydra#1928)
    (None, "PENDING", "queued"), ("preempted", "REQUEUED", "queued"), ("running", "RUNNING", "running"),
    ("preempted", None, "preempted"), ("running", "PREEMPTED", "preempted"), ("running", "CANCELLED", "failed"),
    ("running", "TIMEOUT", "failed"), (None, None, "not submitted"),
])
def test_status_rules(manifest, slurm, state):
    assert run_state(manifest, slurm) == state


def test_sacct_lines_with_pending_arrays():
    text = "12_[0-2,5%4]|PENDING\n13|CANCELLED by 0\n14_1|RUNNING\n"
    assert _parse_states(text) == {"12_0": "PENDING", "12_1": "PENDING", "12_2": "PENDING", "12_5": "PENDING",
                                   "13": "CANCELLED", "14_1": "RUNNING"}
