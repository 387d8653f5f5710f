"""Damaged runs get a clear answer or are mended, never continue silently: a journal cut or deleted before a
resume (mended from MLflow, or refused with what is missing), a finished run's cut journal, a damaged newest
checkpoint (the previous one is used), no intact checkpoint, a full disk during a checkpoint, a read-only
runs directory, a damaged manifest, tracking state or explorer-cache shard."""

from __future__ import annotations

import errno
import json

import pytest

from s2lpo.config.validate import ConfigError, validate
from s2lpo.models.checkpoint import CheckpointError, checkpoint_dir
from s2lpo.rollout.explorer_cache import ExplorerCacheError
from s2lpo.tracking.journal import read_history
from s2lpo.tracking.restore import JournalGapError
from s2lpo.trainer.local import train
from s2lpo_testing import QUICK, make_cfg

pytestmark = pytest.mark.slow

GRPO = [*QUICK, "algorithm=grpo", "explorer=none", "algorithm.t_mix=0"]


def no_timing(hist):
    return {k: v for k, v in hist.items() if not k.startswith("time/")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A finished 4-step run logged to the journal and a local MLflow store (checkpoints at steps 2 and 4)."""
    root = tmp_path_factory.mktemp("ref")
    cfg = make_cfg(root, *GRPO, "logger=mlflow")
    res = train(cfg, log=lambda *_: None)
    assert res.status == "finished"
    return cfg, res, no_timing(read_history(res.run_dir))


def copy_run(reference, tmp_path, *extra):
    """The reference run under a fresh root (its MLflow store too), as a run killed after step 2's checkpoint."""
    import shutil

    cfg, res, _ = reference
    root = tmp_path / "root"
    shutil.copytree(res.run_dir.parents[1], root)
    run_dir = root / "runs" / res.run_id
    for p in checkpoint_dir(run_dir).glob("step_0000004.pt*"):
        p.unlink()
    m = json.loads((run_dir / "manifest.json").read_text())
    m.update(status="killed", final_metrics={})
    (run_dir / "manifest.json").write_text(json.dumps(m))
    tracking = run_dir / "tracking" / "mlflow.json"
    state = json.loads(tracking.read_text())
    state["remote"]["tracking_uri"] = f"sqlite:///{root}/mlruns.db"
    tracking.write_text(json.dumps(state))
    return make_cfg(root, *GRPO, "logger=mlflow", *extra), run_dir


def cut_journal(run_dir, keep_steps: int) -> None:
    """Cut the journal mid-record after the records of steps < ``keep_steps``."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if json.loads(ln)["step"] < keep_steps]
    (run_dir / "metrics.jsonl").write_text("".join(keep) + lines[len(keep)][:17])


def test_a_cut_journal_is_mended_from_mlflow_before_the_resume(reference, tmp_path):
    _, res, ref_hist = reference
    cfg, run_dir = copy_run(reference, tmp_path)
    cut_journal(run_dir, keep_steps=1)  # steps 1 and 2 (and 2's evaluation) gone; the checkpoint is step 2's
    said = []
    again = train(cfg, log=said.append)
    assert again.status == "finished"
    assert f"warning: the journal of run {res.run_id} lacked steps 1-2; restored from MLflow (2 steps)" in said
    assert no_timing(read_history(run_dir)) == ref_hist


def test_a_deleted_journal_without_a_replica_is_refused_with_what_is_missing(reference, tmp_path):
    cfg, run_dir = copy_run(reference, tmp_path, "logger=journal")
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "tracking" / "mlflow.json").unlink()
    (run_dir.parents[1] / "mlruns.db").unlink()
    with pytest.raises(JournalGapError) as e:
        train(cfg, log=lambda *_: None)
    assert str(e.value) == (
        f"the journal of run {run_dir.name} ({run_dir / 'metrics.jsonl'}) lacks steps 0-2 that its checkpoint "
        f"covers (step 2), and no replica holds them; to train those steps again (the run is seeded per step: "
        f"they come out the same), remove the checkpoints: rm -r {run_dir / 'checkpoints'}")
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and m["error"].startswith("JournalGapError: the journal of run")


def test_a_finished_runs_cut_journal_is_mended(reference, tmp_path):
    _, res, ref_hist = reference
    cfg, run_dir = copy_run(reference, tmp_path)
    m = json.loads((run_dir / "manifest.json").read_text())
    m["status"] = "finished"
    (run_dir / "manifest.json").write_text(json.dumps(m))
    cut_journal(run_dir, keep_steps=3)
    said = []
    train(cfg, log=said.append)
    assert f"warning: the journal of run {res.run_id} lacked steps 3-4; restored from MLflow (2 steps)" in said
    assert no_timing(read_history(run_dir)) == ref_hist


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(reference, tmp_path):
    _, res, ref_hist = reference
    cfg, run_dir = copy_run(reference, tmp_path)
    import shutil

    shutil.copy(res.run_dir / "checkpoints" / "step_0000004.pt", checkpoint_dir(run_dir) / "step_0000004.pt")
    shutil.copy(res.run_dir / "checkpoints" / "step_0000004.pt.sha256", checkpoint_dir(run_dir))
    newest = checkpoint_dir(run_dir) / "step_0000004.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still a zip, not the tensors that were saved
    newest.write_bytes(bytes(data))
    said = []
    again = train(cfg, log=said.append)
    assert again.status == "finished"
    assert (f"warning: checkpoint {newest} is damaged (its SHA-256 differs from the one recorded when it was "
            f"written ({len(data)} bytes)); resuming from step_0000002.pt instead") in said
    assert no_timing(read_history(run_dir)) == ref_hist  # steps 3-4 trained again, the same values


def test_no_intact_checkpoint_is_named_with_the_fix(reference, tmp_path):
    cfg, run_dir = copy_run(reference, tmp_path)
    ckpt = checkpoint_dir(run_dir) / "step_0000002.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated
    (checkpoint_dir(run_dir) / ".step_0000004.pt.tmp").write_bytes(b"torn")
    with pytest.raises(CheckpointError) as e:
        train(cfg, log=lambda *_: None)
    assert str(e.value) == (
        f"no intact checkpoint in {checkpoint_dir(run_dir)} (step_0000002.pt: its SHA-256 differs from the one "
        f"recorded when it was written (1000 bytes)); to train this run again from the start (it reproduces the "
        f"same steps), remove them: rm -r {checkpoint_dir(run_dir)}")
    assert not list(checkpoint_dir(run_dir).glob(".*.tmp"))  # the torn write is cleaned up


def test_a_full_disk_at_a_checkpoint_fails_the_run_with_the_fix(tmp_path, monkeypatch):
    import torch

    import s2lpo.models.checkpoint as ck

    calls, real_save = [], torch.save

    def save(obj, f):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint (step 4) hits a full disk halfway
            f.write(b"x" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(ck.torch, "save", save)
    cfg = make_cfg(tmp_path, *GRPO)
    with pytest.raises(CheckpointError) as e:
        train(cfg, log=lambda *_: None)
    [run_dir] = (tmp_path / "runs").iterdir()
    d = checkpoint_dir(run_dir)
    assert str(e.value) == (f"could not write checkpoint {d / 'step_0000004.pt'}: the disk is full; free space under "
                            f"{d} (or set paths.runs_dir to a larger disk) and start the run again: it resumes from "
                            "step_0000002.pt")
    assert sorted(p.name for p in d.iterdir()) == ["step_0000002.pt", "step_0000002.pt.sha256"]  # no .tmp left
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and m["error"] == f"CheckpointError: {e.value}"


def test_a_read_only_runs_directory_is_refused_before_anything_runs(tmp_path, monkeypatch):
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if str(dir).startswith(str(tmp_path / "ro")):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, dir=dir, **kw)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    cfg = make_cfg(tmp_path, *GRPO, f"paths.runs_dir={tmp_path}/ro/runs")
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert e.value.problems == [f"paths.runs_dir={tmp_path}/ro/runs is not writable ({tmp_path}/ro: Permission "
                                "denied); make it writable or set paths.runs_dir elsewhere"]


def test_damaged_manifest_and_tracking_state_are_named_and_rebuilt(reference, tmp_path):
    _, res, ref_hist = reference
    cfg, run_dir = copy_run(reference, tmp_path)
    (run_dir / "manifest.json").write_text("{garbage")
    (run_dir / "tracking" / "mlflow.json").write_text("\x00\x01")
    said = []
    again = train(cfg, log=said.append)
    assert again.status == "finished"
    assert any(s.startswith(f"warning: {run_dir / 'manifest.json'} is damaged (not JSON: ") and
               s.endswith("and rebuilt it from this start") for s in said), said
    assert (f"warning: {run_dir / 'tracking' / 'mlflow.json'} is damaged (JSONDecodeError); the remote run is found "
            "again by its run id and asked what it holds, so nothing is sent twice") in said
    assert len(list(run_dir.glob("manifest.json.damaged-*"))) == 1
    assert no_timing(read_history(run_dir)) == ref_hist
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir.parents[1]}/mlruns.db")
    run_id = json.loads((run_dir / "tracking" / "mlflow.json").read_text())["remote"]["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4]  # each point once


def test_a_damaged_explorer_shard_is_named_with_the_fix(tmp_path):
    from s2lpo.rollout.explorer_cache import ExplorerCache
    from s2lpo.rollout.sampler import SamplingParams

    cache = ExplorerCache(tmp_path, "digest", SamplingParams())
    shard = cache.dir / "part-1-1.parquet"
    shard.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ExplorerCacheError) as e:
        ExplorerCache(tmp_path, "digest", SamplingParams())
    assert str(e.value).startswith(f"explorer cache shard {shard} is damaged (")
    assert str(e.value).endswith(f"remove it (rm {shard}): its samples are generated again when a run or "
                                 "experiments/generate_explorer.py next needs them")
