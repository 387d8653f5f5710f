"""Analysis: readers (journals, a real MLflow store and server, W&B offline files) -> tidy frame ->
specs -> golden tables, byte-identical regeneration, non-blank figures."""

import json
import shutil

import numpy as np
import pytest
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from s2lpo.analysis.cache import RunCache
from s2lpo.analysis.regenerate import SpecError, load_specs, regenerate
from s2lpo.tracking.delivery import Delivery
from s2lpo.tracking.mlflow_replica import MlflowReplica
from s2lpo.tracking.readers import JournalReader, MlflowReader, WandbOfflineReader
from s2lpo.tracking.replica import Point, ReplicaState
from s2lpo.tracking.run import Manifest
from s2lpo.tracking.sinks import make_replicas, run_tags
from s2lpo_testing import ROOT, write_logged_runs

GOLDEN = ROOT / "tests" / "golden"
SPECS = ROOT / "analysis" / "specs" / "toy"


def replicate(run_dirs, uri=None, sinks=("mlflow", "wandb")):
    """Deliver each run's journal to MLflow and W&B (offline files) through the tracking layer."""
    for d in run_dirs:
        m = Manifest(d).data
        for rep in make_replicas(m["config"], d, m["run_id"], mlflow_uri=uri, wandb_mode_override="offline"):
            if rep.name in sinks:
                Delivery(rep, d).drain()
                rep.close("finished")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    dirs = write_logged_runs(root)
    replicate(dirs, uri=f"sqlite:///{root}/mlruns.db")
    return root, dirs


def frame(reader, tmp_path):
    df, _ = RunCache(tmp_path / "cache", reader.name).load(reader)
    return df


def test_three_sources_give_the_same_tidy_frame(world, tmp_path):
    root, dirs = world
    cols = ["run_id", "key", "step", "value"]
    journal = frame(JournalReader(root / "runs"), tmp_path)
    mlf = frame(MlflowReader(f"sqlite:///{root}/mlruns.db"), tmp_path)
    wb = frame(WandbOfflineReader(root / "runs"), tmp_path)
    assert journal["run_id"].nunique() == 7 and len(journal) == sum(
        len(json.loads(line)["metrics"]) for d in dirs for line in (d / "metrics.jsonl").read_text().splitlines())
    for other in (mlf, wb):
        a = journal[cols].astype({"run_id": str, "key": str}).sort_values(cols[:3]).reset_index(drop=True)
        b = other[cols].astype({"run_id": str, "key": str}).sort_values(cols[:3]).reset_index(drop=True)
        assert a.equals(b)
    row = mlf[(mlf["key"] == "eval/toy/pass@1") & (mlf["step"] == 10) & (mlf["method"] == "s2lpo")]
    assert sorted(row["value"].round(6)) == [0.6, 0.61, 0.65]
    assert set(row["explorer"]) == {"toy-s"} and set(row["t_mix"]) == {"6"} and set(row["group_size"]) == {"4"}
    assert set(mlf["sweep"]) == {"analysis"}


def test_mlflow_duplicates_resolve_to_the_latest_timestamp(world, tmp_path):
    root, dirs = world
    uri = f"sqlite:///{tmp_path}/dup.db"
    replicate(dirs[:1], uri=uri, sinks=("mlflow",))
    c = MlflowClient(uri)
    [run] = [r for r in c.search_runs([c.get_experiment_by_name("s2lpo").experiment_id])
             if "s2lpo.run_id" in r.data.tags]  # (not the sweep's parent run)
    c.log_batch(run.info.run_id, metrics=[Metric("train/loss", 42.0, 10**13, 3), Metric("train/loss", 7.0, 1, 3)])
    df = frame(MlflowReader(uri), tmp_path)
    loss = df[(df["key"] == "train/loss") & (df["step"] == 3)]
    assert list(loss["value"]) == [42.0]  # three rows for (run, key, step): the latest timestamp wins


def test_golden_tables_and_byte_identical_regeneration(world, tmp_path):
    root, _ = world
    src = [f"mlflow:sqlite:///{root}/mlruns.db#s2lpo"]
    first = regenerate(src, SPECS, tmp_path / "a", tmp_path / "cache", warn=lambda *_: None)
    assert (first.runs, first.fetched, first.cached) == (7, 7, 0)
    for ext in ("md", "tex", "csv"):
        assert (tmp_path / "a" / f"table1_toy.{ext}").read_text() == (GOLDEN / f"table1_toy.{ext}").read_text(), ext
    second = regenerate(src, SPECS, tmp_path / "b", tmp_path / "cache", warn=lambda *_: None)
    assert (second.fetched, second.cached) == (0, 7)
    names = sorted(p.name for p in first.written)
    assert names == sorted(p.name for p in second.written) and len(names) == 16  # 5 figures x 2, 2 tables x 3
    assert "table2_toy_vs_grpo.md" in names and not any(n.startswith(("fig6", "fig7")) for n in names)  # optional:
    # these runs logged no diversity runs nor the explorer-only-signal metric
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # journals and W&B files give the same table
    for other in ([f"journal:{root}/runs"], [f"wandb:{root}/runs"]):
        regenerate(other, SPECS / "table1_toy.yaml", tmp_path / "c", tmp_path / "cache", warn=lambda *_: None)
        assert (tmp_path / "c" / "table1_toy.md").read_bytes() == (tmp_path / "a" / "table1_toy.md").read_bytes()


def test_exact_cells(world, tmp_path):
    """The table rebuilt from the logged runs has the cells the journals imply: the mean over seeds of each run's
    final value and its 95 % percentile-bootstrap interval. With three seeds, a resample of one value three times
    has probability 1/27 = 3.7 % > 2.5 %, so the interval's ends are exactly the lowest and highest seed
    (computed here from the journals themselves, not by the analysis code)."""
    from s2lpo.tracking.journal import read_history

    root, dirs = world
    regenerate([f"journal:{root}/runs"], SPECS / "table1_toy.yaml", tmp_path, tmp_path / "cache",
               warn=lambda *_: None)
    csv = (tmp_path / "table1_toy.csv").read_text().splitlines()
    finals = {}
    for d in dirs:
        m = Manifest(d).data["config"]
        h = read_history(d)["eval/toy/pass@1"]
        finals.setdefault((m["algorithm"]["name"], m["explorer"]["name"] if m["algorithm"]["t_mix"] else "none"),
                          []).append(100 * h[max(h)])
    s2, grpo = finals[("s2lpo", "toy-s")], finals[("grpo", "none")]
    assert sorted(s2) == pytest.approx([60.0, 61.0, 65.0])
    assert f"toy-l,s2lpo,toy-s,pass@1 (%),{np.mean(s2):.1f},{min(s2):.1f},{max(s2):.1f},3,{np.mean(s2) - np.mean(grpo):.1f}," in csv
    assert f"toy-l,grpo,none,pass@1 (%),{np.mean(grpo):.1f},{min(grpo):.1f},{max(grpo):.1f},3,," in csv
    assert "toy-l,s2lpo,toy-s,explorer tokens,1100.0,1100.0,1100.0,3,," in csv  # 11 steps x 100 tokens
    assert "toy-l,token_temp,none,pass@1 (%),55.0,,,1,3.0," in csv  # one seed: no interval
    md = (tmp_path / "table1_toy.md").read_text()
    assert "| S2L-PO · toy-s | 62.0 [60.0, 65.0] (+10.0) | 100.0 [99.9, 100.0] (+0.2) |" in md
    assert "| GRPO (high T) | 55.0 (+3.0) | 99.8 (+0.1) | 0 | 2,200 |" in md  # one seed: the mean alone
    assert "**" not in md.split("\n\n")[1]  # a one-seed row in every column: nothing is bold
    assert "95% bootstrap interval over seeds [low, high]" in md and "toy: 16 problems × 8 samples" in md


def test_bold_only_beyond_the_noise_and_never_with_one_seed(tmp_path):
    """Bold marks the best of a column when its interval lies above every other's; overlapping intervals or
    one seed: no bold."""
    from s2lpo_testing import write_logged_runs

    runs = {("grpo", "none"): [0.10, 0.12, 0.11], ("s2lpo", "toy_s"): [0.60, 0.62, 0.61],
            ("token_temp", "none"): [0.05, 0.65, 0.30]}
    write_logged_runs(tmp_path / "w", runs=runs)
    spec = yaml.safe_load((SPECS / "table1_toy.yaml").read_text())
    spec["columns"] = spec["columns"][:1]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    regenerate([f"journal:{tmp_path / 'w' / 'runs'}"], tmp_path / "t.yaml", tmp_path / "a", tmp_path / "c",
               warn=lambda *_: None)
    md = (tmp_path / "a" / "table1_toy.md").read_text()
    assert "**" not in md.split("\n\n")[1]  # S2L-PO's [60, 62] overlaps token_temp's [5, 65]
    write_logged_runs(tmp_path / "w2", runs={k: v for k, v in runs.items() if k[0] != "token_temp"})
    regenerate([f"journal:{tmp_path / 'w2' / 'runs'}"], tmp_path / "t.yaml", tmp_path / "b", tmp_path / "c",
               warn=lambda *_: None)
    assert "| S2L-PO · toy-s | **61.0 [60.0, 62.0]** (+50.0) |" in (tmp_path / "b" / "table1_toy.md").read_text()
    write_logged_runs(tmp_path / "w3", runs={("grpo", "none"): [0.1], ("s2lpo", "toy_s"): [0.9]})
    regenerate([f"journal:{tmp_path / 'w3' / 'runs'}"], tmp_path / "t.yaml", tmp_path / "d", tmp_path / "c",
               warn=lambda *_: None)
    assert "| S2L-PO · toy-s | 90.0 (+80.0) |" in (tmp_path / "d" / "table1_toy.md").read_text()  # one seed


def test_a_cell_never_averages_runs_of_different_configs(tmp_path):
    """The issue's case: a quick run with other settings lands in the same runs directory as a study's seeds. The
    table refuses, naming the cell, the runs and the keys that differ; ``mixed: split`` shows one row per config;
    ``--filter config=<id>`` keeps one. Figures refuse alike."""
    from s2lpo.analysis.cells import MixedCellError
    from s2lpo_testing import write_logged_runs

    root = tmp_path / "w"
    seeds = write_logged_runs(root, runs={("s2lpo", "toy_s"): [0.60, 0.62]})
    quick = write_logged_runs(root, runs={("s2lpo", "toy_s"): [0.05]}, overrides=("trainer.lr=0.01",))
    spec = yaml.safe_load((SPECS / "table1_toy.yaml").read_text())
    spec["columns"] = spec["columns"][:1]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(MixedCellError) as e:
        regenerate([f"journal:{root / 'runs'}"], tmp_path / "t.yaml", tmp_path / "a", tmp_path / "c",
                   warn=lambda *_: None)
    msg = str(e.value)
    assert "cell learner=toy-l, method=s2lpo, explorer=toy-s:" in msg, msg
    assert any(f"they differ in trainer.lr: {a} vs {b}\n" in msg for a, b in (("5e-05", "0.01"), ("0.01", "5e-05")))
    assert all(Manifest(d).data["run_id"] in msg for d in seeds + quick) and "mixed: split" in msg
    spec["mixed"] = "split"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    regenerate([f"journal:{root / 'runs'}"], tmp_path / "t.yaml", tmp_path / "b", tmp_path / "c", warn=lambda *_: None)
    rows = [r for r in (tmp_path / "b" / "table1_toy.md").read_text().splitlines() if r.startswith("| S2L-PO")]
    assert sorted(r.split(" | ")[1].rstrip(" |") for r in rows) == ["5.0", "61.0 [60.0, 62.0]"], rows
    assert all("[config " in r for r in rows)
    keep = run_tags(Manifest(seeds[0]).data["config"], "x")["config"]
    regenerate([f"journal:{root / 'runs'}"], SPECS / "fig1_pass1_vs_step.yaml", tmp_path / "f", tmp_path / "c",
               extra_filter={"config": keep}, warn=lambda *_: None)
    with pytest.raises(MixedCellError, match="figure fig1_pass1_vs_step: 1 cell"):
        regenerate([f"journal:{root / 'runs'}"], SPECS / "fig1_pass1_vs_step.yaml", tmp_path / "g", tmp_path / "c",
                   warn=lambda *_: None)


def test_sweep_filters_at_the_source(world, tmp_path):
    """``--sweep`` reaches MLflow's search (the server returns only that sweep's runs), not a filter after fetching."""
    from s2lpo.tracking.readers import MlflowReader

    root, _ = world
    reader = MlflowReader(f"sqlite:///{root}/mlruns.db", where={"sweep": "analysis"})
    assert reader.filter == "tags.`sweep` = 'analysis'" and len(reader.runs()) == 7
    assert MlflowReader(f"sqlite:///{root}/mlruns.db", where={"sweep": "other"}).runs() == []
    rep = regenerate([f"mlflow:sqlite:///{root}/mlruns.db"], SPECS / "table1_toy.yaml", tmp_path, tmp_path / "c",
                     extra_filter={"sweep": "other"}, warn=lambda *_: None)
    assert rep.runs == 0 and rep.fetched == 0


def test_figures_are_non_blank_images_of_the_expected_size(world, tmp_path):
    import matplotlib.image as mpimg

    root, _ = world
    rep = regenerate([f"journal:{root}/runs"], SPECS, tmp_path, tmp_path / "cache", warn=lambda *_: None)
    pngs = [p for p in rep.written if p.suffix == ".png"]
    assert len(pngs) == 5
    for p in pngs:
        img = mpimg.imread(p)
        assert img.shape[:2] == (540, 750), p.name  # 5 x 3.6 inches at 150 dpi
        assert np.std(img[..., :3]) > 0.05, p.name  # lines and text, not a blank canvas
        assert (p.with_suffix(".pdf")).read_bytes().startswith(b"%PDF")


def test_only_changed_runs_are_fetched_and_the_cache_serves_offline(world, tmp_path, mlflow_server):
    root, dirs = world
    copies = [shutil.copytree(d, tmp_path / "runs" / d.name) for d in dirs]
    for d in copies:
        shutil.rmtree(d / "tracking", ignore_errors=True)
    replicate(copies, uri=mlflow_server.uri, sinks=("mlflow",))
    src = [f"mlflow:{mlflow_server.uri}"]
    first = regenerate(src, SPECS, tmp_path / "a", tmp_path / "cache", warn=lambda *_: None)
    assert first.fetched == 7
    # one run gets a new point: only it is fetched again
    rid = Manifest(copies[0]).data["run_id"]
    rep = MlflowReplica(mlflow_server.uri, "s2lpo", rid, rid, {}, {})
    rep.open(ReplicaState(tmp_path / "state", "mlflow"))
    rep.send([Point("train/loss", 11, 0.1, 1.0)])
    again = regenerate(src, SPECS, tmp_path / "b", tmp_path / "cache", warn=lambda *_: None)
    assert (again.fetched, again.cached) == (1, 6)
    # the server goes away: the cache alone regenerates the same files
    mlflow_server.stop()
    said = []
    offline = regenerate(src, SPECS, tmp_path / "c", tmp_path / "cache", warn=said.append)
    assert offline.offline and any("unreachable" in s for s in said)
    for p in again.written:
        assert (tmp_path / "c" / p.name).read_bytes() == p.read_bytes(), p.name


@pytest.mark.parametrize(("text", "msg"), [
    ("kind: chart\nname: x\n", "kind='chart'"),
    ("kind: table\nname: x\nrows: [method]\n", r"missing \['columns'\]"),
    ("kind: figure\nname: x\npanels: []\nseries: method\ncolour: red\n", r"unknown key\(s\) \['colour'\]"),
    ("kind: table\nrows: [method\n", r"s.yaml is not valid YAML at line 3, column 1: .*\(while parsing a flow sequence at "
                                      r"line 2, column 7\); fix the file \(a spec is a mapping with kind: table"),
    ("- kind: table\n", r"s.yaml: the file must be a mapping \(key: value lines\), not list"),
])
def test_bad_specs_are_named_before_anything_is_fetched(tmp_path, text, msg):
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SpecError, match=msg):
        load_specs(tmp_path)
    with pytest.raises(SpecError, match=msg):
        regenerate(["mlflow:http://127.0.0.1:9"], tmp_path, tmp_path / "out", tmp_path / "cache")


def test_the_entry_point_prints_what_it_wrote(world, tmp_path):
    import subprocess
    import sys

    root, _ = world
    cmd = [sys.executable, str(ROOT / "analysis" / "regenerate.py"), "--source", f"journal:{root}/runs",
           "--specs", str(SPECS / "table1_toy.yaml"), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "7 run(s): 7 fetched, 0 from the cache" in out.stderr and f"wrote {tmp_path}/out/table1_toy.md" in out.stderr
    assert (tmp_path / "out" / "table1_toy.md").read_bytes() == (GOLDEN / "table1_toy.md").read_bytes()
    bad = subprocess.run([*cmd[:2], "--specs", str(tmp_path / "none")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no spec files" in bad.stderr


def test_start_gain_and_steps_to_reach_the_baselines_final(tmp_path):
    """Per-column ``at``, ``change_from`` and ``reach``: pass@1 rises linearly from 0 to each run's final value
    (evaluations at steps 0, 5, 10; total FLOPs 6e9 per step, 7e9 with an explorer), so the step at which a run
    first reaches GRPO's final mean and the FLOPs spent by then follow from the finals alone."""
    from s2lpo_testing import write_logged_runs

    runs = {("grpo", "none"): [0.10, 0.12, 0.11], ("s2lpo", "toy_s"): [0.60, 0.62, 0.61],
            ("token_temp", "none"): [0.05, 0.65, 0.30]}
    write_logged_runs(tmp_path / "w", runs=runs)
    spec = yaml.safe_load((SPECS / "table2_toy_vs_grpo.yaml").read_text())
    spec["columns"] = [c for c in spec["columns"] if "pass@16" not in c["label"]]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    regenerate([f"journal:{tmp_path}/w/runs"], tmp_path / "t.yaml", tmp_path / "out", tmp_path / "cache",
               warn=lambda *_: None)
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
            for r in (tmp_path / "out" / "table2_toy_vs_grpo.md").read_text().splitlines() if r.startswith("| ")}
    target = np.mean([0.10, 0.12, 0.11])
    reached = [f for f in (0.10, 0.12, 0.11) if f >= target - 1e-12]  # GRPO's own seeds at step 10
    assert rows["S2L-PO · toy-s"][:5] == ["0.0 [0.0, 0.0]", "61.0 [60.0, 62.0] (+50.0)", "61.0 [60.0, 62.0] (+50.0)",
                                          "5 [5, 5]", "42 [42, 42]"]  # step 5: 6 steps x 7e9 FLOPs (high T ties)
    assert rows["GRPO (high T)"][3] == "5 [5, 5] (2 of 3 reached)"  # the 0.05 seed never gets there
    assert rows["GRPO"][3] == (f"10 [10, 10] ({len(reached)} of 3 reached)" if len(reached) < 3 else "10 [10, 10]")
