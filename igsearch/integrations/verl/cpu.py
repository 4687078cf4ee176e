"""verl 0.9.1 on the CPU: opt-in seams that let ``python -m verl.trainer.main_ppo`` train with gloo.

Switched on by ``IGSEARCH_VERL_CPU=1`` in the environment of the launching process. The package's
``verl.plugins`` entry point imports ``igsearch.integrations.verl`` whenever a process imports verl,
and its ``__init__`` calls :func:`install` first when the variable is set. Ray workers inherit the
variable (the launch config also puts it in Ray's ``runtime_env``), so every process of the run, the
driver, the TaskRunner, the FSDP workers, the agent-loop workers and the rollout servers, installs
the same seams before verl resolves its platform. ``python -m igsearch.integrations.verl.cpu_main``
is the same as ``python -m verl.trainer.main_ppo`` with the variable set.

Nothing of verl's training loop is replaced. The seams, one per blocker a CPU run meets:

1. **Platform** (``verl/plugin/platform/platform_manager.py`` falls back to "nvidia" without an
   accelerator): :class:`PlatformCPU` is registered in verl's ``PlatformRegistry`` as ``cpu`` and set
   as the process's platform (``VERL_PLATFORM=cpu`` for the processes verl starts). Device name
   ``cpu``, collective backend ``gloo``, ``torch.device("cpu")`` as the current device (verl passes
   ``get_device_id()`` to ``.to()``, where an int means ``cuda:N``), and a ``torch.cpu``-like device
   module with the memory/RNG calls verl makes (memory figures are the process's RSS).
2. **Process group** (``verl/utils/distributed.py`` builds ``"cpu:gloo,{device}:{backend}"``, which
   torch rejects when the device is ``cpu``): :func:`initialize_global_process_group_ray` initialises
   a gloo-only group; it is bound where verl's workers look the initialiser up.
3. **Engines** (``verl/workers/engine/base.py``: the FSDP engines are registered for cuda and npu):
   verl's own FSDP/FSDP2 engine classes are registered for the ``cpu`` device in ``EngineRegistry``.
4. **Ray** (``ResourcePoolManager`` counts Ray "GPU"s): each FSDP rank takes one logical Ray ``GPU``
   slot; the launch config starts Ray with ``num_gpus`` = ranks (``ray_kwargs.ray_init``). The slot is
   only a scheduling token: torch never sees a GPU.
5. **Reference model** (``FSDPEngine._build_fsdp_module`` gives forward-only models
   ``CPUOffloadPolicy(pin_memory=True)``, and pinning needs an accelerator): on this platform the
   policy is built with ``pin_memory=False``; parameters stay where they are, in host memory.
6. **Rollout** (verl reaches only the vllm, sglang and trtllm replicas): ``rollout.name=igsearch_hf``
   selects :class:`HFRolloutReplica` (``RolloutReplicaRegistry``) and :class:`HFServerAdapter`
   (verl's ``BaseRollout`` registry). Each replica runs one Ray actor, :class:`HFRolloutServer`,
   holding igsearch's ``HFEngine`` (transformers ``generate``) on the policy in fp32; it answers
   verl's token-in/token-out ``generate``. After each actor update verl's naive checkpoint engine
   calls ``update_weights`` on the adapter in every FSDP rank with the full (gathered) HF-named
   tensors, and the adapter loads them into its replica's engine (``load_state_dict``, strict).
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import types
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Generator, Optional

ENV = "IGSEARCH_VERL_CPU"
#: a folder: every rollout server saves each set of synced weights there (safetensors), for checks
SYNC_DIR_ENV = "IGSEARCH_VERL_CPU_SYNC_DIR"
ROLLOUT_NAME = "igsearch_hf"
_installed = False


def enabled() -> bool:
    """True when ``IGSEARCH_VERL_CPU`` asks for the CPU seams."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- 1. platform

def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - non-Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _mem_get_info(device=None) -> tuple[int, int]:
    """(free, total) host memory, as ``torch.cuda.mem_get_info`` reports device memory."""
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0]) * 1024
        return info.get("MemAvailable", info["MemFree"]), info["MemTotal"]
    except (OSError, KeyError, ValueError):  # pragma: no cover
        return 0, 0


def _cpu_device_module() -> types.ModuleType:
    """``torch.cpu`` plus the ``torch.cuda`` calls verl makes on its device module."""
    import torch

    mod = types.ModuleType("igsearch_verl_cpu_device")
    for name in dir(torch.cpu):
        if not name.startswith("__"):
            setattr(mod, name, getattr(torch.cpu, name))
    mod.is_available = lambda: True
    mod.device_count = lambda: 1
    mod.current_device = lambda: 0
    mod.set_device = lambda device=None: None
    mod.synchronize = lambda device=None: None
    mod.empty_cache = lambda: None
    mod.ipc_collect = lambda: None
    mod.set_per_process_memory_fraction = lambda fraction, device=None: None
    mod.get_device_name = lambda device=None: "cpu"
    mod.mem_get_info = _mem_get_info
    mod.memory_allocated = lambda device=None: _rss_bytes()
    mod.memory_reserved = lambda device=None: _rss_bytes()
    mod.max_memory_allocated = lambda device=None: _peak_rss_bytes()
    mod.max_memory_reserved = lambda device=None: _peak_rss_bytes()
    mod.reset_peak_memory_stats = lambda device=None: None
    mod.get_rng_state = lambda device=None: torch.get_rng_state()
    mod.set_rng_state = lambda state, device=None: torch.set_rng_state(state)
    mod.manual_seed = torch.manual_seed
    mod.manual_seed_all = torch.manual_seed
    mod.memory = types.SimpleNamespace(_set_allocator_settings=lambda settings: None)
    return mod


def _platform_class():
    import torch
    from verl.plugin.platform import PlatformBase, PlatformRegistry

    @PlatformRegistry.register(platform="cpu")
    class PlatformCPU(PlatformBase):
        """The host CPU as verl's device: gloo collectives, ``torch.device("cpu")``."""

        _module = None

        @property
        def device_name(self) -> str:
            return "cpu"

        @property
        def vendor_name(self) -> str:
            return "cpu"

        @property
        def device_module(self):
            if PlatformCPU._module is None:
                PlatformCPU._module = _cpu_device_module()
            return PlatformCPU._module

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check=False) -> bool:
            return enabled()

        def current_device(self):
            # verl passes this to .to()/torch.device(); an int there would mean cuda:N
            return torch.device("cpu")

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index) -> None:
            return None

        def synchronize(self, device_index: Optional[int] = None) -> None:
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
            return "CUDA_VISIBLE_DEVICES"  # Ray sets it for its logical GPU slots; torch (CPU build) ignores it

        @contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return "GPU"  # one logical Ray slot per rank (ray.init(num_gpus=ranks)); no device behind it

        def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
            return {"num_gpus": num_gpus}

        def ray_noset_envvars(self) -> list[str]:
            return []

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self):
            return None

    return PlatformCPU


# --------------------------------------------------------------------------- 2. process group

def initialize_global_process_group_ray(timeout_second=None, backend=None):
    """verl's ``initialize_global_process_group_ray`` with a gloo-only backend string."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    dist.init_process_group(backend="gloo", rank=int(os.environ.get("RANK", 0)),
                            world_size=int(os.environ.get("WORLD_SIZE", 1)),
                            timeout=timedelta(seconds=timeout_second) if timeout_second is not None else None,
                            init_method=os.environ.get("DIST_INIT_METHOD", None))


def _bind_process_group_init() -> None:
    import verl.utils.distributed as vdist

    vdist.initialize_global_process_group_ray = initialize_global_process_group_ray
    for name in ("verl.workers.engine_workers", "verl.checkpoint_engine.base"):
        mod = __import__(name, fromlist=["_"])
        mod.initialize_global_process_group_ray = initialize_global_process_group_ray


# --------------------------------------------------------------------------- 3 + 5. engines

def _register_engines() -> None:
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp import transformer_impl

    for model_type, cls in (("language_model", transformer_impl.FSDPEngineWithLMHead),
                            ("value_model", transformer_impl.FSDPEngineWithValueHead)):
        if "cpu" not in EngineRegistry._engines.get(model_type, {}).get("fsdp2", {}):
            EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"], device="cpu")(cls)
    # forward-only (reference) models get CPUOffloadPolicy(pin_memory=True); pinning needs an accelerator
    policy = transformer_impl.CPUOffloadPolicy
    if not getattr(policy, "_igsearch_unpinned", False):
        @functools.wraps(policy, updated=())
        def unpinned_offload_policy(*args, pin_memory: bool = True, **kwargs):
            return policy(*args, pin_memory=False, **kwargs)

        unpinned_offload_policy._igsearch_unpinned = True
        transformer_impl.CPUOffloadPolicy = unpinned_offload_policy


# --------------------------------------------------------------------------- 6. rollout

def server_name(replica_rank: int) -> str:
    """The Ray actor name of replica ``replica_rank``'s :class:`HFRolloutServer`."""
    return f"igsearch_hf_server_{replica_rank}"


def _replica_and_adapter():
    import ray
    from verl.workers.rollout.base import BaseRollout
    from verl.workers.rollout.replica import RolloutReplica

    class HFRolloutReplica(RolloutReplica):
        """One :class:`HFRolloutServer` actor per replica (hybrid: the replica's FSDP ranks send it weights)."""

        async def launch_servers(self):
            name = server_name(self.replica_rank) + self.name_suffix
            env = {ENV: "1", **{k: os.environ[k] for k in (SYNC_DIR_ENV,) if os.environ.get(k)}}
            model_path = getattr(self.model_config, "local_path", None) or self.model_config.path
            server = ray.remote(HFRolloutServer).options(
                name=name, num_cpus=0, max_concurrency=self.max_concurrency, runtime_env={"env_vars": env},
            ).remote(model_path=model_path, replica_rank=self.replica_rank,
                     trust_remote_code=bool(getattr(self.model_config, "trust_remote_code", False)))
            await server.ready.remote()
            self.servers = [server]
            self._server_handle = server
            self._server_address = f"igsearch-hf://{name}"

        async def sleep(self):  # weights and cache live in host memory: nothing to release
            return None

        async def wake_up(self):
            return None

    class HFServerAdapter(BaseRollout):
        """verl's in-worker rollout handle: hands the actor's synced weights to this rank's replica server."""

        def __init__(self, config, model_config, device_mesh, *args, replica_rank: int = -1, **kwargs):
            super().__init__(config, model_config, device_mesh)
            rank = int(os.environ.get("RANK", 0))
            per_replica = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                           * self.config.pipeline_model_parallel_size)
            self.replica_rank = rank // per_replica if replica_rank == -1 else replica_rank
            self.is_leader = rank % per_replica == 0
            self._server = None

        def _server_handle(self):
            if self._server is None:
                self._server = ray.get_actor(server_name(self.replica_rank))
            return self._server

        async def resume(self, tags: list[str]):
            return None

        async def release(self):
            return None

        async def update_weights(self, weights: Generator, wire_format: str = "named_tensors", **kwargs):
            if wire_format != "named_tensors":
                raise NotImplementedError(f"{ROLLOUT_NAME}: wire_format={wire_format!r} (only named_tensors)")
            if kwargs.get("peft_config") is not None:
                raise NotImplementedError(f"{ROLLOUT_NAME}: LoRA adapters are not supported; merge them")
            # every rank drains the generator: it gathers FSDP shards collectively
            state = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in weights}
            if self.is_leader:
                await self._server_handle().load_weights.remote(state, kwargs.get("global_steps"))

    return HFRolloutReplica, HFServerAdapter


class HFRolloutServer:
    """A rollout server for verl backed by igsearch's ``HFEngine`` (one request at a time, fp32)."""

    def __init__(self, model_path: str, replica_rank: int = 0, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from igsearch.rollout.engine import HFEngine

        torch.set_num_threads(1)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32,
                                                     trust_remote_code=trust_remote_code).eval()
        self.engine = HFEngine(model, self.tokenizer, batch_size=1)
        self.replica_rank = replica_rank
        self.global_steps = None
        self.weight_versions = 0
        self._lock = asyncio.Lock()

    def ready(self) -> bool:
        return True

    def load_weights(self, state: dict, global_steps=None) -> dict:
        """Load the actor's full HF-named tensors into the engine's model (every parameter must be given)."""
        import torch

        model = self.engine.model
        own = model.state_dict()
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise KeyError(f"{ROLLOUT_NAME}: synced weights not in the rollout model: {unknown[:5]}")
        params = {n for n, _ in model.named_parameters()}
        missing = sorted(params - set(state))
        if missing:
            raise KeyError(f"{ROLLOUT_NAME}: synced weights lack parameters of the rollout model: {missing[:5]}")
        with torch.no_grad():
            for name, t in state.items():
                own[name].copy_(t.to(own[name].dtype))
        self.global_steps = global_steps
        self.weight_versions += 1
        out_dir = os.environ.get(SYNC_DIR_ENV)
        if out_dir:  # a record of what the engine samples from (cpu_smoke compares it across steps and replicas)
            from safetensors.torch import save_file

            os.makedirs(out_dir, exist_ok=True)
            save_file({n: t.contiguous() for n, t in state.items()},
                      os.path.join(out_dir, f"replica{self.replica_rank}_sync{self.weight_versions:03d}"
                                            f"_step{global_steps}.safetensors"))
        return {"loaded": len(state), "version": self.weight_versions}

    def weights_digest(self) -> dict:
        """name -> (sum, abs-sum) of the engine's parameters (tests compare them with the actor's)."""
        return {n: (float(p.double().sum()), float(p.double().abs().sum())) for n, p in
                self.engine.model.named_parameters()}

    async def generate(self, request_id: str = "", *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       image_data=None, video_data=None, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        from igsearch.rollout.engine import GenRequest, SamplingConfig

        p = dict(sampling_params or {})
        stop = p.get("stop") or []
        sampling = SamplingConfig(temperature=float(p.get("temperature", 1.0)), top_p=float(p.get("top_p", 1.0)),
                                  stop_token_ids=[int(t) for t in (p.get("stop_token_ids") or [])],
                                  stop_strings=[stop] if isinstance(stop, str) else list(stop))
        max_tokens = int(p.get("max_tokens") or p.get("max_new_tokens") or 1)
        req = GenRequest(prompt_ids=[int(t) for t in prompt_ids], max_tokens=max_tokens,
                         seed=p.get("seed"))
        async with self._lock:
            out = (await asyncio.to_thread(self.engine.generate, [req], sampling))[0]
        return TokenOutput(token_ids=out.token_ids, log_probs=out.logprobs if p.get("logprobs") else None,
                           stop_reason="completed", extra_fields={"global_steps": self.global_steps})

    # the control calls verl makes on every rollout server
    async def wake_up(self):
        return None

    async def sleep(self):
        return None

    async def abort_all_requests(self, reject_request: bool = False):
        return None

    async def resume_generation(self):
        return None

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None


def _register_rollout() -> None:
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    replica_cls, adapter_cls = _replica_and_adapter()
    globals()["HFRolloutReplica"], globals()["HFServerAdapter"] = replica_cls, adapter_cls
    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: replica_cls)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.HFServerAdapter"


# --------------------------------------------------------------------------- install

def install() -> None:
    """Install every seam in this process (idempotent). Call before verl resolves its platform."""
    global _installed
    if _installed:
        return
    os.environ[ENV] = "1"
    os.environ["VERL_PLATFORM"] = "cpu"
    from verl.plugin.platform import get_platform, set_platform

    import verl.plugin.platform.platform_manager as pm

    cls = _platform_class()
    if pm._current_platform is None or pm._current_platform.device_name != "cpu":
        set_platform(cls())
    assert get_platform().device_name == "cpu"
    _bind_process_group_init()
    _register_engines()
    _register_rollout()
    _installed = True
