"""Config composition (every option of every group) and validation (one clear error per bad field)."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from s2lpo.config.validate import ConfigError, validate
from s2lpo.tracking.run import run_id
from s2lpo_testing import CONF, QUICK, ROOT, make_cfg


@pytest.mark.parametrize("algorithm", ["grpo", "s2lpo", "token_temp", "g2rpo_a"])
def test_algorithms_compose_and_validate(tmp_path, algorithm):
    explorer = "toy_m" if algorithm == "s2lpo" else "none"
    cfg = make_cfg(tmp_path, f"algorithm={algorithm}", f"explorer={explorer}")
    validate(cfg)
    assert cfg.algorithm.name == algorithm
    assert OmegaConf.to_container(cfg, resolve=True)["paths"]["runs_dir"] == f"{tmp_path}/runs"


def test_default_is_s2lpo_on_the_toy_family(tmp_path):
    cfg = make_cfg(tmp_path)
    validate(cfg)
    assert (cfg.algorithm.name, cfg.learner.name, cfg.explorer.name) == ("s2lpo", "toy-l", "toy-m")
    assert cfg.algorithm.t_mix > 0 and cfg.trainer.backend == "local"


@pytest.mark.parametrize("group", ["learner", "explorer", "algorithm", "family", "logger", "experiment"])
def test_every_option_composes(tmp_path, group):
    for f in sorted((CONF / group).glob("*.yaml")):
        cfg = make_cfg(tmp_path, f"{group}={f.stem}")
        OmegaConf.to_container(cfg, resolve=True)


def test_run_id_ignores_paths_and_logger(tmp_path):
    a = OmegaConf.to_container(make_cfg(tmp_path, *QUICK), resolve=True)
    b = OmegaConf.to_container(make_cfg(tmp_path / "x", *QUICK, "logger=mlflow", "trainer.threads=2"), resolve=True)
    c = OmegaConf.to_container(make_cfg(tmp_path, *QUICK, "seed=1"), resolve=True)
    assert run_id(a) == run_id(b) != run_id(c)


REJECTIONS = [
    (["family=toy", "family.precedence_share=1.5"], "family.precedence_share=1.5 must be null or a number in [0, 1]"),
    (["family=toy", "+family.left_to_right.xl=0.5"], "family.left_to_right.xl: 'xl' is not in family.sizes"),
    (["family=toy", "family.left_to_right.l=2"], "family.left_to_right.l=2 must be a number in [0, 1]"),
    (["family=toy", "+family.left_to_right_only.l=0.5"], "family.left_to_right.l=1.0 + family.left_to_right_only.l=0.5 exceeds 1"),
    (["family=toy", "family.drills=-1"], "family.drills=-1 must be an integer >= 0"),
    (["family=toy", "family.n_operands=2"], "family.drills=2 needs family.n_operands >= 3"),
    (["algorithm.t_mix=1"], "algorithm.t_mix=1"),
    (["algorithm.t_mix=500"], "exceeds trainer.total_steps"),
    (["algorithm.group_size=1"], "algorithm.group_size=1"),
    (["algorithm.name=ppo"], "algorithm.name='ppo'"),
    (["algorithm.schedule=exp"], "algorithm.schedule='exp'"),
    (["algorithm.temperature=0"], "algorithm.temperature=0"),
    (["algorithm.temperature=-1.0"], "algorithm.temperature=-1.0"),
    (["algorithm=g2rpo_a", "explorer=none", "algorithm.guidance.k=9"], "algorithm.guidance.k=9"),
    (["data.train_file=/no/such/file.parquet"], "data.train_file=/no/such/file.parquet does not exist"),
    (["trainer.lr=-0.001"], "trainer.lr=-0.001"),
    (["trainer.lr=abc"], "trainer.lr='abc' must be a number > 0"),
    (["algorithm.clip_ratio=wide"], "algorithm.clip_ratio='wide' must be a number > 0"),
    (["algorithm.temperature_mode=hot"], "algorithm.temperature_mode='hot'"),
    (["algorithm.offpolicy_correction=magic"], "algorithm.offpolicy_correction='magic'"),
    (["explorer=none"], "needs an explorer but explorer=none"),
    (["explorer=qwen3_1_7b"], "explorer.family='qwen3' differs from learner.family='toy'"),
    (["learner=qwen3_8b", "algorithm=grpo", "explorer=none"], "learner.path="),
    (["explorer=toy_xs", "family=toy_tiny"], "explorer.size='xs' is not in family.sizes"),
    (["algorithm=s2lpo", "algorithm.t_mix=0", "explorer=none"], "is plain GRPO"),
    (["data.reward=nope"], "data.reward='nope'"),
    (["trainer.eval_every=0"], "trainer.eval_every=0"),
    (["algorithm.loss_agg_mode=mean"], "algorithm.loss_agg_mode='mean'"),
    (["algorithm.top_p=1.5"], "algorithm.top_p=1.5"),
    (["explorer.tokenizer=/no/tok"], "explorer.tokenizer=/no/tok does not exist"),
    (["trainer.device=cuda"], "no CUDA device"),
    # values that used to pass silently: a negative clip is gradient ascent, a negative cap flips IS weights
    (["trainer.grad_clip=-1"], "trainer.grad_clip=-1 must be a number > 0"),
    (["algorithm.offpolicy_correction=truncated_is", "algorithm.is_cap=-1"], "algorithm.is_cap=-1 must be a number > 0"),
    (["trainer.weight_decay=-1"], "trainer.weight_decay=-1 must be a number >= 0"),
    (["trainer.warmup_steps=-5"], "trainer.warmup_steps=-5 must be an integer >= 0"),
    (["trainer.threads=-1"], "trainer.threads=-1 must be null"),
    (["trainer.eval_temperature=0"], "trainer.eval_temperature=0 must be a number > 0"),
    (["seed=abc"], "seed='abc' must be an integer"),
    (["+algorithm.tmix=5"], "algorithm.tmix is not a setting of the algorithm group and would be ignored; did you "
                            "mean algorithm.t_mix?"),
    (["+trainer.learning_rate=1e-5"], "trainer.learning_rate is not a setting of the trainer group"),
    (["+explorer.sampling.temp=0.5"], "explorer.sampling.temp is not a setting of the explorer group"),
    (["data.max_new_tokens=1000"], "data.max_new_tokens=1000 does not fit the positions of learner=toy-l and explorer=toy-m (128"),
    # issue 16's tracebacks and unchecked values, now one line each
    # an algorithm's identity: a run labelled GRPO is plain GRPO (issue 17)
    (["algorithm=grpo", "algorithm.t_mix=3"], "algorithm=grpo with algorithm.t_mix=3: explorer rows make the run S2L-PO, not GRPO; use "
                         "algorithm=s2lpo, or add algorithm.t_mix=0 for the GRPO baseline"),
    (["algorithm=token_temp", "algorithm.t_mix=3"], "algorithm=token_temp with algorithm.t_mix=3"),
    (["algorithm=g2rpo_a", "algorithm.t_mix=3"], "algorithm=g2rpo_a with algorithm.t_mix=3: explorer rows make the run S2L-PO"),
    (["algorithm=grpo", "algorithm.t_mix=0", "explorer=none", "algorithm.guidance.enabled=true"],
     "algorithm=grpo with algorithm.guidance.enabled=true is G²RPO-A, not GRPO; use algorithm=g2rpo_a"),
    (["algorithm=g2rpo_a", "algorithm.t_mix=0", "explorer=none", "algorithm.guidance.enabled=false"],
     "algorithm=g2rpo_a with algorithm.guidance.enabled=false is plain GRPO"),
    (["algorithm=token_temp", "algorithm.t_mix=0", "explorer=none", "algorithm.temperature=1.0"],
     "algorithm=token_temp with algorithm.temperature=1.0 is not a high-temperature baseline"),
    (["algorithm=s2lpo", "explorer=none", "algorithm.t_mix=3"], "algorithm.t_mix=3 needs an explorer but explorer=none"),
    (["experiment=toy_quick", "algorithm=grpo"], "algorithm=grpo with algorithm.t_mix=4"),
    (["learner.path=/no/such/model"], "learner.path=/no/such/model does not exist; set it to a model directory, or "
                                      "null to use the toy family's build"),
    (["family.sizes.l.hidden_size=-5"], "family.sizes.l.hidden_size=-5 must be an integer >= 1"),
    (["trainer.eval_problems=100000"], "trainer.eval_problems=100000 exceeds the family's 128 evaluation problems"),
    (["algorithm=g2rpo_a", "explorer=none", "algorithm.t_mix=0", "algorithm.guidance.period=abc"],
     "algorithm.guidance.period='abc' must be a number >= 2"),
    (["+family.num_problems=3"], "family.num_problems is not a setting of the family group"),
]


@pytest.mark.parametrize(("overrides", "message"), REJECTIONS, ids=[" ".join(o) for o, _ in REJECTIONS])
def test_rejections(tmp_path, overrides, message):
    import torch

    if "trainer.device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    cfg = make_cfg(tmp_path, *overrides)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert message in str(e.value)
    assert len(e.value.problems) == 1, e.value.problems  # one error, naming the field


def test_algorithm_choices_are_ours_only(tmp_path):
    """verl's config groups are not on our search path: a typo lists our four algorithms, not verl's
    ``rollout_correction`` (whose choice used to compose verl's node and crash)."""
    from hydra.errors import MissingConfigException

    for bad in ("algorithm=grpoo", "algorithm=rollout_correction"):
        with pytest.raises(MissingConfigException) as e:
            make_cfg(tmp_path, bad)
        assert sorted(e.value.options) == ["g2rpo_a", "grpo", "s2lpo", "token_temp"]
    assert make_cfg(tmp_path, "trainer=verl").trainer.verl.trainer.use_v1 is False  # verl's node, from our plugin


def test_all_problems_reported_at_once(tmp_path):
    cfg = make_cfg(tmp_path, "algorithm.group_size=1", "trainer.lr=0", "algorithm.temperature=0")
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert len(e.value.problems) == 3


def test_explorer_tokenizer_must_match_learner(tmp_path, tiny_family):
    from s2lpo.models.tokenizer import build_tokenizer

    other = build_tokenizer(["completely different text 123"], vocab_size=300)
    other.save_pretrained(tmp_path / "other_tok")
    cfg = make_cfg(tmp_path, *QUICK, f"explorer.tokenizer={tmp_path / 'other_tok'}")
    from s2lpo.trainer.setup import resolve

    with pytest.raises(ConfigError, match="explorer tokenizer .* differs from the learner's"):
        resolve(cfg)


def test_bad_config_exits_before_loading_models(tmp_path):
    """The entry point exits with the error list (code 2) and never builds the family."""
    import subprocess
    import sys

    from s2lpo_testing import ROOT

    # the entry point as `python experiments/train.py ...` runs it, then which heavy packages it imported: a
    # rejection waits for neither verl nor transformers (~10 s of imports)
    probe = ("import runpy, sys\nsys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "finally:\n    print('imported:', sorted(m for m in ('verl', 'transformers') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", probe, str(ROOT / "experiments/train.py"), f"paths.root_dir={tmp_path}",
                        f"paths.cache_dir={tmp_path}/cache", "algorithm.t_mix=1", "trainer.lr=-1",
                        "trainer.total_steps=abc"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr  # validated before the progress bar is drawn
    assert "imported: []" in r.stdout, r.stdout
    assert "algorithm.t_mix=1" in r.stderr and "trainer.lr=-1" in r.stderr
    assert "trainer.total_steps='abc' must be an integer" in r.stderr
    assert not (tmp_path / "cache").exists()


def _sys_refuses_folders() -> bool:
    """Whether /sys refuses a new folder (it does on Linux, even to root): an unwritable path for any user."""
    try:
        Path("/sys/s2lpo-probe").mkdir()
    except OSError:
        return True
    Path("/sys/s2lpo-probe").rmdir()
    return False


@pytest.mark.skipif(not _sys_refuses_folders(), reason="needs /sys, where not even root can make a folder")
def test_an_unwritable_runs_dir_is_named_not_hydras_traceback(tmp_path):
    """Hydra makes its output folder (hydra.run.dir, under paths.runs_dir) before the entry point runs: where
    paths.runs_dir cannot be written, that folder goes to a temporary one and the validation names the field."""
    import subprocess
    import sys

    from s2lpo_testing import ROOT

    r = subprocess.run([sys.executable, str(ROOT / "experiments/train.py"), f"paths.root_dir={tmp_path}",
                        f"paths.cache_dir={tmp_path}/cache", "paths.runs_dir=/sys/s2lpo-runs"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "paths.runs_dir=/sys/s2lpo-runs is not writable" in " ".join(r.stderr.split()), r.stderr
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("study.seeds=abc", "study.seeds='abc' must be a non-empty list of integers"),  # was seeds 'a', 'b', 'c'
    ("study.seeds=[0,x]", "study.seeds=[0, 'x'] must be"), ("study.seeds=[]", "study.seeds=[] must be"),
    ("study.runs.GRPO=grpo", "study.runs.GRPO must be a list of overrides"),
])
def test_a_studys_seeds_and_runs_are_checked_before_any_run_is_composed(tmp_path, override, message):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from s2lpo.study.run import study_configs

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        with pytest.raises(ConfigError) as e:
            study_configs(compose("study", overrides=[f"paths.root_dir={tmp_path}", override]))
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(message), e.value.problems


def test_the_studys_labels_are_the_tables_and_the_dashboards(tmp_path):
    """conf/study/toy.yaml labels its runs as the tables and figures do (s2lpo.algo.labels), and a run is named
    on the dashboard by that label and its seed."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from s2lpo.study.run import study_configs
    from s2lpo.tracking.sinks import run_name, run_tags

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        runs = study_configs(compose("study", overrides=[f"paths.root_dir={tmp_path}"]))
    for label, seed, c in runs:
        cfg = OmegaConf.to_container(c, resolve=True)
        tags = run_tags(cfg, run_id(cfg))
        assert tags["label"] == label and run_name(cfg, tags) == f"{label} · seed {seed}"
    assert len({run_tags(OmegaConf.to_container(c, resolve=True), "x")["config"] for *_, c in runs}) == len(
        {label for label, *_ in runs})  # the seeds of a label share its config
    by_label = {label: c for label, _, c in runs}
    study = OmegaConf.load(CONF / "study" / "toy.yaml")
    assert len(study.seeds) >= 3  # the demo measures over seeds
    # the diversity figure's high temperature is the token-level baseline's, as that run uses it
    assert study.diversity.high_temperature == by_label["GRPO (high T)"].algorithm.temperature


@pytest.mark.parametrize("study", sorted(p.stem for p in (CONF / "study").glob("*.yaml")))
def test_every_study_composes_into_valid_runs(tmp_path, study):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from s2lpo.study.run import study_configs

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("study", overrides=[f"study={study}", f"paths.root_dir={tmp_path}"])
        runs = study_configs(cfg)
    assert len(runs) == len(cfg.study.runs) * len(cfg.study.seeds)
    for _, _, c in runs:
        validate(c)
        assert c.paths.root_dir == str(tmp_path) and c.sweep == cfg.study.name


def test_the_demo_logs_where_the_readme_says(tmp_path):
    """README command 1's promise: the study's runs log to the journal and the MLflow store the README's
    ``mlflow ui`` line opens, and the README claims W&B files for the demo only if its runs write them."""
    import re

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from s2lpo.study.run import study_configs

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        runs = study_configs(compose("study", overrides=[f"paths.root_dir={tmp_path}"]))
    readme = (ROOT / "README.md").read_text()
    demo = readme[readme.index("`make demo` ("):readme.index("## Running things")]
    store = re.search(r"mlflow ui --backend-store-uri (sqlite:///\S+?)`", demo).group(1)
    for _, _, c in runs:
        assert {"journal", "mlflow"} <= set(c.logger.sinks)
        assert c.logger.mlflow.tracking_uri == store.replace("sqlite:///", f"sqlite:///{tmp_path}/")
        if "wandb" not in c.logger.sinks:
            assert "logs to the journal and MLflow only" in demo
