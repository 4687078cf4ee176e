"""The CPU seams for verl (igsearch.integrations.verl.cpu): what each blocker needs, checked in fresh
processes where verl resolves its platform, plus the HFEngine rollout server and the tiny CPU config.

The full run (verl's main_ppo, 2 FSDP2 ranks over gloo, 3 steps, IG and advantages checked against
igsearch) is `make verl-cpu-smoke`, about 2 minutes; here it runs only with IGSEARCH_VERL_CPU_SMOKE=1.
"""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("verl")

from igsearch.integrations.verl.cpu import ENV, HFRolloutServer  # noqa: E402
from igsearch.integrations.verl.trainer import IGSearchTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WARM_START = ROOT / "igsearch" / "assets" / "warm_starts" / "lookalike-small-seed0"


def run_fresh(code: str, cpu: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "VERL_PLATFORM")}
    if cpu:
        env[ENV] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


SEAMS = """
import os, torch
import verl
from verl.utils.device import get_device_name, get_device_id, get_nccl_backend, get_resource_name, get_torch_device
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp import transformer_impl
from verl.workers.rollout.base import get_rollout_class
from verl.workers.rollout.replica import RolloutReplicaRegistry
import verl.utils.distributed as vdist, verl.workers.engine_workers as ew
from igsearch.integrations.verl import cpu
assert get_device_name() == "cpu" and get_nccl_backend() == "gloo" and get_resource_name() == "GPU"
assert get_device_id() == torch.device("cpu") and torch.ones(1).to(get_device_id()).device.type == "cpu"
dev = get_torch_device()
assert dev.is_available() and dev.mem_get_info()[1] > 0 and dev.max_memory_allocated() > 0
dev.empty_cache(); dev.synchronize(); dev.set_rng_state(dev.get_rng_state())
assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is transformer_impl.FSDPEngineWithLMHead
assert transformer_impl.CPUOffloadPolicy(pin_memory=True).pin_memory is False
assert get_rollout_class("igsearch_hf", "async").__name__ == "HFServerAdapter"
assert RolloutReplicaRegistry.get("igsearch_hf").__name__ == "HFRolloutReplica"
assert vdist.initialize_global_process_group_ray is ew.initialize_global_process_group_ray is cpu.initialize_global_process_group_ray
os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
ew.initialize_global_process_group_ray(timeout_second=None)
assert torch.distributed.get_backend() == "gloo"
t = torch.ones(3); torch.distributed.all_reduce(t)
print("ok", os.environ["VERL_PLATFORM"])
"""


def test_cpu_seams_in_a_fresh_process():
    """With IGSEARCH_VERL_CPU=1, importing verl alone (the plugin entry point) installs every seam:
    the cpu platform, the torch.device index, the gloo-only group, the FSDP engines for cpu, the
    unpinned offload policy and the HFEngine rollout."""
    assert run_fresh(SEAMS, cpu=True) == "ok cpu"


def test_cpu_seams_are_opt_in():
    code = ("import verl\nfrom verl.utils.device import get_device_name\nfrom igsearch.integrations.verl import cpu\n"
            "from verl.workers.engine.fsdp import transformer_impl as t\n"
            "print(cpu._installed, get_device_name(), t.CPUOffloadPolicy.__name__)")
    assert run_fresh(code, cpu=False) == "False cuda CPUOffloadPolicy"


def test_hf_rollout_server_generates_and_takes_synced_weights():
    from transformers import AutoModelForCausalLM

    server = HFRolloutServer(str(WARM_START))
    ref = AutoModelForCausalLM.from_pretrained(WARM_START, dtype=torch.float32).eval()
    prompt = server.tokenizer("Question: Who wrote it?", add_special_tokens=False)["input_ids"]
    params = {"temperature": 0.0, "max_tokens": 12, "logprobs": True, "stop": ["</search>"], "stop_token_ids": [],
              "include_stop_str_in_output": True}
    out = asyncio.run(server.generate("r0", prompt_ids=prompt, sampling_params=params))
    want = ref.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                        max_new_tokens=12, do_sample=False, top_k=None, top_p=None, temperature=None,
                        pad_token_id=server.tokenizer.pad_token_id)[0, len(prompt):].tolist()
    assert out.token_ids == want[:len(out.token_ids)] and len(out.log_probs) == len(out.token_ids)
    assert out.extra_fields["global_steps"] is None

    # synced weights: every parameter given, loaded in place, the version and step recorded
    state = {n: p.detach() + 0.01 for n, p in ref.named_parameters()}
    info = server.load_weights(state, global_steps=5)
    assert info["version"] == 1 and server.global_steps == 5
    got = dict(server.engine.model.named_parameters())
    assert all(torch.equal(got[n], state[n]) for n in state)
    out2 = asyncio.run(server.generate("r1", prompt_ids=prompt, sampling_params=params))
    assert out2.extra_fields["global_steps"] == 5
    with pytest.raises(KeyError, match="not in the rollout model"):
        server.load_weights({**state, "nope.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="lack parameters"):
        server.load_weights({n: t for n, t in list(state.items())[1:]})


def test_ig_rows_fill_every_ranks_micro_batches():
    """verl's forward splits each rank's rows into fixed micro-batches (dynamic batch size off), so the
    IG requests are padded to dp x log_prob_micro_batch_size_per_gpu."""
    from omegaconf import OmegaConf

    trainer = object.__new__(IGSearchTrainer)
    trainer.config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"log_prob_micro_batch_size_per_gpu": 4,
                                                                         "log_prob_use_dynamic_bsz": False}}})
    assert trainer.ig_row_multiple(2) == 8
    trainer.config.actor_rollout_ref.rollout.log_prob_use_dynamic_bsz = True
    assert trainer.ig_row_multiple(2) == 2


def test_tiny_cpu_config_composes():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    with initialize_config_dir(str(ROOT / "configs" / "verl"), version_base=None):
        cfg = compose("igsearch_tiny_cpu", overrides=[
            f"actor_rollout_ref.model.path={WARM_START}", "data.train_files=/w/train.parquet",
            "data.val_files=/w/dev.parquet", "igsearch.retrieval_url=http://127.0.0.1:1/retrieve"])
    OmegaConf.resolve(cfg)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    a = cfg.actor_rollout_ref
    assert (a.actor.strategy, a.ref.strategy, a.rollout.name, cfg.trainer.v1.trainer_mode,
            cfg.algorithm.adv_estimator) == ("fsdp2", "fsdp2", "igsearch_hf", "igsearch_sync", "ig_search")
    assert need_reference_policy(cfg) and cfg.trainer.n_gpus_per_node == 2 == cfg.ray_kwargs.ray_init.num_gpus
    for role in (a.actor, a.ref):
        assert set(role.fsdp_config.mixed_precision.values()) == {"fp32"}
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars[ENV] == "1"


@pytest.mark.skipif(os.environ.get("IGSEARCH_VERL_CPU_SMOKE") != "1",
                    reason="the full CPU run of main_ppo (~2 min): make verl-cpu-smoke, or IGSEARCH_VERL_CPU_SMOKE=1")
def test_cpu_smoke_run(tmp_path):
    from igsearch.integrations.verl.cpu_smoke import main

    assert main(["--out", str(tmp_path / "run")]) == 0
