"""MLflow's UI in a real browser (headless Chromium): the URL we print opens on the runs table, which lists the
study's runs by their names (label + seed) under the study's parent run, FINISHED with them."""

import pytest
from omegaconf import OmegaConf

from headless_chromium import Chromium, ensure_chromium
from s2lpo.tracking.delivery import Delivery
from s2lpo.tracking.journal import Journal
from s2lpo.tracking.mlflow_replica import announce_sweep, runs_url
from s2lpo.tracking.run import Manifest, run_id
from s2lpo.tracking.sinks import make_replicas
from s2lpo.tracking.where import dashboard_lines
from s2lpo_testing import CONF


@pytest.fixture(scope="module")
def chromium():
    try:
        return ensure_chromium()
    except OSError as e:
        pytest.skip(f"no browser here: {e}")


def test_the_printed_dashboard_url_opens_on_the_studys_runs_by_name(tmp_path, mlflow_server, chromium):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from mlflow.tracking import MlflowClient

    from s2lpo.study.run import study_configs

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        study = compose("study", overrides=[f"paths.root_dir={tmp_path}", "study.seeds=[0]"])  # a run per label
        configs = study_configs(study)
    runs = []
    for label, seed, c in configs:  # each study run as the trainer leaves it: a manifest and a journal
        cfg = OmegaConf.to_container(c, resolve=True)
        cfg["logger"]["mlflow"]["tracking_uri"] = mlflow_server.uri
        rid = run_id(cfg)
        run_dir = tmp_path / "runs" / rid
        Manifest(run_dir.mkdir(parents=True) or run_dir).start(cfg, rid)
        j = Journal(run_dir)
        j.log(0, {"train/loss": 1.0, "eval/toy/pass@1": 0.25})
        j.close()
        runs.append((f"{label} · seed {seed}", cfg, run_dir, rid))
    announce_sweep([r[1]["logger"] for r in runs], study.study.name, len(runs))
    for _, cfg, run_dir, rid in runs:
        (rep,) = make_replicas(cfg, run_dir, rid)
        Delivery(rep, run_dir, on_open=Manifest(run_dir).record_tracking).drain()
        rep.close("finished")
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("s2lpo").experiment_id
    (parent,) = client.search_runs([exp], "tags.`s2lpo.kind` = 'sweep'")
    assert parent.info.status == "FINISHED"  # ended with its last member
    url = runs_url(mlflow_server.uri, exp)
    assert dashboard_lines(runs[0][2], runs_table=True) == [f"MLflow: {url}"]  # what the study prints at its end
    browser = Chromium(chromium)
    try:
        browser.open(url)
        text = browser.wait_for(f"sweep: {study.study.name}")
        assert "matching runs" in text and "Observability" not in text  # the runs table, not the GenAI overview
        expanded = browser.js("""(() => { const b = [...document.querySelectorAll(
            'button[data-component-id*="runnamecellrenderer"]')]; b.forEach(x => x.click()); return b.length; })()""")
        assert expanded == 1  # the study's parent run, its members below it
        text = browser.wait_for(runs[-1][0])
        names = [name for name, *_ in runs]
        assert names == ["GRPO · seed 0", "GRPO (high T) · seed 0", "G²RPO-A · seed 0", "S2L-PO · toy-s · seed 0",
                         "S2L-PO · toy-m · seed 0"]
        assert all(name in text for name in names), text[:2000]
    finally:
        browser.close()
