"""RL raises the reward of a tiny policy, through the trainer's real update, in a few CPU seconds, and
the same test fails when the update is broken (advantage sign flipped, loss mask shifted by one).

The task: every question's gold answer is one word. A scripted bigram policy (tests/policy_fixtures.py)
starts each response with ``<answer>`` (then the gold, then ``</answer>``: reward 1) or ``<think>``
(then ``</think>`` and the end of the turn, no answer: reward 0), each with probability 1/2. Its
expected reward is exactly P(``<answer>`` | the prompt's last token), read off the model: the fixed
probe, without sampling noise. The deciding token is the first of the response, next to the masked
prompt, so a loss mask shifted by one token leaves it out and nothing is learned.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from igsearch.policy.tiny import build_tokenizer, save_policy
from igsearch.world import build_world, world_texts
from policy_fixtures import bigram_policy
from test_trainer import make_config

STEPS = 6


@pytest.fixture(scope="module")
def bandit(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    build_world(root / "world", seed=3, n_entities=60)
    tok = build_tokenizer(world_texts(root / "world"), vocab_size=800)
    gold = next(w for w in ("river", "city", "film", "book") if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1)
    rows = [{"id": f"q{i}", "question": f"Which word is number {i}?", "golden_answers": [gold],
             "data_source": "bandit"} for i in range(16)]
    (root / "bandit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    trans = {"\n": ["<answer>", "<think>"], "<answer>": " " + gold, " " + gold: "</answer>",
             "<think>": "</think>", "</think>": "<|im_end|>"}
    save_policy(bigram_policy(tok, trans, margin=30.0), tok, root / "policy")
    return root


def expected_reward(trainer) -> float:
    """P(<answer> | "\\n"): the policy's exact probability of a rewarded response."""
    tok = trainer.tokenizer
    nl, answer = (tok(t, add_special_tokens=False)["input_ids"][0] for t in ("\n", "<answer>"))
    with torch.no_grad():
        logits = trainer.model(torch.tensor([[nl]])).logits[0, -1].float()
    return float(torch.softmax(logits, -1)[answer])


def train(root: Path, method: str, name: str, sabotage=None) -> tuple[float, float]:
    from igsearch.train.trainer import Trainer

    cfg = make_config(root, method=method, engine="hf", steps=STEPS, questions_per_step=4, rollouts_per_question=4,
                      max_turns=1, train_data=str(root / "bandit.jsonl"), eval_data=str(root / "bandit.jsonl"),
                      checkpoint_every=STEPS, lr=0.02)
    trainer = Trainer(cfg, root / name, overwrite=True)
    if sabotage is not None:
        trainer.add_hook(sabotage)
    try:
        before = expected_reward(trainer)
        trainer.run()
        return before, expected_reward(trainer)
    finally:
        trainer.close()


def flip_advantage_sign(phase, batch, trainer):
    if phase == "advantages":
        adv = batch.advantages
        adv.seq_adv.neg_()
        adv.span_values.neg_()


def shift_loss_mask(phase, batch, trainer):
    if phase == "advantages":  # the update reads the mask after this phase
        for t in batch.trajectories:
            t.loss_mask = [0] + t.loss_mask[:-1]


@pytest.mark.parametrize("method", ["grpo", "ig"])
def test_rl_raises_the_reward(bandit, method):
    before, after = train(bandit, method, f"run-{method}")
    assert abs(before - 0.5) < 0.02
    assert after > 0.8, (before, after)


@pytest.mark.parametrize("sabotage", [flip_advantage_sign, shift_loss_mask], ids=["sign-flipped", "mask-shifted"])
def test_a_broken_update_does_not_learn(bandit, sabotage):
    before, after = train(bandit, "grpo", f"run-{sabotage.__name__}", sabotage)
    assert after < before + 0.05, (before, after)
