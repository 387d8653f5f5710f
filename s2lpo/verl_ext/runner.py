"""The verl backend's run: our config, run identity, manifest and tracking around verl's own trainer.

``train(cfg)`` validates, gives the run the same id and directory the local backend would (the id hashes
the semantic config, ``trainer.verl`` included), maps the config onto verl's (``to_verl``), starts Ray (or
joins the cluster of the SLURM allocation through ``RAY_ADDRESS``, without ``num_cpus``), and runs verl's
``TaskRunner`` *pinned to this node*, so verl's file logger writes where the follower reads it. Metrics flow
verl's file logger + the manager's side journal -> ``Follower`` -> the run's journal -> MLflow / W&B, under
the local backend's names. verl's checkpoints live in the run directory (``resume_mode=auto`` resumes this
run's, never another's). Needs GPUs (verl's FSDP workers and vLLM); the pieces are tested on CPU.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from s2lpo.config.paths import abspath
from s2lpo.config.validate import ConfigError, validate
from s2lpo.models.family import weights_digest
from s2lpo.models.resolve import model_params
from s2lpo.tracking.journal import read_history
from s2lpo.tracking.lifecycle import RunLifecycle, RunResult
from s2lpo.verl_ext.config import on_cpu, run_container, to_verl
from s2lpo.verl_ext.cpu import cpu_env
from s2lpo.verl_ext.explorer_fill import fill_mapped
from s2lpo.verl_ext.follow import Follower
from s2lpo.verl_ext.resume import needs_initial_validation, settle_resume
from s2lpo.verl_ext.toy import with_toy_files


def ray_init_kwargs(v: DictConfig, env: dict[str, str], address: str | None) -> dict:
    """verl's Ray settings plus its default runtime env and ours (env vars reach every actor). Joining a
    running cluster takes no ``num_cpus`` (Ray refuses it). On the CPU platform a local Ray gets one fake GPU
    per rank, which verl's placement bundles reserve."""
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    init = OmegaConf.to_container(v.ray_kwargs.get("ray_init", {}), resolve=True) or {}
    runtime_env = OmegaConf.to_container(OmegaConf.merge(get_ppo_ray_runtime_env(v), init.pop("runtime_env", {}) or {},
                                                         {"env_vars": env}), resolve=True)
    runtime_env = {k: val for k, val in runtime_env.items() if val is not None}
    init = {k: val for k, val in init.items() if val is not None}
    if address:
        init.pop("num_cpus", None)
        init["address"] = address
    elif str(v.trainer.device) == "cpu":  # logical resources: verl's bundles take 3 CPUs and a GPU per rank
        world = int(v.trainer.n_gpus_per_node) * int(v.trainer.nnodes)
        init["num_gpus"] = world
        init["num_cpus"] = max(int(init.get("num_cpus") or 0), 8 * world + 4)
        # a small machine: no dashboard, and no idle workers prestarted for those logical CPUs (each would
        # import Ray on the real cores while verl's own actors start)
        init.setdefault("include_dashboard", False)
        init["_system_config"] = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}
    return {**init, "runtime_env": runtime_env}


def check_with_verl(v: DictConfig) -> None:
    """verl's own validation of the mapped config (batch sizes, parallelism, ...), as one ConfigError."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    try:
        validate_config(config=v, use_reference_policy=need_reference_policy(v), use_critic=need_critic(v))
    except Exception as e:  # noqa: BLE001 - verl raises assertions and Hydra instantiation errors alike
        raise ConfigError([f"verl rejects the mapped config: {str(e).strip().splitlines()[0]} (set the value "
                           "under trainer.verl.*, e.g. trainer.verl.actor_rollout_ref.actor.ppo_micro_batch_size_"
                           "per_gpu=4)"]) from None


# Ray waits a fixed 30 s for a new node's raylet to register with its GCS (ray/_private/node.py); on a loaded
# machine it can miss that (2 of the last 7 CI runs here: the second start of a killed run, beside another test)
RAY_STARTS = 3


def start_ray(kwargs: dict, log=print) -> None:
    """``ray.init(**kwargs)``; where the node did not come up in Ray's fixed 30 s, the processes that start spawned
    (Ray's) are killed and Ray is started again, up to ``RAY_STARTS`` starts; any other error is raised at once."""
    import psutil
    import ray

    me = psutil.Process()
    for attempt in range(1, RAY_STARTS + 1):
        before = {p.pid for p in me.children(recursive=True)}
        try:
            ray.init(**kwargs)
            return
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == RAY_STARTS:
                raise
            log(f"warning: Ray's node did not register within Ray's 30 s (start {attempt} of {RAY_STARTS}; a loaded "
                "machine?): starting it again")
            for p in me.children(recursive=True):  # Ray's own (GCS, raylet, their helpers), not a tracker's
                with contextlib.suppress(psutil.Error):
                    if p.pid not in before and "ray" in " ".join(p.cmdline()):
                        p.kill()


def run_verl(v: DictConfig, env: dict[str, str], log=print) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.main_ppo_v0 import TaskRunner

    kwargs = ray_init_kwargs(v, env, os.environ.get("RAY_ADDRESS"))
    log(f"starting Ray ({kwargs.get('address', 'local')}) and verl's trainer")
    start_ray(kwargs, log)
    try:
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        run_ppo(v, task_runner_class=TaskRunner.options(scheduling_strategy=here))
    finally:
        ray.shutdown()


def train(cfg: DictConfig, progress: Callable[[int, int, dict], None] | None = None, log=print,
          runner: Callable[..., None] = run_verl) -> RunResult:
    """One run on verl (progress is verl's own console bar; ``runner`` runs verl's trainer)."""
    validate(cfg)  # before Ray starts or any model is read
    run = RunLifecycle(cfg.paths.runs_dir, run_container(cfg), log)
    if run.done is not None:
        return run.done
    cfg = with_toy_files(cfg, log=log)  # the toy family as verl reads it (after the run id: not part of it)
    explores = cfg.algorithm.t_mix > 0
    digest = weights_digest(abspath(cfg.explorer.path)) if explores else None
    v = to_verl(cfg, run.run_dir, run.run_id, digest, model_params(cfg, "learner"),
                model_params(cfg, "explorer") if explores else 0)
    check_with_verl(v)
    if explores:  # every explorer row verl will replay, generated once (a no-op when cached)
        fill_mapped(cfg, v, log=log)  # this run's mapping: the explorer's weights are hashed once
    with run.running() as tracker:
        follower = Follower(run.run_dir, tracker, float(cfg.logger.delivery.interval_s))
        env = {"VERL_FILE_LOGGER_PATH": str(follower.verl_file(run.starts)), "TOKENIZERS_PARALLELISM": "false"}
        dist_dir = run.run_dir / "verl" / "dist" / f"start-{run.starts}-{uuid.uuid4().hex[:8]}"
        if on_cpu(cfg):
            env.update(cpu_env(dist_dir))
            if cfg.trainer.get("record_rollouts"):
                from s2lpo.verl_ext.standin_server import RECORD_ENV  # imports Ray and verl's server classes

                env[RECORD_ENV] = str(run.run_dir / "verl" / "standin")
        follower.start()  # merges what an earlier start left unmerged, before the resume point is chosen
        try:
            hist = read_history(run.run_dir)
            settle_resume(run.run_dir, hist, log)
            OmegaConf.update(v, "trainer.val_before_train", needs_initial_validation(hist), force_add=True)
            runner(v, env, log)
        finally:
            follower.stop()  # every line verl wrote is in the journal before the run's status is recorded
            shutil.rmtree(dist_dir, ignore_errors=True)  # the ranks' rendezvous files (CPU), this start's only
    return run.result
