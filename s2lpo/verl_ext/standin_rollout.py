"""The stand-in rollout ``s2lpo_hf``: verl's rollout replica and worker-side adapter around an
``HFGenerationServer``, in vLLM's place where vLLM cannot run (CPU; registered by ``s2lpo.verl_ext.cpu``).

verl's ``LLMServerManager`` makes one replica per ``tp*dp*pp`` ranks of the actor worker group (``init_hybrid``)
and ``launch_servers`` starts the replica's server: here one ``HFGenerationServer`` Ray actor on the node of
the replica's first worker, named per replica (``s2lpo_hf_server_<replica>_0``, as vLLM names its own). In each
actor worker verl builds the rollout class (``StandInRollout``) and, after every update, the checkpoint
manager (backend ``naive``) calls its ``update_weights`` with the actor's full weights: they are gathered on
every rank (FSDP's all-gather is a collective) and the replica's first rank loads them into the server.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica

from s2lpo.verl_ext.standin_server import HFGenerationServer


def server_name(replica_rank: int, node_rank: int = 0) -> str:
    return f"s2lpo_hf_server_{replica_rank}_{node_rank}"


def _rollout_world_size(config) -> int:
    return int(config.tensor_model_parallel_size) * int(config.data_parallel_size) * int(
        config.pipeline_model_parallel_size)


def _model_path(model_config) -> str:
    return str(getattr(model_config, "local_path", None) or model_config.path)


class StandInReplica(RolloutReplica):
    async def launch_servers(self):
        if self.world_size != 1:
            raise ValueError(f"the stand-in rollout serves one rank per replica; set "
                             f"actor_rollout_ref.rollout.tensor_model_parallel_size=1 (world size {self.world_size})")
        node = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
        name = server_name(self.replica_rank)
        server = ray.remote(HFGenerationServer).options(
            name=name, num_cpus=0, max_concurrency=1,
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        ).remote(_model_path(self.model_config), int(self.config.response_length), int(self.config.seed),
                 int(self.config.prompt_length))
        await server.set_global_steps.remote(0)  # waits until the model is loaded
        self.servers = [server]
        self._server_handle = server
        self._server_address = name


class StandInRollout(BaseRollout):
    """The worker-side adapter: no device memory to free or resume; weights go to the replica's server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank, size = int(os.environ.get("RANK", 0)), _rollout_world_size(self.config)
        self.replica_rank = rank // size if replica_rank == -1 else replica_rank
        self.has_server = rank % size == 0
        self._server = None

    @property
    def server(self):
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]], wire_format: str = "named_tensors",
                             global_steps: int | None = None, **kwargs):
        if wire_format != "named_tensors":
            raise ValueError(f"the stand-in rollout takes full named tensors, not {wire_format!r}")
        named = {}
        for name, t in weights:  # every rank iterates: the full tensors are gathered collectively
            full = t.full_tensor() if hasattr(t, "full_tensor") else t
            if self.has_server:
                named[name] = full.detach().to("cpu", copy=True)
        if self.has_server:
            await self.server.load_weights.remote(named, global_steps)
