"""The verl backend around verl's trainer: validation, the explorer-cache job (verl's dataset, sampler and
token builder), and a run's bookkeeping (run id, manifest, verl's file logger merged into the journal and the
MLflow replica under our names). verl's FSDP/vLLM trainer itself needs GPUs: here the run's ``runner`` logs
through verl's real ``Tracking`` file logger what verl's trainer logs."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import open_dict

from s2lpo.config.validate import ConfigError
from s2lpo.data.prepare import toy_rows
from s2lpo.tracking.journal import read_history
from s2lpo.verl_ext.toy import verl_view
from s2lpo_testing import QUICK, make_cfg


def toy_verl_cfg(tmp_path, tiny_family, *extra):
    train = tmp_path / "toy_train.parquet"
    if not train.exists():
        pq.write_table(pa.Table.from_pylist(toy_rows(tiny_family.splits().rl[:12], "train")), train)
    learner = verl_view(tiny_family.model_dir("l"), tmp_path / "l")
    explorer = verl_view(tiny_family.model_dir("s"), tmp_path / "s")
    return make_cfg(tmp_path, *QUICK, "trainer=verl", f"learner.path={learner}", f"explorer.path={explorer}",
                    f"data.train_file={train}", f"paths.explorer_cache_dir={tmp_path / 'xc'}", *extra)


def test_bad_verl_configs_fail_before_anything_starts(tmp_path, tiny_family):
    from s2lpo.verl_ext.runner import train

    cfg = make_cfg(tmp_path, *QUICK, "trainer=verl", "algorithm.offpolicy_correction=shaping",
                   "data.prompts_per_step=4", "trainer.mini_batches=3", "algorithm=s2lpo",
                   "algorithm.t_mix=3", "learner=qwen3_8b", "learner.path=null", "explorer=qwen3_1_7b",
                   "explorer.path=null", "data=dapo_math", "data.train_file=null", "data.eval_files=[]")
    with pytest.raises(ConfigError) as e:
        train(cfg, log=lambda *_: None, runner=lambda *a: pytest.fail("verl must not start"))
    text = str(e.value)
    for field in ("offpolicy_correction=shaping", "mini_batches=3", "learner.path is not set",
                  "explorer.path is not set", "data.train_file is not set"):
        assert field in text
    cfg = make_cfg(tmp_path, *QUICK, "trainer=verl", "trainer.mini_batches=1")  # the toy family needs no paths
    with open_dict(cfg):
        cfg.trainer.verl.actor_rollout_ref.rollout.name = "sglang"
    with pytest.raises(ConfigError, match="rollout.name='sglang'"):
        train(cfg, log=lambda *_: None, runner=lambda *a: None)
    no_solutions = tmp_path / "nosol.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": [{"role": "user", "content": "1+1"}], "data_source": "toy"}]),
                   no_solutions)
    cfg = toy_verl_cfg(tmp_path, tiny_family, "algorithm=g2rpo_a", "algorithm.t_mix=0", "explorer=none",
                       f"data.train_file={no_solutions}",
                       "trainer.mini_batches=1")
    with pytest.raises(ConfigError, match="reference_solution column"):
        train(cfg, log=lambda *_: None, runner=lambda *a: None)


def test_explorer_cache_job_fills_what_verl_will_replay(tmp_path, tiny_family):
    import torch
    from omegaconf import OmegaConf
    from torchdata.stateful_dataloader.sampler import RandomSampler
    from transformers import AutoTokenizer
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.trainer.ppo.utils import create_rl_dataset

    from s2lpo.algo.schedule import split_group
    from s2lpo.models.family import weights_digest
    from s2lpo.trainer.explorer_fill import fill_explorer_cache
    from s2lpo.verl_ext.config import to_verl
    from s2lpo.verl_ext.explorer_fill import explorer_plan
    from s2lpo.verl_ext.explorer_loop import ExplorerAgentLoop

    cfg = toy_verl_cfg(tmp_path, tiny_family, "algorithm.group_size=4", "algorithm.t_mix=3", "data.prompts_per_step=4",
                      "trainer.mini_batches=1")
    made = fill_explorer_cache(cfg, log=lambda *_: None)  # dispatches to the verl job for trainer=verl
    assert fill_explorer_cache(cfg, log=lambda *_: None) == 0  # idempotent
    v = to_verl(cfg, tmp_path / "runs" / "r", "r", weights_digest(tmp_path / "s"))
    OmegaConf.resolve(v)
    tok = AutoTokenizer.from_pretrained(tmp_path / "s")
    dataset = create_rl_dataset(v.data.train_files, v.data, tok, None, is_train=True)
    # verl's sampler, by hand: 12 prompts, batches of 4 -> steps 1..3 are one epoch in the seeded order
    order = list(RandomSampler(range(len(dataset)), generator=torch.Generator().manual_seed(int(cfg.seed))))
    # every prompt drawn at a step with explorer rows gets the explorer's whole pool (here G = 4 samples)
    want = {i: 4 for s in range(3) for i in order[s * 4:(s + 1) * 4] if split_group(s + 1, 4, 3, "linear")[0]}
    assert explorer_plan(v, dataset) == want and made == sum(want.values())

    async def replay(i: int, slot: int):
        loop = ExplorerAgentLoop(trainer_config=DictConfigWrap(v), server_manager=None, tokenizer=tok, processor=None,
                                 dataset_cls=None, data_config=DictConfigWrap(v.data), hf_model_type="qwen3")
        return await loop.run({}, raw_prompt=dataset[i]["raw_prompt"], s2lpo_slot=slot, s2lpo_step=1)

    for i in want:  # verl's own builder (Qwen3's, for this model type) finds every filled sample
        out = asyncio.run(replay(i, 3))
        assert out.prompt_ids == tok(dataset[i]["raw_prompt"][0]["content"], add_special_tokens=False)["input_ids"]
        assert out.extra_fields["global_steps"] == 1 and "num_cached_tokens" in out.extra_fields


def verl_trainer_stand_in(steps, fail_after=None):
    """What verl's trainer does with metrics: ``Tracking(default_backend=trainer.logger)`` (console + file,
    whose path the runner hands over in the actors' environment) and one ``log`` per step."""

    def run(v, env, log):
        import os

        from verl.utils.tracking import Tracking

        os.environ.update(env)  # Ray's runtime_env does this for the TaskRunner actor
        t = Tracking(project_name=v.trainer.project_name, experiment_name=v.trainer.experiment_name,
                     default_backend=list(v.trainer.logger))
        for step in steps:
            t.log({"actor/pg_loss": 0.1 * step, "actor/grad_norm": 1.0 + step, "actor/lr": 1e-6,
                   "response_length/mean": 10.0 + step, "critic/score/mean": 0.5, "timing_s/step": 2.0,
                   "timing_s/gen": 1.0, "training/global_step": step}, step=step)
            if step == fail_after:
                raise RuntimeError("node lost")
        t.finish()

    return run


def test_a_verl_run_lands_in_our_journal_and_mlflow_once_across_restarts(tmp_path, tiny_family):
    import mlflow

    from s2lpo.tracking.run import Manifest
    from s2lpo.verl_ext.runner import train

    cfg = toy_verl_cfg(tmp_path, tiny_family, "logger=mlflow", "algorithm=grpo", "algorithm.t_mix=0", "explorer=none",
                       "trainer.mini_batches=1")
    with pytest.raises(RuntimeError, match="node lost"):
        train(cfg, log=lambda *_: None, runner=verl_trainer_stand_in([1, 2, 3], fail_after=3))
    res = train(cfg, log=lambda *_: None, runner=verl_trainer_stand_in([3, 4]))  # verl resumes after step 2
    assert res.status == "finished"
    m = Manifest(res.run_dir)
    assert m.data["restarts"] == 1 and m.data["status"] == "finished"
    assert m.data["config"]["trainer"]["backend"] == "verl"
    hist = read_history(res.run_dir)
    assert hist["train/pg_loss"] == pytest.approx({1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4})
    assert hist["train/grad_norm"][4] == 5.0 and hist["time/step_s"][1] == 2.0
    assert hist["verl/critic/score/mean"] == {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5}
    assert sorted(p.name for p in (res.run_dir / "verl").glob("verl-*.jsonl")) == ["verl-1.jsonl", "verl-2.jsonl"]
    client = mlflow.tracking.MlflowClient(cfg.logger.mlflow.tracking_uri)
    rid = m.data["tracking"]["mlflow"]["run_id"]
    points = client.get_metric_history(rid, "train/pg_loss")
    assert sorted(p.step for p in points) == [1, 2, 3, 4]  # each step once: the restart re-read nothing
    assert client.get_run(rid).data.tags["backend"] == "verl"


def test_the_toy_family_runs_on_verl_without_any_file_of_its_own(tmp_path, tiny_family):
    """``trainer=verl`` with the toy family needs no download and no prepared data (a GPU smoke test): the
    runner shows verl the toy models as Qwen3 checkpoints and writes the toy problems in verl's schema."""
    from transformers import AutoTokenizer

    from s2lpo.models.family import weights_digest
    from s2lpo.tracking.run import run_id
    from s2lpo.verl_ext.config import run_container
    from s2lpo.verl_ext.runner import train

    seen = {}
    cfg = make_cfg(tmp_path, *QUICK, "trainer=verl", "trainer.mini_batches=1")
    res = train(cfg, log=lambda *_: None, runner=lambda v, env, log: seen.update(v=v))
    v = seen["v"]
    assert res.status == "finished" and res.run_id == run_id(run_container(cfg))  # the id of the config as given
    rows = pq.read_table(v.data.train_files).to_pylist()
    assert len(rows) == len(tiny_family.splits().rl) and rows[0]["data_source"] == "toy"
    assert rows[0]["reference_solution"] == tiny_family.splits().rl[0].solution
    tok = AutoTokenizer.from_pretrained(v.actor_rollout_ref.model.path)
    assert tok.convert_tokens_to_ids("<|im_end|>") is not None  # verl's Qwen3 token builder needs it
    # the same weights as the local backend's, hence one explorer cache for both backends
    assert v.s2lpo.explorer_digest == weights_digest(tiny_family.model_dir("s"))


def test_a_restart_resumes_from_the_latest_checkpoint_whose_step_was_logged(tmp_path):
    """verl saves step k's checkpoint before it logs step k: a kill in between must not skip step k."""
    from s2lpo.verl_ext.resume import TRACKER, latest_verl_step, needs_initial_validation, settle_resume

    ckpts = tmp_path / "verl_checkpoints"
    for step in (2, 4, 6):
        (ckpts / f"global_step_{step}").mkdir(parents=True)
    (ckpts / TRACKER).write_text("6")
    logged = {"verl/training/global_step": {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0, 5: 5.0}, "eval/toy/pass@1": {0: 0.2, 4: 0.3}}
    said = []
    assert settle_resume(tmp_path, logged, said.append) == 4 and latest_verl_step(tmp_path) == 4
    assert "step 6 was saved but its step was never logged" in said[0]
    all_logged = {"verl/training/global_step": {i: float(i) for i in range(1, 7)}}
    (ckpts / TRACKER).write_text("6")
    assert settle_resume(tmp_path, all_logged, said.append) == 6 and len(said) == 1  # nothing to change
    (ckpts / TRACKER).write_text("2")
    assert settle_resume(tmp_path, {"verl/training/global_step": {1: 1.0}}, said.append) == 0
    assert not (ckpts / TRACKER).exists()  # nothing logged at a checkpoint step: from the start
    assert needs_initial_validation({"eval/toy/pass@1": {2: 0.1}}) and not needs_initial_validation(logged)


def test_a_ray_node_that_misses_rays_startup_wait_is_started_again(monkeypatch):
    """Ray waits a fixed 30 s for a new node; a loaded machine can miss it. The runner kills what that start
    spawned (a stand-in for Ray's processes here) and starts Ray again with the same arguments; any other error
    is raised at once, and a timeout of the last of ``RAY_STARTS`` starts too."""
    import ray

    from s2lpo.verl_ext import runner

    timeout = "The current node timed out during startup. This could happen because some of the raylet failed"
    calls: list[dict] = []
    spawned: list[subprocess.Popen] = []
    logs: list[str] = []

    def init(**kw):
        calls.append(kw)
        if len(calls) == 1:  # what a start leaves: a process of Ray's, then the timeout
            spawned.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)  # ray's"]))
            raise Exception(timeout)

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)  # ray's, started before"])
    try:
        monkeypatch.setattr(ray, "init", init)
        runner.start_ray({"num_cpus": 1}, log=logs.append)
        assert calls == [{"num_cpus": 1}] * 2
        assert spawned[0].wait(timeout=30) == -signal.SIGKILL and bystander.poll() is None
        assert len(logs) == 1 and "did not register within Ray's 30 s" in logs[0]
    finally:
        bystander.kill()

    def broken(**kw):
        calls.append(kw)
        raise RuntimeError("Failed to start the GCS: address already in use")

    calls.clear()
    monkeypatch.setattr(ray, "init", broken)
    with pytest.raises(RuntimeError, match="address already in use"):
        runner.start_ray({}, log=logs.append)
    assert len(calls) == 1

    def slow(**kw):
        calls.append(kw)
        raise Exception(timeout)

    calls.clear()
    monkeypatch.setattr(ray, "init", slow)
    with pytest.raises(Exception, match="timed out during startup"):
        runner.start_ray({}, log=logs.append)
    assert len(calls) == runner.RAY_STARTS


def test_the_gpu_smoke_skips_cleanly_without_cuda():
    from s2lpo_testing import ROOT

    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: make gpu-smoke runs the real thing")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py")], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("SKIP gpu-smoke: no CUDA device")


def test_no_extra_a_training_machine_installs_brings_trl():
    """verl patches TRL's value-head model at actor start whenever TRL is importable; TRL 1.x lacks it, so an
    actor would fail to start. TRL (the benchmark's baseline) lives in the ``bench`` extra, in a venv of its own."""
    import importlib.util
    import tomllib

    from s2lpo_testing import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra in ("dev", "gpu"):
        assert not any(d.startswith("trl") for d in project["optional-dependencies"][extra]), extra
    assert not any(d.startswith("trl") for d in project["dependencies"])
    assert importlib.util.find_spec("trl") is None  # what `make test` installed (verl's actors start in these tests)


def test_another_verl_or_device_is_refused_before_anything_starts(tmp_path, monkeypatch):
    import importlib.metadata

    from s2lpo.config.validate import validate

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda n: "0.10.0" if n == "verl" else real(n))
    cfg = make_cfg(tmp_path, *QUICK, "trainer=verl", "trainer.device=cpu", "trainer.mini_batches=1")
    with pytest.raises(ConfigError, match=r"verl 0\.10\.0 is installed.*pip install verl==0\.9\.1"):
        validate(cfg)
    monkeypatch.setattr(importlib.metadata, "version", real)
    with pytest.raises(ConfigError, match="trainer.device=auto with trainer=verl: use cuda .* or cpu"):
        validate(make_cfg(tmp_path, *QUICK, "trainer=verl", "trainer.device=auto", "trainer.mini_batches=1"))


RENDEZVOUS = """
import os, sys
import torch, torch.distributed as dist
import s2lpo.verl_ext.cpu  # VERL_PLATFORM is set: patches verl's process-group start
from verl.utils.distributed import initialize_global_process_group_ray
try:
    initialize_global_process_group_ray(timeout_second=60)
except Exception as e:
    print(type(e).__name__, e)
    sys.exit(3)
x = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(x)
print("sum", x.item())
"""


def test_ranks_meet_through_a_file_when_another_process_holds_the_master_port(tmp_path):
    """verl picks MASTER_PORT by binding port 0 and letting it go; two array tasks on one node lost a run to
    EADDRINUSE when the other task's Ray took that port first (CI, this stop). On the CPU platform a worker
    group's ranks meet through a file of the start instead: with the port held by another listener, two ranks
    start and all-reduce; without the file (verl's own TCP store) rank 0 fails on the held port."""
    import os
    import socket

    from s2lpo.verl_ext.cpu import DIST_DIR_ENV, cpu_env

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = str(held.getsockname()[1])
    try:
        def start(rank: int, world: int, with_file: bool) -> subprocess.Popen:
            env = {**os.environ, **cpu_env(tmp_path / "dist"), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                   "RANK": str(rank), "WORLD_SIZE": str(world)}
            if not with_file:
                env.pop(DIST_DIR_ENV)
            return subprocess.Popen([sys.executable, "-c", RENDEZVOUS], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)

        procs = [start(r, 2, True) for r in (0, 1)]
        outs = [p.communicate(timeout=180)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert all(o.strip().endswith("sum 3.0") for o in outs), outs
        assert (tmp_path / "dist").is_dir()
        tcp = start(0, 1, False)
        out = tcp.communicate(timeout=180)[0]
        assert tcp.returncode == 3 and "EADDRINUSE" in out, out
    finally:
        held.close()


def test_runs_side_by_side_write_the_toy_files_once(tmp_path, tiny_family):
    """A sweep's array tasks share the cache: four runs filling verl's view of the toy family at the same
    moment all get the same complete files (parquet written to a shared temporary name and the view's links
    raced before the lock)."""
    import threading

    from s2lpo.verl_ext.toy import with_toy_files

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "family").symlink_to(tiny_family.root.parent)
    cfg = make_cfg(tmp_path, *QUICK, "trainer=verl", f"paths.cache_dir={cache}")
    start, outs, errors = threading.Barrier(4), [], []

    def fill():
        start.wait()
        try:
            outs.append(with_toy_files(cfg, log=lambda *_: None))
        except Exception as e:  # noqa: BLE001 - the test reports what any of them raised
            errors.append(repr(e))

    threads = [threading.Thread(target=fill) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(outs) == 4
    assert len({(o.learner.path, o.explorer.path, o.data.train_file) for o in outs}) == 1
    assert pq.read_table(outs[0].data.train_file).num_rows == len(tiny_family.splits().rl)
    assert not list((cache / "verl_toy").rglob("*.tmp"))


def test_a_half_built_verl_view_is_built_again(tmp_path, tiny_family):
    """A view whose build was killed after the links and before the tokenizer (the old layout) is redone; a
    finished one is left as it is."""
    from transformers import AutoTokenizer

    half = tmp_path / "l"
    half.mkdir()
    (half / "config.json").symlink_to(tiny_family.model_dir("l") / "config.json")
    view = verl_view(tiny_family.model_dir("l"), half)
    tok = AutoTokenizer.from_pretrained(view)
    assert "<|im_end|>" in tok.get_vocab() and tok.chat_template == "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert (view / "model.safetensors").resolve() == (tiny_family.model_dir("l") / "model.safetensors").resolve()
    assert [p.name for p in tmp_path.iterdir()] == ["l"]  # no temporary folder left
    stamp = (view / "tokenizer_config.json").stat().st_mtime_ns
    assert verl_view(tiny_family.model_dir("l"), half) == view
    assert (view / "tokenizer_config.json").stat().st_mtime_ns == stamp
