"""IG-Search on TRL's real ``GRPOTrainer`` (trl 1.16.0, installed by ``make install``): our rollouts
through ``rollout_func``, documents masked through ``env_mask``, and TRL training on our estimator's
(B, T) advantages.

The policy is the scripted bigram model of tests/test_trainer.py (tests/policy_fixtures.py): it always
searches for one of three title words and never answers, so with the EM reward every group fails and
the only learning signal is step IG. A second reward (did the first query ask for the first word?)
makes mixed groups where the trajectory part of the advantage is not zero. Rollouts run on
transformers ``generate`` (HFEngine), which keeps every run to a few seconds on one core.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from igsearch.algo.advantages import AdvantageInput, compute_advantages, per_token_advantages
from igsearch.algo.loss import policy_loss
from igsearch.ig import information_gain_of_trajectories
from igsearch.ig.config import ig_draw_seed
from policy_fixtures import scripted_search_setup


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl")
    return {"root": root, "words": scripted_search_setup(root)}


def build(world, out, *, steps=2, extra=(), **kwargs):
    from igsearch.integrations.trl import build_ig_search_trainer

    overrides = [f"steps={steps}", "questions_per_step=2", "rollout.rollouts_per_question=3", "rollout.max_turns=2",
                 "rollout.max_new_tokens_per_turn=16", "rollout.max_response_tokens=600",
                 "rollout.max_doc_tokens=150", "max_prompt_tokens=1024", "lr=1e-2", "seed=5", *extra]
    return build_ig_search_trainer(world["root"] / "policy", world["root"] / "world", output_dir=out, engine="hf",
                                   overrides=overrides, **kwargs)


def record(trainer) -> dict:
    """Wrap the trainer's generation and loss so a test sees every generation batch (with the weights it
    was generated under) and every batch TRL trained on (with its loss)."""
    rec = {"batches": [], "weights": [], "trained": []}
    generate, compute_loss = trainer._generate_and_score_completions, trainer._compute_loss

    def generate_rec(inputs):
        rec["weights"].append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
        out = generate(inputs)
        rec["batches"].append(trainer.igsearch_last)
        return out

    def compute_loss_rec(model, inputs):
        loss = compute_loss(model, inputs)
        rec["trained"].append({**{k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)},
                               "loss": float(loss.detach()), "batch": len(rec["batches"]) - 1})
        return loss

    trainer._generate_and_score_completions = generate_rec
    trainer._compute_loss = compute_loss_rec
    return rec


def run(trainer) -> dict:
    rec = record(trainer)
    rec["before"] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    rec["output"] = trainer.train()
    rec["after"] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    rec["log"] = [r for r in trainer.state.log_history if "loss" in r]
    rec["trainer"] = trainer
    return rec


@pytest.fixture(scope="module")
def ig_run(world, tmp_path_factory):
    return run(build(world, tmp_path_factory.mktemp("ig-run")))


def first_query_reward(words):
    """1.0 when the rollout's first query asks for ``words[0]``: mixed groups under the scripted policy."""
    def reward(prompts, completions, **_):
        return [float(words[0] in c.split("</search>")[0]) for c in completions]
    reward.__name__ = "first_query"
    return reward


@pytest.fixture(scope="module", params=["ig", "grpo"])
def mixed_run(request, world, tmp_path_factory):
    from igsearch.integrations.trl import ExactMatchReward

    method = request.param
    trainer = build(world, tmp_path_factory.mktemp(f"mixed-{method}"), steps=1,
                    extra=[f"advantage.method={method}", "ig.norm=none"],
                    reward_funcs=[ExactMatchReward(), first_query_reward(world["words"])])
    return {**run(trainer), "words": world["words"]}


def estimator_advantages(trainer, batch, width):
    """Our estimator on the batch's trajectories, rewards and step IG, computed here from scratch."""
    cfg = trainer.igsearch_config
    inp = AdvantageInput.from_trajectories(batch.trajectories, batch.rewards, batch.scores)
    out = compute_advantages(inp, cfg.advantage_config())
    return out, per_token_advantages(out, None, width)


# ------------------------------------------------------------------------------------------------ training


def test_ig_training_changes_weights_with_finite_loss(ig_run):
    changed = [k for k in ig_run["before"] if not torch.equal(ig_run["before"][k], ig_run["after"][k])]
    assert changed, "two IG steps on all-fail groups left every weight unchanged"
    assert ig_run["output"].global_step == 2 and len(ig_run["batches"]) == 2
    assert len(ig_run["log"]) == 2
    for row in ig_run["log"]:
        assert math.isfinite(row["loss"]) and row["grad_norm"] > 0
        assert row["rewards/exact_match/mean"] == 0.0 and row["igsearch/step_ig/tokens_forwarded"] > 0
    assert all(math.isfinite(t["loss"]) for t in ig_run["trained"])


def test_all_fail_groups_get_advantage_only_on_query_spans(ig_run):
    trainer = ig_run["trainer"]
    beta = trainer.igsearch_config.method_options("ig").beta
    for trained in ig_run["trained"]:
        batch = ig_run["batches"][trained["batch"]]
        assert batch.rewards == [0.0] * len(batch.trajectories)
        adv = trained["advantages"]
        assert adv.dim() == 2 and adv.shape == trained["completion_ids"].shape
        assert adv.abs().max() > 0, "IG gave no advantage to an all-fail batch"
        for i, row in enumerate(trained["igsearch_row"].tolist()):
            traj = batch.trajectories[row]
            on_query = torch.zeros(adv.shape[1], dtype=torch.bool)
            for step, ig in zip(traj.steps, batch.scores["step_ig"][row]):
                a, b = step.query
                on_query[a:b] = True
                assert ig is not None and b > a
                values = adv[i, a:b]
                assert torch.all(values == values[0])  # uniform span weight: one value per step
                assert abs(float(values[0])) <= beta * trainer.igsearch_config.method_options("ig").clip + 1e-6
            assert torch.all(adv[i][~on_query] == 0), f"row {row}: advantage outside its query spans"


def test_document_tokens_have_env_mask_zero(ig_run):
    for trained in ig_run["trained"]:
        batch = ig_run["batches"][trained["batch"]]
        tool_mask, completion_mask = trained["tool_mask"], trained["completion_mask"]
        for i, row in enumerate(trained["igsearch_row"].tolist()):
            traj = batch.trajectories[row]
            n = len(traj.response_ids)
            assert traj.steps and all(s.documents[1] > s.documents[0] for s in traj.steps)
            assert tool_mask[i, :n].tolist() == traj.loss_mask
            assert completion_mask[i, :n].sum() == n and completion_mask[i, n:].sum() == 0
            for s in traj.steps:
                a, b = s.documents
                assert tool_mask[i, a:b].sum() == 0
                assert trained["completion_ids"][i, a:b].tolist() == traj.response_ids[a:b]
                qa, qb = s.query
                assert tool_mask[i, qa:qb].sum() == qb - qa
        # the loss TRL normalises by counts the policy's tokens only
        assert int(trained["num_items_in_batch"]) == sum(sum(t.loss_mask) for t in batch.trajectories)


def test_trained_advantages_equal_our_estimator(ig_run):
    trainer = ig_run["trainer"]
    for trained in ig_run["trained"]:
        batch = ig_run["batches"][trained["batch"]]
        width = trained["completion_ids"].shape[1]
        _, expected = estimator_advantages(trainer, batch, width)
        rows = trained["igsearch_row"]
        assert sorted(rows.tolist()) == list(range(len(batch.trajectories)))  # every rollout trained once
        assert torch.equal(trained["advantages"], expected[rows])


def test_step_ig_is_scored_under_the_rollout_weights(ig_run):
    """The step IG the advantages used equals IG recomputed (tree scorer) under the weights each batch was
    generated with, with the step's counterfactual draws."""
    from igsearch.policy.load import load_policy

    trainer = ig_run["trainer"]
    cfg = trainer.igsearch_config
    model, tok = load_policy(cfg.model_path)
    assert not all(torch.equal(ig_run["weights"][0][k], ig_run["weights"][1][k]) for k in ig_run["weights"][0])
    for k, (batch, weights) in enumerate(zip(ig_run["batches"], ig_run["weights"])):
        assert batch.step == k + 1
        model.load_state_dict(weights)
        res = information_gain_of_trajectories(batch.trajectories, model.eval(), tok, scorer="tree",
                                               seed=ig_draw_seed(cfg.seed, batch.step),
                                               **cfg.method_options("ig").scoring_options(cfg.scoring))
        for got, ref in zip(batch.scores["step_ig"], res.step_ig):
            assert got == pytest.approx(ref, abs=1e-4)


def test_mixed_groups_train_on_our_advantages_and_our_loss(mixed_run):
    """TRL's reward functions feed R_i; the advantages TRL trains on are our estimator's, and TRL's loss
    (loss_type dapo, on-policy) is our token-mean policy loss on them."""
    trainer = mixed_run["trainer"]
    (trained,) = mixed_run["trained"]
    batch = mixed_run["batches"][0]
    words = mixed_run["words"]
    assert batch.rewards == [float(t.steps[0].query_text == words[0]) for t in batch.trajectories]  # EM 0 + ours
    groups = [batch.rewards[g * 3:(g + 1) * 3] for g in range(2)]
    assert any(max(g) > min(g) for g in groups), f"no mixed group in {batch.rewards}; pick another seed"
    width = trained["completion_ids"].shape[1]
    out, expected = estimator_advantages(trainer, batch, width)
    rows = trained["igsearch_row"]
    assert torch.equal(trained["advantages"], expected[rows])
    assert out.seq_adv.abs().max() > 0
    if trainer.igsearch_config.advantage.method == "grpo":
        assert out.spans.numel() == 0 and torch.all(expected == expected[:, :1])
    else:
        assert out.spans.numel() > 0
    mask = (trained["completion_mask"] * trained["tool_mask"]).float()
    zeros = torch.zeros_like(mask)
    ours, _ = policy_loss(zeros, zeros, mask, out.select(rows.tolist()), trainer.igsearch_config.loss)
    assert trained["loss"] == pytest.approx(float(ours), rel=1e-5, abs=1e-7)
    if trainer.igsearch_config.advantage.method == "ig":  # raw step IG (ig_norm none) is not zero-mean
        assert abs(float(ours)) > 1e-6
    assert mixed_run["log"][0]["grad_norm"] > 0  # (GRPO's group-centred advantages cancel in the loss value)


# ------------------------------------------------------------------------------------------------ pieces


def test_grpo_config_is_set_up_like_our_trainer(tmp_path):
    from igsearch.integrations.trl import grpo_config, trl_loss_type
    from igsearch.train.config import load_config

    cfg = load_config(None, ["model_path=x", "questions_per_step=4", "rollout.rollouts_per_question=3",
                             "rollout.temperature=0.7", "loss.clip_high=0.28", "steps=7"])
    args = grpo_config(cfg, tmp_path, micro_batch_size=6)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.steps_per_generation) == (6, 2, 2)
    assert args.generation_batch_size == 12 and args.num_generations == 3 and args.max_steps == 7
    assert args.bf16 is False and args.fp16 is False and args.gradient_checkpointing is False
    assert args.beta == 0.0 and args.use_bias_correction_kl is False and args.use_vllm is False
    assert args.loss_type == "dapo" and args.temperature == 0.7 and args.epsilon_high == 0.28
    assert args.lr_scheduler_type == "constant" and not args.mask_truncated_completions
    assert [trl_loss_type(a) for a in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")] == \
        ["dapo", "grpo", "luspo"]
    with pytest.raises(ValueError, match="must divide"):
        grpo_config(cfg, tmp_path, micro_batch_size=5)
    with pytest.raises(ValueError, match="mini_batches"):
        grpo_config(load_config(None, ["model_path=x", "mini_batches=2"]), tmp_path)


def test_exact_match_reward_reads_the_rollout_or_the_text():
    from igsearch.integrations.trl import ExactMatchReward

    reward = ExactMatchReward(format_penalty=0.5)
    # from our rollout function's fields (the answer the agent parsed)
    assert reward(["p"] * 3, ["", "", ""], igsearch_answer=["Dulmar", "Oskaria", None],
                  igsearch_malformed=[False, False, True], igsearch_golds=[["Dulmar"]] * 3) == [1.0, 0.0, -0.5]
    # plain TRL completions: the last closed <answer>, golds from the dataset column
    assert reward(["p"] * 2, ["<answer> dulmar </answer>", "<answer> Dulmar"],
                  golden_answers=["Dulmar", ["x", "Dulmar"]]) == [1.0, -0.5]


def test_missing_trl_says_how_to_install(monkeypatch):
    ours = "igsearch.integrations.trl"
    for name in [m for m in sys.modules if m == ours or m.startswith(ours + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "trl", None)  # what importing an uninstalled package does
    with pytest.raises(ImportError) as info:
        importlib.import_module("igsearch.integrations.trl")
    message = str(info.value)
    assert "pip install 'igsearch[trl]'" in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_example_trains_a_step(world, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "trl_ig_search", Path(__file__).resolve().parents[1] / "examples" / "trl_ig_search.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--model", str(world["root"] / "policy"), "--world", str(world["root"] / "world"),
                            "--out", str(tmp_path / "example"), "--steps", "1", "--questions", "2", "--rollouts", "3",
                            "--set", "rollout.max_turns=2", "rollout.max_new_tokens_per_turn=16",
                            "rollout.max_doc_tokens=150", "max_prompt_tokens=1024"])
    assert summary["steps"] == 1 and math.isfinite(summary["loss"])
    assert "step 1/1" in capsys.readouterr().out
