"""A tiny Hugging Face model behind verl's generation-server interface, for the verl extension on CPU.

verl's agent loops call ``server_manager.generate(request_id=..., prompt_ids=..., sampling_params=...)`` and
get a ``TokenOutput``. On a GPU machine a vLLM replica fleet answers; where vLLM cannot run (CPU, CI) this
Ray actor answers instead with the same fields vLLM fills (token ids, log-probs when asked, a finish
reason, and vLLM's ``extra_fields`` keys), so verl's real ``AgentLoopManager``/``AgentLoopWorker``/reward
actors and s2lpo's manager and agent loops run unchanged around it. Sampling is seeded per request
(``seed`` + a counter) so tests are reproducible.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ray
import torch
from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput


def state_digest(model: torch.nn.Module) -> str:
    """A digest of a model's weights (fp32 bytes, by name): the same weights give the same digest."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


RECORD_ENV = "S2LPO_STANDIN_RECORD"  # a directory: the server appends the digest of every weight update


class HFGenerationServer:
    """One HF model answering verl's generation-server calls (``generate`` and the control calls a replica
    makes: sleep/wake-up, cache and abort calls are no-ops here). ``load_weights`` takes the actor's weights
    after each step (``s2lpo.verl_ext.standin_rollout``), so learner rows come from the updated policy."""

    def __init__(self, model_path: str, max_tokens: int, seed: int = 0, prompt_length: int | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(model_path)
        self.eos, self.pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.max_tokens = max_tokens
        self.prompt_length = prompt_length
        self.seed = seed
        self.calls = 0
        self.global_steps = 0
        self.requests: list[tuple[int, float]] = []  # (prompt length, temperature) of every request

    def set_global_steps(self, step: int) -> None:
        self.global_steps = step

    def history(self) -> list[tuple[int, float]]:
        return list(self.requests)

    def load_weights(self, named: dict[str, torch.Tensor], global_steps: int | None = None) -> None:
        """The actor's full weights (HF names). Tied weights may be absent; any other mismatch is an error."""
        missing, unexpected = self.model.load_state_dict({k: v.float() for k, v in named.items()}, strict=False)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or []) | {"lm_head.weight"}
        if unexpected or set(missing) - tied:
            raise ValueError(f"stand-in server: weights do not fit the model (missing {sorted(set(missing) - tied)}, "
                             f"unexpected {sorted(unexpected)})")
        if global_steps is not None:
            self.global_steps = int(global_steps)
        record = os.environ.get(RECORD_ENV)
        if record:  # which weights the server holds after each update (tests)
            os.makedirs(record, exist_ok=True)
            with open(os.path.join(record, "weights.jsonl"), "a") as f:
                f.write(json.dumps({"global_steps": self.global_steps, "digest": self.state_digest()}) + "\n")

    def state_digest(self) -> str:
        return state_digest(self.model)

    def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str | None = None,
                 **kwargs) -> TokenOutput:
        """Sample one completion. A ``seed`` in ``sampling_params`` (vLLM's per-request seed) makes it a pure
        function of the request; otherwise the server's seed and a call counter."""
        from s2lpo.rollout.sampler import SamplingParams, sample

        self.calls += 1
        t = float(sampling_params.get("temperature", 1.0))
        self.requests.append((len(prompt_ids), t))
        budget = self.max_tokens
        if self.prompt_length is not None:  # vLLM's default cap: the room left in prompt + response length
            budget = min(budget, self.prompt_length + self.max_tokens - len(prompt_ids))
        params = SamplingParams(max(t, 1e-5), float(sampling_params.get("top_p", 1.0)),
                                max(int(sampling_params.get("top_k", -1)), 0),
                                max(1, int(sampling_params.get("max_tokens", budget))))
        seed = sampling_params.get("seed")
        seed = int(seed) if seed is not None else self.seed * 1_000_003 + self.calls
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            s = sample(self.model, [list(prompt_ids)], params, self.eos, self.pad, gen)[0]
        return TokenOutput(token_ids=list(s.tokens), log_probs=list(s.logprobs) if sampling_params.get("logprobs")
                           else None, stop_reason="completed", num_preempted=0,
                           extra_fields={"global_steps": self.global_steps, "num_cached_tokens": 0})

    # the control calls verl's replicas and checkpoint manager make (vLLM frees GPU memory here)
    def wake_up(self, tags=None) -> None:
        return None

    def sleep(self) -> None:
        return None

    def clear_kv_cache(self) -> None:
        return None

    def release_kv_cache(self) -> None:
        return None

    def resume_kv_cache(self) -> None:
        return None

    def wait_for_requests_to_drain(self) -> None:
        return None

    def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    def resume_generation(self) -> None:
        return None

    def start_profile(self, **kwargs) -> None:
        return None

    def stop_profile(self) -> None:
        return None


class StandInClient(LLMServerClient):
    """verl's ``LLMServerClient`` interface over one ``HFGenerationServer`` actor (no load balancer)."""

    def __init__(self, config, server: ray.actor.ActorHandle):
        super().__init__(config, load_balancer_handle=None)
        self.server = server

    async def generate(self, request_id, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs):
        return await self.server.generate.remote(list(prompt_ids), dict(sampling_params))


def start_server(model_path: str, max_tokens: int, seed: int = 0) -> ray.actor.ActorHandle:
    return ray.remote(num_cpus=0)(HFGenerationServer).remote(model_path, max_tokens, seed)
