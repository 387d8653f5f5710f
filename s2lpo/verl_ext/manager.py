"""S2L-PO inside verl's agent-loop machinery, without a fork.

``S2LPOAgentLoopManager`` (enabled with
``actor_rollout_ref.rollout.agent.agent_loop_manager_class=s2lpo.verl_ext.manager.S2LPOAgentLoopManager``)
reads the step from ``meta_info["global_steps"]`` and routes the rows of every group
(``s2lpo.verl_ext.routing``): the first ``n_explorer`` to the ``s2lpo_explorer`` loop (cached explorer
samples), the next ``n_guided`` to ``s2lpo_guided`` (G²RPO-A), the rest to the learner's loop. Validation
batches are generated as verl does. verl recomputes the learner's old log-probs for every row as usual.

After generation (rewards are streamed in by verl's reward loop) it tags the rows with their source, updates
the G²RPO-A guidance length from the step's accuracy, and appends the step's s2lpo metrics (per source,
outcome, compute; ``eval/<source>/pass@<k>`` for validation batches) to a side journal in the run
directory, which the runner merges into the run's journal with verl's own metrics. The guidance controller
and the cumulative compute counters are saved per step, so a resumed run continues from verl's checkpoint
step with the state it had then.

Settings come from the ``s2lpo`` block of verl's config, written by ``s2lpo.verl_ext.config.to_verl``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from verl.experimental.agent_loop import AgentLoopManager
from verl.utils.ray_utils import auto_await

from s2lpo.algo.guidance import make_guidance
from s2lpo.algo.schedule import alpha
from s2lpo.algo.seeds import step_seed
from s2lpo.tracking.journal import Journal
from s2lpo.verl_ext.metrics import eval_metrics, step_metrics
from s2lpo.verl_ext.routing import LEARNER_AGENT, route

STATE_FILE = "s2lpo_state.json"
ROW_COLUMNS = ("s2lpo_slot", "s2lpo_step", "s2lpo_guidance_length", "s2lpo_temperature", "s2lpo_seed")


class S2LPOAgentLoopManager(AgentLoopManager):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        s2 = self.config.get("s2lpo") or {}
        self.s2 = s2
        self.dir = Path(s2["run_dir"]) / "verl" if s2.get("run_dir") else None
        self.journal = Journal(self.dir / "s2lpo") if self.dir else None
        gd = s2.get("guidance") or {}
        self.guidance = (make_guidance(gd["kind"], gd.get("initial_length"), int(gd["max_length"]), int(gd["period"]),
                                       int(s2["total_steps"])) if gd.get("enabled") else None)
        self.cum: dict[str, float] = {}
        self._states: dict[str, dict] | None = None  # step -> state, read from the run dir at the first step

    # -- state saved per step (a resumed run continues from verl's checkpoint step) --
    def _restore(self, step: int) -> None:
        path = self.dir / STATE_FILE if self.dir else None
        self._states = json.loads(path.read_text()) if path and path.exists() else {}
        state = self._states.get(str(step - 1))
        if state:
            self.cum = dict(state["cum"])
            if self.guidance is not None and state.get("guidance"):
                self.guidance.load_state_dict(state["guidance"])

    def _save(self, step: int) -> None:
        if self.dir is None:
            return
        self._states[str(step)] = {"cum": dict(self.cum),
                                   "guidance": self.guidance.state_dict() if self.guidance else None}
        tmp = self.dir / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(self._states))
        tmp.replace(self.dir / STATE_FILE)

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        if self.journal is not None:
            self.journal.log(step, metrics)

    def _seed_rows(self, nt: dict, step: int, salt: str | None, agents: list[str], temperature: float) -> None:
        """Per-row agent loop, sampling temperature (-1: verl's) and seed (-1: none; else a pure function of
        (run seed, step, row), as the local trainer seeds its draws)."""
        n = len(agents)
        nt["agent_name"] = np.array(agents, dtype=object)
        nt["s2lpo_temperature"] = np.full(n, temperature, dtype=np.float64)
        seeds = [step_seed(int(self.s2.get("seed", 0)), step, f"{salt}{i}") if salt else -1 for i in range(n)]
        nt["s2lpo_seed"] = np.array(seeds, dtype=np.int64)

    def _record(self, step: int, out, uids, sources, validate: bool = False) -> None:
        """With ``s2lpo.record_rollouts``: every row of the step (prompt and response ids, source, reward) to
        ``<run dir>/verl/s2lpo/rollouts.jsonl`` (tests and debugging; a resumed step is appended again)."""
        if not self.s2.get("record_rollouts") or self.dir is None:
            return
        p = out.batch["prompts"].shape[1]
        att, scores = out.batch["attention_mask"], out.batch["rm_scores"].sum(-1).tolist()
        lps = out.batch["rollout_log_probs"] if "rollout_log_probs" in out.batch.keys() else None
        with open(self.dir / "s2lpo" / "rollouts.jsonl", "a") as f:
            for i in range(len(out)):
                n = int(att[i, p:].sum())
                row = {"step": step, "validate": validate, "row": i, "uid": str(uids[i]), "source": str(sources[i]),
                       "prompt_ids": out.batch["prompts"][i][att[i, :p].bool()].tolist(),
                       "response_ids": out.batch["responses"][i, :n].tolist(),
                       "loss_tokens": int(out.batch["response_mask"][i, :n].sum()), "score": float(scores[i])}
                if lps is not None:  # the sampler's own log-probs (rollout.calculate_log_probs: truncated IS)
                    row["log_probs"] = lps[i, :n].tolist()
                f.write(json.dumps(row) + "\n")

    @staticmethod
    def _drop_columns(out) -> None:
        for key in ROW_COLUMNS:
            out.non_tensor_batch.pop(key, None)

    @auto_await  # as verl's: callable from the trainer's synchronous loop and awaitable
    async def generate_sequences(self, prompts):
        s2 = self.s2
        if not s2:
            return await super().generate_sequences(prompts)
        validate = bool(prompts.meta_info.get("validate", False))
        step = int(prompts.meta_info.get("global_steps", -1))
        uids = list(prompts.non_tensor_batch["uid"])
        nt = prompts.non_tensor_batch
        row_seeds = bool(s2.get("row_seeds"))
        if validate:
            sources = list(nt["data_source"])
            if row_seeds:
                self._seed_rows(nt, step, "val", [LEARNER_AGENT] * len(prompts), -1.0)
            out = await super().generate_sequences(prompts)
            self._drop_columns(out)
            self._record(step, out, uids, sources, validate=True)
            n = int(self.config.actor_rollout_ref.rollout.val_kwargs.n)
            self._log(step, eval_metrics(out, uids, sources, n))
            return out
        if self._states is None:
            self._restore(step)
        gd = s2.get("guidance") or {}
        glen = self.guidance.length if self.guidance is not None else 0
        default_agent = self.config.actor_rollout_ref.rollout.agent.get("default_agent_loop", "single_turn_agent")
        sample_only = bool(s2.get("learner_agent"))
        r = route(step, len(prompts), int(s2["group_size"]), int(s2["t_mix"]), str(s2["schedule"]), default_agent,
                  n_guided=int(gd.get("k", 0)) if self.guidance is not None else 0, guidance_length=glen,
                  learner_agent=LEARNER_AGENT if sample_only or row_seeds else None)
        nt["s2lpo_slot"] = np.array(r.slot, dtype=np.int64)
        nt["s2lpo_step"] = np.full(len(prompts), step, dtype=np.int64)
        nt["s2lpo_guidance_length"] = np.full(len(prompts), glen, dtype=np.int64)
        self._seed_rows(nt, step, "row" if row_seeds else None, r.agent,
                        float(s2["sample_temperature"]) if sample_only else -1.0)
        out = await super().generate_sequences(prompts)
        # verl forwards the input columns only without streamed rewards: set the source on the output itself
        out.non_tensor_batch["s2lpo_source"] = np.array(r.source, dtype=object)
        self._drop_columns(out)
        self._record(step, out, uids, r.source)
        metrics = step_metrics(out, uids, r.source, r.plan, glen, int(s2.get("learner_params", 0)),
                               int(s2.get("explorer_params", 0)), self.cum)
        metrics.update({"train/alpha": float(alpha(step, int(s2["t_mix"]), str(s2["schedule"]))),
                        "compute/explorer/cache_misses": 0.0})
        if self.guidance is not None:
            metrics["train/guidance_length"] = glen
            self.guidance.update(step, metrics["train/accuracy"])
        self._log(step, metrics)
        self._save(step)
        return out
