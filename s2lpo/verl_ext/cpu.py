"""verl 0.9.1 on CPU, through verl's own extension points (no fork): ``trainer=verl trainer.device=cpu``.

verl targets accelerators; where it has none it falls back to ``nvidia``/``cuda``/``nccl``. This module is
imported in *every* process of a CPU run (the driver, the TaskRunner and each Ray worker) through verl's
``VERL_USE_EXTERNAL_MODULES`` (read in ``verl/__init__.py``), which the runner sets in Ray's runtime env for
CPU runs only; a GPU run never imports it. On import it

1. registers the platform ``s2lpo_cpu`` with ``PlatformRegistry`` (selected by ``VERL_PLATFORM``): device
   ``cpu``, collective backend ``gloo``, the Ray resource still ``GPU`` (fake GPUs: ``ray.init(num_gpus=N)``
   gives verl's placement bundles something to reserve), and the ``torch.cuda`` calls verl makes (memory
   stats, streams, RNG state for checkpoints) answered for the CPU;
2. makes ``verl.utils.distributed.initialize_global_process_group_ray`` pass plain ``gloo``: verl builds
   ``cpu:gloo,<device>:<backend>`` = ``cpu:gloo,cpu:gloo``, which torch rejects ("Duplicate device type cpu")
   (verl/utils/distributed.py:89; ``verl.workers.engine_workers`` imports it by name, after this patch); and
   rendezvous through a file of this start (``S2LPO_DIST_DIR``) instead of a TCP store on ``MASTER_PORT``: verl
   picks that port by binding port 0 and closing the socket (single_controller/ray/base.py:91), so another
   process on the node (two array tasks of a sweep sharing it: their Ray workers) can take it before rank 0
   listens on it, and the run dies with EADDRINUSE;
3. gives the reference policy's FSDP2 CPU-offload policy unpinned memory (pinning needs an accelerator);
4. registers the stand-in rollout ``s2lpo_hf`` (``s2lpo.verl_ext.standin_rollout``) in verl's
   ``_ROLLOUT_REGISTRY`` and ``RolloutReplicaRegistry``, in vLLM's place.

The FSDP engine registers for ``cuda``/``npu`` only (verl/workers/engine/fsdp/transformer_impl.py:1143); the
runner sets ``VERL_ENGINE_DEVICE=cuda``/``VERL_ENGINE_VENDOR=nvidia`` (read by verl/workers/engine/base.py:405)
so that engine is picked, while every tensor it makes lands on ``cpu`` (the platform's device name).
"""

from __future__ import annotations

import contextlib
import os
import types
from typing import Any

import torch

PLATFORM = "s2lpo_cpu"
ROLLOUT = "s2lpo_hf"


DIST_DIR_ENV = "S2LPO_DIST_DIR"


def cpu_env(dist_dir: str | os.PathLike, plugin: str = __name__) -> dict[str, str]:
    """The environment every process of a CPU run needs (the runner puts it in Ray's runtime env);
    ``dist_dir`` a folder of this start alone, where each worker group's ranks meet (one file per group)."""
    return {"VERL_PLATFORM": PLATFORM, "VERL_USE_EXTERNAL_MODULES": plugin, "VERL_ENGINE_DEVICE": "cuda",
            "VERL_ENGINE_VENDOR": "nvidia", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
            DIST_DIR_ENV: str(dist_dir)}


class _Stream:
    def synchronize(self) -> None:
        return None

    def wait_stream(self, other) -> None:
        return None

    def wait_event(self, event) -> None:
        return None

    def record_event(self, event=None):
        return _Event()


class _Event:
    def __init__(self, *args, **kwargs):
        pass

    def record(self, stream=None) -> None:
        return None

    def synchronize(self) -> None:
        return None

    def wait(self, stream=None) -> None:
        return None

    def query(self) -> bool:
        return True

    def elapsed_time(self, other) -> float:
        return 0.0


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _device_module() -> types.ModuleType:
    """``torch.cuda``'s surface as verl calls it, answered for the CPU (memory = this process's RSS)."""
    m = types.ModuleType("s2lpo_cpu_device")
    noop = lambda *a, **k: None  # noqa: E731
    m.is_available = lambda: True
    m.device_count = lambda: 1
    m.current_device = lambda: "cpu"
    m.set_device = noop
    m.synchronize = noop
    m.empty_cache = noop
    m.ipc_collect = noop
    m.set_per_process_memory_fraction = noop
    m.get_device_name = lambda *a: "cpu"
    m.manual_seed = torch.manual_seed
    m.manual_seed_all = torch.manual_seed
    m.get_rng_state = lambda *a, **k: torch.get_rng_state()
    m.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    m.memory_allocated = m.memory_reserved = m.max_memory_allocated = m.max_memory_reserved = lambda *a: _rss()
    m.reset_peak_memory_stats = noop

    def mem_get_info(*a):
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)

    m.mem_get_info = mem_get_info
    m.Stream, m.Event = (lambda *a, **k: _Stream()), _Event
    m.current_stream = lambda *a: _Stream()
    m.stream = lambda s=None: contextlib.nullcontext()
    m.memory = types.SimpleNamespace(_set_allocator_settings=noop)
    return m


def _register() -> None:
    from contextlib import contextmanager

    from verl.plugin.platform.platform_base import PlatformBase
    from verl.plugin.platform.platform_manager import PlatformRegistry

    device = _device_module()

    @PlatformRegistry.register(platform=PLATFORM)
    class PlatformS2LPOCPU(PlatformBase):
        device_name = "cpu"
        vendor_name = "cpu"
        device_module = device

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check=False) -> bool:
            return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM  # never auto-detected

        def current_device(self) -> str:  # verl uses it as a device: tensor.to(get_device_id())
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            return None

        def synchronize(self, device_index=None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0):
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        @contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return "GPU"

        def ray_noset_envvars(self) -> list[str]:
            return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self) -> Any:
            return None


def _patch_process_group() -> None:
    import verl.utils.distributed as dist

    original = dist.initialize_global_process_group_ray
    if getattr(original, "_s2lpo", False):
        return

    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        folder, port = os.environ.get(DIST_DIR_ENV), os.environ.get("MASTER_PORT")
        if folder and port and not os.environ.get("DIST_INIT_METHOD"):  # read by verl's original
            # every rank of a worker group shares its MASTER_PORT (verl sets it per group), no two live groups
            # of a start do: one file per group, made by whichever rank comes first
            os.makedirs(folder, exist_ok=True)
            os.environ["DIST_INIT_METHOD"] = f"file://{os.path.join(folder, 'group-' + port)}"
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_global_process_group_ray._s2lpo = True
    dist.initialize_global_process_group_ray = initialize_global_process_group_ray


def _patch_offload_policy() -> None:
    """verl wraps every forward-only model (the reference policy) in FSDP2's ``CPUOffloadPolicy(pin_memory=True)``
    (verl/workers/engine/fsdp/transformer_impl.py:459); pinning needs an accelerator: pin nothing."""
    import verl.workers.engine.fsdp.transformer_impl as impl

    base = impl.CPUOffloadPolicy
    if getattr(base, "_s2lpo", False):
        return

    class UnpinnedCPUOffloadPolicy(base):
        _s2lpo = True

        def __init__(self, pin_memory: bool = True):
            super().__init__(pin_memory=False)

    impl.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


def _register_rollout() -> None:
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    base._ROLLOUT_REGISTRY[(ROLLOUT, "async")] = "s2lpo.verl_ext.standin_rollout.StandInRollout"

    def load():
        from s2lpo.verl_ext.standin_rollout import StandInReplica

        return StandInReplica

    RolloutReplicaRegistry.register(ROLLOUT, load)


def activate() -> None:
    """Register the platform, the process-group patch and the stand-in rollout (idempotent)."""
    _register()
    _patch_process_group()
    _patch_offload_policy()
    _register_rollout()


if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM:
    activate()
