"""The Optuna search driver on the tiny family, and the CUDA path (skipped without a GPU)."""

import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from s2lpo.study.search import check_space, run_search
from s2lpo.tracking.journal import read_history
from s2lpo.trainer.local import train
from s2lpo_testing import CACHE, CONF, QUICK, assert_passk_is_an_estimate, make_cfg


@pytest.mark.slow
def test_optuna_search_runs_trials_and_resumes(tmp_path):
    base = [f"paths.root_dir={tmp_path}", f"paths.cache_dir={CACHE}", *QUICK, "algorithm=grpo", "explorer=none",
            "algorithm.t_mix=0", "trainer.total_steps=2", "hparams_search=toy_optuna", "hparams_search.n_trials=2"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=base)
        cfg.hparams_search.params = {"trainer.lr": {"type": "float", "low": 5e-5, "high": 1e-3, "log": True}}
        study = run_search(cfg, base)
        assert len([t for t in study.trials if t.state.is_finished()]) == 2
        cfg.hparams_search.n_trials = 3  # the same storage: only one more trial runs
        study = run_search(cfg, base)
    trials = optuna.load_study(study_name="toy-grpo", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert len(trials) == 3
    for t in trials:
        assert 5e-5 <= t.params["trainer.lr"] <= 1e-3
        h = read_history(t.user_attrs["run_dir"])
        assert t.value == h["eval/toy/pass@1"][max(h["eval/toy/pass@1"])]  # the metric's last value is the objective
        assert h["train/lr"][1] == pytest.approx(t.params["trainer.lr"])  # the sampled value reached the run


def test_search_space_errors(tmp_path):
    from omegaconf import OmegaConf

    with pytest.raises(ValueError, match=r"hparams_search.params.x.type='bogus'"):
        check_space(OmegaConf.create({"x": {"type": "bogus"}}))
    with pytest.raises(ValueError, match="low < high"):
        check_space(OmegaConf.create({"x": {"type": "float", "low": 1, "high": 1}}))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_local_trainer_on_cuda(tmp_path):
    cfg = make_cfg(tmp_path, *QUICK, "algorithm=s2lpo", "explorer=toy_s", "trainer.device=cuda",
                   "trainer.total_steps=4")
    res = train(cfg, log=lambda *_: None)
    h = read_history(res.run_dir)
    assert res.status == "finished"
    assert [h["train/n_explorer"][s] for s in range(1, 5)] == [4, 2, 0, 0]
    assert_passk_is_an_estimate({k: h[f"eval/toy/pass@{k}"][4] for k in (1, 2, 4)}, n=4, problems=8)


@pytest.mark.slow
def test_family_passk_tables(tmp_path):
    from s2lpo.study.family_passk import family_passk

    cfg = make_cfg(tmp_path, "family=toy_tiny", "trainer.threads=1")
    curves = family_passk(cfg, n=8).curves
    assert set(curves) == {"s", "l"}
    for c in curves.values():
        assert list(c) == list(range(1, 9))
        assert all(c[k] <= c[k + 1] + 1e-12 for k in range(1, 8))  # pass@k never falls with k
    md = (tmp_path / "results" / "family_passk.md").read_text().splitlines()
    assert md[0] == "| model | params | pass@1 | pass@2 | pass@4 | pass@8 |"
    assert (tmp_path / "results" / "family_passk.csv").read_text().count("\n") == 9


@pytest.mark.parametrize(("n", "message"), [("abc", "n='abc' must be an integer >= 1"), ("0", "n=0 must be an integer"),
                                            ("8 trainer.eval_temperature=0", "trainer.eval_temperature=0 must be")])
def test_family_passk_checks_n_and_its_config_before_building_the_family(tmp_path, n, message):
    """``+n=abc`` was int()'s traceback and ``+n=0`` built the family first; both exit 2 now, as a bad config does."""
    import subprocess
    import sys

    from s2lpo_testing import ROOT

    first, *more = n.split()
    r = subprocess.run([sys.executable, str(ROOT / "experiments/family_passk.py"), f"paths.root_dir={tmp_path}",
                        f"paths.cache_dir={tmp_path}/cache", f"+n={first}", *more], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and message in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "cache").exists()
