"""The single-process S2L-PO / GRPO trainer (CPU or one GPU): one readable loop.

Per step: rollout plan from the schedule -> explorer rows from the cache, guided and learner rows
from the learner -> rewards -> group-relative advantages over the combined group (verl) -> the
learner's log-probs for every row (old log-probs are the learner's too) -> verl's policy loss
(+ optional KL) -> optimizer step -> metrics to the journal (replicas: MLflow, W&B); evaluation and atomic
checkpoints every N steps. Every random draw is seeded by (seed, step), so a run killed anywhere
and started again reproduces the uninterrupted run's metric history.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from s2lpo.algo import grpo
from s2lpo.algo.draw import draw_slots
from s2lpo.algo.guidance import make_guidance
from s2lpo.algo.plan import EXPLORER, GUIDED, LEARNER, plan_group
from s2lpo.algo.schedule import alpha
from s2lpo.eval.runner import evaluate, power_of_two_ks
from s2lpo.models.family import weights_digest
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.rewards import get_reward_fn, token_scorer
from s2lpo.rollout.explorer_cache import ExplorerCache, explorer_sampling, prompt_key
from s2lpo.rollout.sampler import SamplingParams, sample
from s2lpo.tracking.journal import read_history
from s2lpo.tracking.sinks import make_tracker
from s2lpo.trainer.batch import Row
from s2lpo.trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from s2lpo.trainer.metrics import source_metrics
from s2lpo.trainer.setup import RunResult, abspath, batch_indices, model_params, open_run, resolve, step_seed
from s2lpo.trainer.update import train_step

PREEMPTING = threading.Event()  # set by the SLURM job's checkpoint hook (s2lpo.sweep.jobs.TrainJob)


def sampling_params(cfg: DictConfig) -> SamplingParams:
    a = cfg.algorithm
    return SamplingParams(a.temperature, a.top_p, a.top_k, cfg.data.max_new_tokens)


def load_model(path: Path, device: torch.device):
    hf_logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)


def explorer_cache_for(cfg: DictConfig, explorer_path: Path) -> ExplorerCache:
    return ExplorerCache(abspath(cfg.paths.explorer_cache_dir), weights_digest(explorer_path), explorer_sampling(cfg)[0])


def train(cfg: DictConfig, progress: Callable[[int, int, dict], None] | None = None, log=print) -> RunResult:
    if cfg.trainer.backend != "local":
        from s2lpo.config.validate import ConfigError

        raise ConfigError([f"trainer.backend={cfg.trainer.backend!r}: this is the local trainer; train through "
                           "s2lpo.trainer.dispatch.train (experiments/train.py does)"])
    res = resolve(cfg, log=log)  # validation first: nothing is loaded before it passes
    a, t = cfg.algorithm, cfg.trainer
    if t.threads:
        torch.set_num_threads(int(t.threads))
    container = OmegaConf.to_container(cfg, resolve=True)
    rid, run_dir, manifest, done = open_run(cfg.paths.runs_dir, container, log)
    if done is not None:
        return done
    manifest.start(container, rid)
    device = res.device
    tok = load_tokenizer(res.tokenizer_path)
    reward_fn = get_reward_fn(cfg.data.reward)
    learner = load_model(res.learner_path, device)
    learner_params = model_params(cfg, "learner", res.family)
    ref = copy.deepcopy(learner).eval().requires_grad_(False) if a.kl_coef > 0 else None
    cache = explorer_cache_for(cfg, res.explorer_path) if res.explorer_path else None
    explorer_params = model_params(cfg, "explorer", res.family) if res.explorer_path is not None else 0
    opt = torch.optim.AdamW(learner.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(t.warmup_steps, 1)))
    aconf = grpo.actor_config(a.group_size, a.clip_ratio, loss_agg_mode=a.loss_agg_mode)
    gd = a.guidance
    guidance = make_guidance(gd.kind, gd.initial_length, gd.max_length, gd.period, t.total_steps) if gd.enabled else None
    sp = sampling_params(cfg)
    train_T = a.temperature if a.temperature_mode == "tempered" else 1.0
    prompt_ids = [tok(p.prompt, add_special_tokens=False)["input_ids"] for p in res.train]
    ref_ids = [tok(p.solution, add_special_tokens=False)["input_ids"] for p in res.train]
    cum: dict[str, float] = {}
    start = 0
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        state = load_checkpoint(ckpt)
        learner.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if guidance is not None:
            guidance.load_state_dict(state["guidance"])
        cum, start = state["cum"], state["step"]
        log(f"resuming {rid} from step {start}")
    tracker = make_tracker(container, run_dir, rid, warn=log, on_open=manifest.record_tracking)
    bench = cfg.data.benchmark
    score = token_scorer(tok, cfg.data.reward)

    def run_eval(step: int, n: int) -> dict[str, float]:
        learner.eval()
        r = evaluate(learner, tok, res.eval, reward_fn, n, SamplingParams(t.eval_temperature, 1.0, 0,
                     cfg.data.max_new_tokens), step_seed(cfg.seed, step, "eval"), t.gen_batch_size)
        return {f"eval/{bench}/pass@{k}": v for k, v in r.curve(power_of_two_ks(n)).items()}

    rollout = Rollout(res, tok, prompt_ids, ref_ids, cache, sp, score, cfg.seed, t.gen_batch_size,
                      explorer_sampling(cfg)[1] if cache is not None else 0)
    status = "failed"
    # a run killed after its last checkpoint but before it was marked finished has nothing left to train:
    # its final metrics are the journal's last values
    final = {k: v[max(v)] for k, v in read_history(run_dir).items()} if start >= t.total_steps else {}
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    try:
        with amp:
            if start == 0:
                tracker.log(0, run_eval(0, t.eval_samples))
            for step in range(start + 1, t.total_steps + 1):
                t0 = time.time()
                glen = guidance.length if guidance is not None else 0
                plan = plan_group(step, a.group_size, a.t_mix, a.schedule, gd.k if gd.enabled else 0, glen)
                idx = batch_indices(len(res.train), cfg.data.prompts_per_step, step, cfg.seed)
                rows, misses = rollout.collect(step, plan, idx, glen, learner)
                t_gen = time.time() - t0
                metrics = train_step(learner, ref, opt, rows, tok.pad_token_id, device, aconf, a, train_T, t)
                sched.step()
                metrics.update(source_metrics(
                    [r.source for r in rows], [r.reward for r in rows], [len(r.response_ids) for r in rows],
                    [len(r.response_ids) - r.n_guidance for r in rows],
                    sum(len(r.prompt_ids) + len(r.response_ids) for r in rows), plan, learner_params,
                    explorer_params, cum))
                acc = metrics["train/accuracy"]
                metrics.update({"train/alpha": float(alpha(step, a.t_mix, a.schedule)),
                                "train/lr": sched.get_last_lr()[0], "compute/explorer/cache_misses": misses})
                if guidance is not None:
                    metrics["train/guidance_length"] = glen
                    guidance.update(step, acc)
                metrics["time/generate_s"] = t_gen
                metrics["time/step_s"] = time.time() - t0
                if step == t.total_steps:
                    metrics.update(run_eval(step, t.final_eval_samples))
                elif step % t.eval_every == 0:
                    metrics.update(run_eval(step, t.eval_samples))
                tracker.log(step, metrics)
                if step % t.checkpoint_every == 0 or step == t.total_steps:
                    save_checkpoint(run_dir, step, {
                        "model": learner.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "guidance": guidance.state_dict() if guidance else None, "cum": cum})
                if progress:
                    progress(step, t.total_steps, metrics)
                final = metrics
        status = "finished"
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or submitit exiting after a preemption signal
        status = "preempted" if PREEMPTING.is_set() else "killed"
        raise
    finally:
        keep = {k: v for k, v in final.items() if k.startswith(("eval/", "compute/"))}
        manifest.update(status=status, final_metrics=keep, ended_at=time.time())
        manifest.update(undelivered=tracker.close(status))
    return RunResult(rid, run_dir, status, keep)


class Rollout:
    """The rollout phase of one step: explorer rows from the cache (generated on a miss), guided and
    learner rows sampled from the learner in one batch, every row scored; groups stay contiguous
    with explorer rows first."""

    def __init__(self, res, tok, prompt_ids, ref_ids, cache: ExplorerCache | None, params: SamplingParams,
                 score: Callable[[list[int], str], float], seed: int, batch_size: int, pool: int = 0):
        self.res, self.tok, self.prompt_ids, self.ref_ids = res, tok, prompt_ids, ref_ids
        self.cache, self.params, self.score, self.seed, self.batch_size = cache, params, score, seed, batch_size
        self.pool = pool  # cached explorer samples per prompt; a group draws its explorer rows from them
        self.explorer = None  # loaded on the first cache miss only

    def collect(self, step: int, plan, idx: list[int], guidance_length: int, learner) -> tuple[list[Row], int]:
        tok, device = self.tok, self.res.device
        rows: list[Row] = []
        misses = 0
        if plan.n_explorer:
            need = [self.prompt_ids[i] for i in idx]
            if self.cache.missing(need, self.pool):
                if self.explorer is None:
                    self.explorer = load_model(self.res.explorer_path, device).eval()
                misses = self.cache.fill(self.explorer, need, [str(self.res.train[i].answer) for i in idx],
                                         self.pool, self.score, tok.eos_token_id, tok.pad_token_id,
                                         step_seed(self.seed, step, "explorer"), self.batch_size)
            for g, i in enumerate(idx):
                for j in draw_slots(self.seed, step, prompt_key(self.prompt_ids[i]), plan.n_explorer, self.pool):
                    s = self.cache.get(self.prompt_ids[i], j)
                    rows.append(Row(g, EXPLORER, self.prompt_ids[i], s.tokens, s.logprobs, 0, s.finish_reason))
        ctx, meta = [], []
        for g, i in enumerate(idx):
            prefix = self.ref_ids[i][:guidance_length]
            for _ in range(plan.n_guided):
                ctx.append(self.prompt_ids[i] + prefix)
                meta.append((g, i, GUIDED, prefix))
            for _ in range(plan.n_learner):
                ctx.append(self.prompt_ids[i])
                meta.append((g, i, LEARNER, []))
        if ctx:
            learner.eval()
            gen = torch.Generator(device=device).manual_seed(step_seed(self.seed, step, "learner"))
            samples = sample(learner, ctx, self.params, tok.eos_token_id, tok.pad_token_id, gen, self.batch_size)
            for (g, i, src, prefix), s in zip(meta, samples):
                rows.append(Row(g, src, self.prompt_ids[i], prefix + s.tokens, [0.0] * len(prefix) + s.logprobs,
                                len(prefix), s.finish_reason))
        rows.sort(key=lambda r: r.group)  # stable: groups stay contiguous, explorer rows first
        for r in rows:
            r.reward = self.score(r.response_ids, str(self.res.train[idx[r.group]].answer))
        return rows, misses

