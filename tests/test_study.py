"""The main job's machinery on the tiny family: every method runs, results/ gets a table and a figure."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from s2lpo.study.run import prepare_run, run_study
from s2lpo_testing import CACHE, CONF, QUICK

pytestmark = pytest.mark.slow


def test_study_writes_table_and_figure(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("study", overrides=[f"paths.root_dir={tmp_path}", f"paths.cache_dir={CACHE}",
                                          f"paths.explorer_cache_dir={tmp_path}/xc"])
        OmegaConf.update(cfg, "study.common", [*QUICK, "trainer.total_steps=3", "trainer.eval_every=3"])
        OmegaConf.update(cfg, "study.runs", {"GRPO": ["algorithm=grpo", "explorer=none", "algorithm.t_mix=0"],
                                             "S2L-PO": ["algorithm=s2lpo", "explorer=toy_s"]}, merge=False)
        OmegaConf.update(cfg, "study.seeds", [0, 1])
        OmegaConf.update(cfg, "study.diversity", {"explorers": ["s"], "learner": "l", "high_temperature": 1.3,
                                                  "n": 4}, merge=False)
        runs = run_study(cfg).runs
        assert {k: len(v) for k, v in runs.items()} == {"GRPO": 2, "S2L-PO": 2}
        # an explorer cache was filled ahead of training: no run had a cache miss
        from s2lpo.tracking.journal import read_history

        for d in runs["S2L-PO"]:
            assert sum(read_history(d)["compute/explorer/cache_misses"].values()) == 0
        assert cfg.study.jobs == 2  # trained two at a time, in worker processes
        again = run_study(cfg).runs  # finished runs are reused, not trained again
        assert again == runs
        import json

        diversity = [d for d in (tmp_path / "runs").iterdir() if d.name.startswith("eval-toy-")]
        for d in [d for dirs in runs.values() for d in dirs] + diversity:  # nor even started again (no worker)
            assert len(json.loads((d / "manifest.json").read_text())["starts"]) == 1
    lines = (tmp_path / "results" / "table1_toy.md").read_text().splitlines()
    assert lines[2] == "|  | pass@1 (%) | pass@8 (%) | explorer tokens | learner tokens |"
    rows = {line.split("|")[1].strip(): line.split("|")[2:6] for line in lines[5:7]}
    assert set(rows) == {"GRPO", "S2L-PO · toy-s"}
    assert "[" in rows["GRPO"][0]  # two seeds: the mean and its bootstrap interval
    assert rows["GRPO"][2].strip() == "0 [0, 0]"  # no explorer tokens in GRPO
    assert not rows["S2L-PO · toy-s"][2].strip().startswith(("0", "–"))
    written = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert {"table1_toy.tex", "table1_toy.csv", "fig1_pass1_vs_step.pdf", "fig4_explorer_share.png",
            "fig6_diversity.png"} <= set(written)  # the diversity figure: toy-s, toy-l, toy-l at T = 1.3
    assert len({p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("eval-toy-")}) == 3
    img = Image.open(tmp_path / "results" / "fig1_pass1_vs_step.png")
    assert img.size == (750, 540)
    assert len(set(img.convert("L").getdata())) > 10  # not blank


def test_a_run_that_fails_in_a_worker_raises_its_error_in_the_study(tmp_path):
    """With ``study.jobs`` > 1 a run's error crosses the process intact: the study raises the same user error (the
    entry point prints it and exits 2), not a garbled copy."""
    import pickle

    from s2lpo.config.validate import ConfigError
    from s2lpo.study.parallel import train_in_workers
    from s2lpo_testing import make_cfg

    assert pickle.loads(pickle.dumps(ConfigError(["a", "b"]))).problems == ["a", "b"]
    bad = make_cfg(tmp_path, *QUICK, "trainer.total_steps=3")
    OmegaConf.update(bad, "trainer.lr", -1.0)
    with pytest.raises(ConfigError) as err:
        train_in_workers([("bad", bad), ("bad again", bad)], 2, log=lambda *_: None)
    assert any(p.startswith("trainer.lr=-1.0") for p in err.value.problems), err.value.problems


def test_an_explorer_not_built_yet_is_built_in_a_worker_beside_the_first_runs(tmp_path):
    """With study.jobs > 1 the learner's size is built here (every core, a progress bar); an explorer's size that
    is not built yet is built, and its cache filled, by a worker task that its runs wait for, while the other
    worker trains the runs that need no explorer."""
    import json

    from s2lpo.tracking.journal import read_history

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("study", overrides=[f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache"])
        small = ["family.n_sft=64", "family.sft_epochs=2"]  # a family of its own, built in seconds
        OmegaConf.update(cfg, "study.common", [*QUICK, *small, "trainer.total_steps=3", "trainer.eval_every=3"])
        OmegaConf.update(cfg, "study.runs", {"GRPO": ["algorithm=grpo", "explorer=none", "algorithm.t_mix=0"],
                                             "S2L-PO": ["algorithm=s2lpo", "explorer=toy_s"]}, merge=False)
        OmegaConf.update(cfg, "study.seeds", [0])
        OmegaConf.update(cfg, "study.diversity", None, merge=False)
        lines: list[str] = []
        here: list[str] = []

        def prepare(c):
            here.append(str(c.algorithm.name))
            prepare_run(c, lines.append)

        runs = run_study(cfg, log=lines.append, prepare=prepare).runs
    family = next((tmp_path / "cache" / "family").glob("[0-9a-f]*"))
    assert list(json.loads((family / "manifest.json").read_text())["models"]) == ["s", "l"]
    assert here == ["grpo"]  # prepared here: the GRPO run (the learner's size); the explorer's went to a worker
    ends = [line.split(":")[0] for line in lines if "workers x 1 thread(s)" in line]
    assert ends.index("toy-family size s and the explorer cache of toy-s") < ends.index("S2L-PO seed 0")
    assert any(line.startswith("toy-family size s and the explorer cache of toy-s: built, ") for line in lines)
    assert sum(read_history(runs["S2L-PO"][0])["compute/explorer/cache_misses"].values()) == 0
