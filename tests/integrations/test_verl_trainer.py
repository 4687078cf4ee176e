"""The ``igsearch_sync`` v1 trainer's advantage stage on verl's real data path, and the launch config.

Runs a local Ray with TransferQueue (verl's v1 storage), puts rollouts into it as verl's agent-loop
worker does (``AgentLoopOutput.as_dict``), pads the batch with verl's own synthetic rows, and calls
``IGSearchTrainer._compute_advantage``: the IG requests go through TransferQueue and verl's
``tqbridge`` into the actor's ``compute_log_prob`` contract, and verl's own ``_compute_advantage``
writes the advantages back. The one stand-in is the actor worker group (no FSDP on this CPU): it
splits the batch over its data-parallel ranks like verl's dispatch (``KVBatchMeta.chunk``) and each
rank forwards a tiny Qwen2 the way verl's engine reports log-probs (per position of the full sequence).
"""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("verl")
tq = pytest.importorskip("transfer_queue")

from omegaconf import OmegaConf, open_dict  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from transfer_queue import KVBatchMeta  # noqa: E402
from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput  # noqa: E402
from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size  # noqa: E402
from verl.utils.tensordict_utils import list_of_dict_to_tensordict  # noqa: E402
from verl.utils.transferqueue_utils import tqbridge  # noqa: E402

from igsearch.data.metrics import exact_match  # noqa: E402
from igsearch.ig import information_gain_of_trajectories  # noqa: E402
from igsearch.ig.config import ig_draw_seed  # noqa: E402
from igsearch.integrations.verl.config import VerlIGConfig  # noqa: E402
from igsearch.integrations.verl.estimator import ig_search_advantages  # noqa: E402
from igsearch.integrations.verl.ig_batch import GOLDS_KEY, STEPS_KEY, steps_to_record  # noqa: E402
from igsearch.integrations.verl.trainer import IGSearchTrainer, load_step_ig_dump, rescore_step_ig_dump  # noqa: E402
from test_verl_ig_batch import setup  # noqa: E402,F401  (the rollouts and the tiny policy)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "verl"
REQUIRED = ["actor_rollout_ref.model.path=/models/qwen", "data.train_files=/data/train.parquet",
            "data.val_files=/data/test.parquet", "igsearch.retrieval_url=http://127.0.0.1:8000/retrieve"]


def launch_config(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("igsearch_qwen2.5-3b", overrides=[*REQUIRED, *overrides])


@pytest.fixture(scope="module")
def transfer_queue():
    import ray

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    # the controller and each storage unit ask Ray for a CPU: one unit keeps the demand small
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    yield tq
    tq.close()
    ray.shutdown()


def log_prob_forward(model):
    """One data-parallel rank of the actor's ``compute_log_prob``: fields fetched from TransferQueue
    by verl's ``tqbridge``; log-probs per position of prompt + response (position t scores token
    t + 1, as verl's engine returns them), stored back by ``tqbridge``."""

    @tqbridge()
    def forward(data: TensorDict) -> TensorDict:
        logps, entropies = [], []
        for ids, pos in zip(data["input_ids"].unbind(), data["position_ids"].unbind()):
            with torch.no_grad():
                logits = model(input_ids=ids[None], position_ids=pos[None]).logits[0].float()
            logp_all = torch.log_softmax(logits, -1)
            lp = logp_all[:-1].gather(-1, ids[1:, None])[:, 0]
            logps.append(torch.cat([lp, lp.new_zeros(1)]))
            entropies.append(-(logp_all.exp() * logp_all).sum(-1))
        nested = lambda xs: torch.nested.as_nested_tensor(xs, layout=torch.jagged)  # noqa: E731
        return TensorDict({"log_probs": nested(logps), "entropy": nested(entropies)}, batch_size=[len(logps)])

    return forward


class LocalActorGroup:
    """Stand-in for the actor worker group (see the module docstring)."""

    def __init__(self, model, dp_size: int):
        self._dispatch_info = {"actor": list(range(dp_size))}
        self.dp_size, self.forward = dp_size, log_prob_forward(model)
        self.rows_per_rank: list[int] = []

    def compute_log_prob(self, meta: KVBatchMeta):
        for chunk in meta.chunk(self.dp_size):
            self.rows_per_rank.append(len(chunk))
            self.forward(chunk)
        return meta


def put_rollouts(trajs, step: int):
    """The rollouts in TransferQueue as verl's agent-loop worker stores them; 3 sessions per uid."""
    keys, rows, tags = [], [], []
    for i, t in enumerate(trajs):
        uid, session = f"q{step}x{i // 3}", i % 3
        out = AgentLoopOutput(prompt_ids=t.prompt_ids, response_ids=t.response_ids, response_mask=t.loss_mask,
                              response_logprobs=[0.0] * len(t.response_ids), reward_score=exact_match(t.answer or "", t.golds),
                              num_turns=2 * len(t.steps) + 2, metrics=AgentLoopMetrics(),
                              extra_fields={STEPS_KEY: steps_to_record(t.steps), GOLDS_KEY: list(t.golds)})
        row = out.as_dict()
        ids = torch.cat([row["prompts"], row["responses"]])
        row.update(uid=uid, session_id=session, input_ids=ids, position_ids=torch.arange(ids.numel()),
                   loss_mask=row["response_mask"])
        keys.append(f"{uid}_{session}_0")
        rows.append(row)
        tags.append({"status": "success", "prompt_len": len(t.prompt_ids), "response_len": len(t.response_ids),
                     "seq_len": ids.numel(), "global_steps": step})
    tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(rows), tags=tags)
    return KVBatchMeta(keys=keys, tags=tags, partition_id="train")


def make_trainer(config, tok, model, dp_size: int, step: int) -> IGSearchTrainer:
    """The trainer with the state its advantage stage reads (what ``PPOTrainer.init`` would set)."""
    trainer = IGSearchTrainer.__new__(IGSearchTrainer)
    trainer.config, trainer.tokenizer, trainer.global_steps = config, tok, step
    trainer.actor_rollout_wg = LocalActorGroup(model, dp_size)
    trainer.timing_raw = {}
    return trainer


def test_launch_config_composes_and_selects_every_igsearch_part():
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.utils.config import validate_config

    cfg = launch_config()
    OmegaConf.resolve(cfg)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert not need_critic(cfg) and need_reference_policy(cfg)  # KL loss against the reference, no critic
    assert get_trainer_cls(cfg.trainer.v1.trainer_mode) is IGSearchTrainer
    assert get_adv_estimator_fn(cfg.algorithm.adv_estimator).__module__ == "igsearch.integrations.verl.estimator"
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop in _agent_loop_registry
    fn = get_custom_reward_fn(cfg)
    assert fn(data_source="nq", solution_str="<answer> Dulmar </answer>", ground_truth={"target": ["Dulmar"]}) == 1.0
    assert VerlIGConfig.from_algorithm(cfg.algorithm) == VerlIGConfig(beta=0.5, clip=2.0, norm="group", n_random=3,
                                                                      head_tokens=3, head_weight=3.0)
    assert cfg.data.train_batch_size == 512 and cfg.actor_rollout_ref.rollout.n == 5


def test_advantage_stage_scores_ig_through_the_actor_and_matches_igsearch(setup, transfer_queue, tmp_path):
    tok, model, trajs = setup
    step, dp_size = 4, 2
    cfg = launch_config("algorithm.ig.n_random=2", "algorithm.ig.seed=3", "actor_rollout_ref.rollout.n=3",
                        f"algorithm.ig.dump_dir={tmp_path}")
    batch = put_rollouts(trajs, step)
    batch = upsample_batch_to_divisible_size(batch, 8, tok.eos_token_id)  # verl's own padding rows
    assert len(batch) == 8 and sum(t.get("is_padding", False) for t in batch.tags) == 2
    trainer = make_trainer(cfg, tok, model, dp_size, step)
    metrics: dict = {}
    batch = trainer._compute_old_log_prob(batch, metrics)  # verl's stage 4, through the same actor
    trainer.actor_rollout_wg.rows_per_rank.clear()
    trainer._compute_advantage(batch, metrics)

    group = trainer.actor_rollout_wg.rows_per_rank
    assert len(group) == dp_size and len(set(group)) == 1  # one call, equal rows on every rank
    assert "ig" in trainer.timing_raw and metrics["ig/steps_scored"] >= 6

    # the same IG and advantages computed by igsearch directly on the same rollouts and model
    ig_cfg = VerlIGConfig.from_algorithm(cfg.algorithm)
    ref = information_gain_of_trajectories(trajs, model, tok, scorer="tree",
                                           **replace(ig_cfg, seed=ig_draw_seed(3, step)).ig_options())
    got = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages", "response_mask"])
    adv = [row.float() for row in got["advantages"].unbind()]
    r_len = max(len(t.response_ids) for t in trajs)
    rewards = torch.zeros(len(trajs), r_len)
    mask = torch.zeros(len(trajs), r_len)
    for i, t in enumerate(trajs):
        rewards[i, len(t.response_ids) - 1] = exact_match(t.answer or "", t.golds)
        mask[i, :len(t.response_ids)] = torch.tensor(t.loss_mask, dtype=torch.float32)
    want, _ = ig_search_advantages(rewards, mask, [i // 3 for i in range(len(trajs))],
                                   [[s.query for s in t.steps] for t in trajs], ref.step_ig, ig_cfg)
    for i, t in enumerate(trajs):
        assert adv[i].shape[0] == len(t.response_ids)
        torch.testing.assert_close(adv[i], want[i, :len(t.response_ids)], atol=1e-4, rtol=0)
    for i in (6, 7):  # verl's padding rows: no steps, no reward, no advantage
        assert float(adv[i].abs().sum()) == 0.0

    # the second question's group fails on every rollout: its advantage lives only on query spans
    assert all(exact_match(t.answer or "", t.golds) == 0 for t in trajs[3:6])
    for i in range(3, 6):
        on_query = torch.zeros(len(trajs[i].response_ids), dtype=torch.bool)
        for a, b in (s.query for s in trajs[i].steps):
            on_query[a:b] = True
        assert float(adv[i][~on_query].abs().sum()) == 0.0
    assert any(float(adv[i].abs().sum()) > 0 for i in range(3, 6))

    # and the IG from the actor equals the tree scorer's
    spans, step_ig = trainer.score_step_ig(batch, {})
    for got_row, want_row in zip(step_ig[:6], ref.step_ig):
        assert [g is None for g in got_row] == [w is None for w in want_row]
        assert all(abs(g - w) < 1e-4 for g, w in zip(got_row, want_row) if g is not None)
    assert list(step_ig[6]) == [] and list(spans[6]) == []

    # the dump (what igsearch.integrations.verl.smoke re-scores on a GPU) rebuilds the same rollouts and IGs
    dumped, dumped_ig, seed = load_step_ig_dump(tmp_path / f"step_{step:06d}.jsonl", tok)
    assert seed == ig_draw_seed(3, step) and len(dumped) == len(trajs)
    assert [t.response_ids for t in dumped] == [t.response_ids for t in trajs]
    assert dumped_ig == [list(row) for row in step_ig[:6]]
    # and the smokes' re-scoring of it finds igsearch's IG on every scored step
    _, rescored, cmp = rescore_step_ig_dump(tmp_path / f"step_{step:06d}.jsonl", model, tok, ig_cfg.ig_options())
    for got_row, want_row in zip(rescored.step_ig, ref.step_ig, strict=True):
        assert [g is None for g in got_row] == [w is None for w in want_row]
        assert all(abs(g - w) < 1e-6 for g, w in zip(got_row, want_row) if g is not None)
    assert cmp["rollouts"] == 6 and cmp["none_mismatch"] == 0 and cmp["steps_compared"] >= 6
    assert cmp["max_abs_diff"] < 1e-4


def test_other_estimators_run_verl_unchanged(setup, transfer_queue):
    tok, model, trajs = setup
    cfg = launch_config("algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=3")
    with open_dict(cfg):
        cfg.algorithm.pop("ig")
    batch = put_rollouts(trajs, 5)
    trainer = make_trainer(cfg, tok, model, 1, 5)
    batch = trainer._compute_old_log_prob(batch, {})
    trainer.actor_rollout_wg.rows_per_rank.clear()
    trainer._compute_advantage(batch, {})
    assert trainer.actor_rollout_wg.rows_per_rank == []  # no IG scoring
    got = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages"])
    first = got["advantages"].unbind()[0]
    assert first.shape[0] == len(trajs[0].response_ids) and float(first.abs().sum()) > 0


def test_smoke_run_command_composes_and_its_metrics_parse():
    """igsearch.integrations.verl.smoke (the GPU smoke run): its overrides compose with the launch config and
    pass verl's validation, and verl's console metric lines parse."""
    from igsearch.integrations.verl import smoke

    assert smoke.ROOT / "configs" / "verl" == CONFIG_DIR
    cfg = smoke.compose_check(smoke.launch_overrides(Path("/m"), Path("/w"), "http://h:1/retrieve", Path("/d"), 2))
    assert cfg.trainer.n_gpus_per_node == 1 and cfg.trainer.total_training_steps == 2
    assert cfg.algorithm.ig.dump_dir == "/d" and cfg.data.train_files == "/w/train.parquet"
    log = ("noise\nstep:1 - timing_s/step:12.5 - timing_s/ig:1.25 - perf/throughput:3000.0 - ig/mean:0.5\n"
           "(TaskRunner pid=1) step:2 - timing_s/step:10.0 - training/epoch:0\n")
    got = smoke.parse_metrics(log)
    assert got[1] == {"timing_s/step": 12.5, "timing_s/ig": 1.25, "perf/throughput": 3000.0, "ig/mean": 0.5}
    assert got[2] == {"timing_s/step": 10.0, "training/epoch": 0.0}  # Ray's actor prefix is skipped
